"""What every ``kpl`` subcommand shares: one-line errors, endpoint options, waiting for ACTIVE."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from kpl.auth import NoCredentialsError
from kpl.errors import KinesisError, NetworkError, RequestTimeout

F = TypeVar("F", bound=Callable[..., Any])

#: Where ``kpl server`` listens by default, and so where the stream tools look first.
DEFAULT_ENDPOINT: Final = "http://127.0.0.1:4567"
#: ``--endpoint aws``: the region's public AWS endpoint.
AWS_ENDPOINT: Final = "aws"

#: Exit status after an interruption that left nothing to report (128 + SIGINT).
EXIT_INTERRUPTED: Final = 130


class CliError(click.ClickException):
    """An error for the user: printed as one line, exit status 1."""


def one_line(text: str) -> str:
    """Collapse a message to one line (server messages may carry newlines)."""
    return " ".join(str(text).split())


def describe_error(error: BaseException, endpoint: str | None = None) -> str:
    """The one line the user sees for an error from the API or the network."""
    if isinstance(error, NetworkError):
        where = f" {endpoint}" if endpoint else " the endpoint"
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
    """A real AWS endpoint (``endpoint_url=None``) needs a region: say so as a flag error."""
    if endpoint_url is None and not (
        region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    ):
        raise click.UsageError("the AWS endpoint needs a region: pass --region or set AWS_REGION")


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
