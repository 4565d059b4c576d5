"""The server's command-line flags, reusable by ``python -m server`` and ``kpl server``.

``add_server_arguments(parser)`` adds every flag to an :class:`argparse.ArgumentParser`;
``config_from_args(namespace)`` turns the parsed flags into a :class:`ServerConfig`.
Later issues add their flags here, next to the matching ``ServerConfig`` fields.
"""

from __future__ import annotations

import argparse

from server.config import ServerConfig

__all__ = ["add_server_arguments", "config_from_args"]

_DEFAULTS = ServerConfig()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _account(text: str) -> str:
    if not (len(text) == 12 and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be 12 digits, got {text!r}")
    return text


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags (``--host``, ``--port``, ``--region`` ...) to ``parser``."""
    group = parser.add_argument_group("server")
    group.add_argument(
        "--host", default=_DEFAULTS.host,
        help=f"address to listen on (default: {_DEFAULTS.host}, loopback only)",
    )
    group.add_argument(
        "--port", type=_port, default=_DEFAULTS.port,
        help=f"TCP port; 0 picks a free one (default: {_DEFAULTS.port})",
    )
    group.add_argument(
        "--region", default=_DEFAULTS.region,
        help=f"region used in stream ARNs and messages (default: {_DEFAULTS.region})",
    )
    group.add_argument(
        "--account-id", type=_account, default=_DEFAULTS.account_id,
        help=f"12-digit account id in ARNs and messages (default: {_DEFAULTS.account_id})",
    )
    group.add_argument(
        "--shard-limit", type=_positive_int, default=_DEFAULTS.shard_limit,
        help="the account's shard quota; CreateStream beyond it is LimitExceededException "
        f"(default: {_DEFAULTS.shard_limit})",
    )
    group.add_argument(
        "--state-delay", type=_seconds, default=_DEFAULTS.state_delay_seconds,
        metavar="SECONDS",
        help="how long streams stay CREATING/UPDATING/DELETING "
        f"(default: {_DEFAULTS.state_delay_seconds})",
    )
    group.add_argument(
        "--no-auth", action="store_true",
        help="accept requests without a SigV4 Authorization header (default: required)",
    )


def config_from_args(ns: argparse.Namespace) -> ServerConfig:
    """A :class:`ServerConfig` from flags parsed by a parser given :func:`add_server_arguments`."""
    return ServerConfig(
        host=ns.host,
        port=ns.port,
        region=ns.region,
        account_id=ns.account_id,
        shard_limit=ns.shard_limit,
        state_delay_seconds=ns.state_delay,
        require_auth=not ns.no_auth,
    )
