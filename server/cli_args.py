"""The server's command-line flags, reusable by ``python -m server`` and ``kpl server``.

``add_server_arguments(parser)`` adds every flag to an :class:`argparse.ArgumentParser`;
``config_from_args(namespace)`` turns the parsed flags into a :class:`ServerConfig`.
"""

from __future__ import annotations

import argparse

from server.config import ServerConfig
from server.core.faults import parse_latency_ms
from server.core.principals import load_principals

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


def _timeout(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def _account(text: str) -> str:
    if not (len(text) == 12 and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be 12 digits, got {text!r}")
    return text


def _scale(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _latency(text: str) -> tuple[float, float]:
    try:
        return parse_latency_ms(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
        help="the account's shard quota (open shards); CreateStream, SplitShard or "
        "UpdateShardCount beyond it is LimitExceededException "
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
    security = parser.add_argument_group("access control, audit and metrics")
    security.add_argument(
        "--iam", default=None, metavar="FILE",
        help="verify every request's SigV4 signature against the principals of FILE (JSON: "
        "name, access_key_id, secret_access_key, session_token, policies) and enforce their "
        "IAM policies (default: any credentials, everything allowed)",
    )
    security.add_argument(
        "--audit-log", default=None, metavar="FILE|-",
        help="append one CloudTrail record (JSON line) per API call to FILE, or - for "
        "standard output (default: none)",
    )
    security.add_argument(
        "--audit-data-events", choices=("on", "off"), default="on",
        help="record data events (PutRecord(s), GetRecords, GetShardIterator, "
        "SubscribeToShard) in the audit log too (default: on)",
    )
    group.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="keep streams and records in DIR, durably: every acknowledged record survives "
        "a crash (default: in memory only)",
    )
    group.add_argument(
        "--segment-bytes", type=_positive_int, default=_DEFAULTS.segment_bytes, metavar="N",
        help="with --data-dir: roll a shard's log segment over at N bytes "
        f"(default: {_DEFAULTS.segment_bytes})",
    )
    guard = parser.add_argument_group("what one client may cost")
    guard.add_argument(
        "--max-connections", type=_positive_int, default=_DEFAULTS.max_connections,
        metavar="N",
        help="concurrent connections; beyond N a new one gets 503 and is closed "
        f"(default: {_DEFAULTS.max_connections})",
    )
    guard.add_argument(
        "--idle-timeout", type=_timeout, default=_DEFAULTS.idle_timeout_seconds,
        metavar="SECONDS",
        help="close a connection that waits this long for a request or the rest of its "
        f"headers (default: {_DEFAULTS.idle_timeout_seconds:g})",
    )
    guard.add_argument(
        "--body-timeout", type=_timeout, default=_DEFAULTS.body_timeout_seconds,
        metavar="SECONDS",
        help="answer 408 and close when a request body has not arrived within this long "
        f"(default: {_DEFAULTS.body_timeout_seconds:g})",
    )
    guard.add_argument(
        "--write-timeout", type=_timeout, default=_DEFAULTS.write_timeout_seconds,
        metavar="SECONDS",
        help="cut off a client that reads nothing of a large answer for this long "
        f"(default: {_DEFAULTS.write_timeout_seconds:g})",
    )
    guard.add_argument(
        "--max-answer-bytes", type=_positive_int, default=_DEFAULTS.max_answer_bytes,
        metavar="N",
        help="bytes of large answers (GetRecords) in flight across all connections; an "
        f"answer that finds no room waits (default: {_DEFAULTS.max_answer_bytes})",
    )
    guard.add_argument(
        "--max-body-bytes", type=_positive_int, default=_DEFAULTS.max_body_bytes,
        metavar="N",
        help="bytes of large request bodies (over 256 KiB) in flight across all "
        "connections; a body that finds no room is not read until there is "
        f"(default: {_DEFAULTS.max_body_bytes})",
    )
    guard.add_argument(
        "--max-request-bytes", type=_positive_int, default=_DEFAULTS.max_request_bytes,
        metavar="N",
        help="larger request bodies get a bare 413 without being read "
        f"(default: {_DEFAULTS.max_request_bytes})",
    )
    limits = parser.add_argument_group("limits and fault injection")
    limits.add_argument(
        "--limits", choices=("aws", "off"), default=_DEFAULTS.limits,
        help="aws: throttle per shard (1 MiB/s + 1,000 records/s in, 5 calls/s + 2 MiB/s "
        "out) and control-plane calls like the service; off: no limits "
        f"(default: {_DEFAULTS.limits})",
    )
    limits.add_argument(
        "--limits-scale", type=_scale, default=_DEFAULTS.limits_scale, metavar="F",
        help="multiply the per-shard limits by F, e.g. 0.01 for tests "
        f"(default: {_DEFAULTS.limits_scale:g})",
    )
    limits.add_argument(
        "--throttle-rate", type=_probability, default=_DEFAULTS.throttle_rate, metavar="F",
        help="fail each PutRecords entry with ProvisionedThroughputExceededException with "
        "probability F, on top of the real limits (default: 0)",
    )
    limits.add_argument(
        "--internal-failure-rate", type=_probability,
        default=_DEFAULTS.internal_failure_rate, metavar="F",
        help="fail each PutRecords entry with InternalFailure with probability F (default: 0)",
    )
    limits.add_argument(
        "--error-rate", type=_probability, default=_DEFAULTS.error_rate, metavar="F",
        help="answer a whole request with 500 InternalFailure with probability F (default: 0)",
    )
    limits.add_argument(
        "--latency-ms", type=_latency, default=_DEFAULTS.latency_ms, metavar="N[-M]",
        help="add N ms (or uniformly N to M ms) of latency to every response (default: 0)",
    )
    limits.add_argument(
        "--seed", type=int, default=_DEFAULTS.seed,
        help="seed the server's random numbers (fault draws, ids) for repeatable runs",
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
        iam=load_principals(ns.iam, ns.account_id) if ns.iam is not None else None,
        audit_log=ns.audit_log,
        audit_data_events=ns.audit_data_events == "on",
        limits=ns.limits,
        limits_scale=ns.limits_scale,
        throttle_rate=ns.throttle_rate,
        internal_failure_rate=ns.internal_failure_rate,
        error_rate=ns.error_rate,
        latency_ms=ns.latency_ms,
        seed=ns.seed,
        data_dir=ns.data_dir,
        segment_bytes=ns.segment_bytes,
        max_connections=ns.max_connections,
        idle_timeout_seconds=ns.idle_timeout,
        body_timeout_seconds=ns.body_timeout,
        write_timeout_seconds=ns.write_timeout,
        max_answer_bytes=ns.max_answer_bytes,
        max_body_bytes=ns.max_body_bytes,
        max_request_bytes=ns.max_request_bytes,
    )
