"""What every ``kpl`` subcommand shares: one-line errors, endpoint options, waiting for ACTIVE."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from kpl.auth import NoCredentialsError, is_loopback_url
from kpl.errors import KinesisError, NetworkError, RequestTimeout

F = TypeVar("F", bound=Callable[..., Any])

#: Where ``kpl server`` listens by default, and so where the stream tools look first.
DEFAULT_ENDPOINT: Final = "http://127.0.0.1:4567"
#: ``--endpoint aws``: the region's public AWS endpoint.
AWS_ENDPOINT: Final = "aws"

#: Exit status after an interruption that left nothing to report (128 + SIGINT).
EXIT_INTERRUPTED: Final = 130


class IntRange(click.IntRange):
    """click's IntRange, named "integer": a bad value reads "'abc' is not a valid integer."
    (click's own name gives "... not a valid integer range.")."""

    name = "integer"


class FloatRange(click.FloatRange):
    """click's FloatRange, named "number" (see :class:`IntRange`)."""

    name = "number"


class CliError(click.ClickException):
    """An error for the user: printed as one line, exit status 1."""


def one_line(text: str) -> str:
    """Collapse a message to one line (server messages may carry newlines)."""
    return " ".join(str(text).split())


def _refused(error: BaseException) -> bool:
    """True when ``error`` was caused, at some depth, by a refused connection."""
    seen: BaseException | None = error
    for _ in range(8):  # a bounded walk: cause chains may loop
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or isinstance(
            getattr(seen, "os_error", None), ConnectionRefusedError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe_error(error: BaseException, endpoint: str | None = None) -> str:
    """The one line the user sees for an error from the API or the network."""
    if isinstance(error, NetworkError):
        where = f" {endpoint}" if endpoint else " the endpoint"
        if _refused(error):
            # aiohttp's text of a refused connection is noise ("ssl:default [Connect call
            # failed ...]"); what the user needs is that nothing listens there.
            return f"cannot reach{where}: connection refused (is a server running there?)"
        return one_line(f"cannot reach{where}: {error.message}")
    if isinstance(error, RequestTimeout):
        return one_line(f"no answer in time from {endpoint or 'the endpoint'}: {error.message}")
    if isinstance(error, KinesisError):
        return one_line(str(error))
    if isinstance(error, TimeoutError):
        return one_line(str(error) or "timed out")
    if isinstance(error, NoCredentialsError):
        return one_line(str(error))
    return one_line(f"{type(error).__name__}: {error}")


def resolve_endpoint(endpoint: str | None) -> str | None:
    """``--endpoint`` for the stream tools: a URL, ``aws`` (``None``: the region's AWS
    endpoint), or by default ``$KPL_ENDPOINT`` else the local server's address."""
    if endpoint is None:
        endpoint = os.environ.get("KPL_ENDPOINT") or DEFAULT_ENDPOINT
    if endpoint == AWS_ENDPOINT:
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"must be an http:// or https:// URL (or 'aws'), got {endpoint!r}",
            param_hint="'--endpoint'",
        )
    return endpoint


def check_region(endpoint_url: str | None, region: str | None) -> None:
    """A real AWS endpoint (``endpoint_url=None``) or any endpoint not on this machine
    needs a region (only loopback ones default to us-east-1): say so as a flag error."""
    if region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        return
    if endpoint_url is None:
        raise click.UsageError("the AWS endpoint needs a region: pass --region or set AWS_REGION")
    if not is_loopback_url(endpoint_url):
        raise click.UsageError(
            f"{endpoint_url} is not on this machine, so it needs a region: "
            "pass --region or set AWS_REGION"
        )


def endpoint_options(func: F) -> F:
    """``--endpoint`` and ``--region`` for the commands that talk to an existing server."""
    func = click.option(
        "--region",
        metavar="REGION",
        default=None,
        help="Region to sign for (default: $AWS_REGION, or us-east-1 for a local endpoint).",
    )(func)
    func = click.option(
        "--endpoint",
        metavar="URL",
        default=None,
        help=(
            f"Stream API endpoint (default: $KPL_ENDPOINT, else {DEFAULT_ENDPOINT}, where "
            "`kpl server` listens); 'aws' for the region's AWS endpoint."
        ),
    )(func)
    return func


def is_terminal(stream: Any = None) -> bool:
    """True when ``stream`` (default stdout) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


#: How long the commands wait for a stream to become ACTIVE (or go away).
STATE_TIMEOUT_S: Final = 60.0


async def wait_for_active(client: Any, name: str, limit_s: float = STATE_TIMEOUT_S) -> Any:
    """``client.wait_for_active(name)`` bounded by ``limit_s`` with a clear message."""
    try:
        async with asyncio.timeout(limit_s):
            return await client.wait_for_active(name)
    except TimeoutError:
        raise TimeoutError(f"stream {name!r} is not ACTIVE after {limit_s:g} s") from None
