"""ServerConfig: every setting of the stream server, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.core.engine import EngineConfig
from server.core.faults import FaultSettings, check_latency_ms, check_rate
from server.core.principals import Principals
from server.storage.durable import DEFAULT_SEGMENT_BYTES

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "ServerConfig"]

#: Bodies above this are answered with a bare 413 without being read: 15 MiB, above the
#: largest valid PutRecords (500 entries of base64 data at 10 MiB per request, plus keys).
DEFAULT_MAX_REQUEST_BYTES = 15 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of :class:`server.StreamServer` and ``python -m server``.

    Units are in the names. The defaults are the service's: its limits enforced, no
    injected faults, records kept in memory.
    """

    host: str = "127.0.0.1"
    """Address to listen on (loopback by default)."""
    port: int = 4567
    """TCP port; 0 picks a free one (see ``StreamServer.url``)."""
    region: str = "us-east-1"
    """Region in ARNs and messages."""
    account_id: str = "000000000000"
    """Account id in ARNs and messages."""
    shard_limit: int = 500
    """The account's shard quota (open shards over all streams)."""
    state_delay_seconds: float = 0.05
    """How long a stream stays CREATING / UPDATING / DELETING."""
    iterator_ttl_seconds: float = 300.0
    """Shard iterators expire after this long."""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    """Larger bodies get a bare 413 without being read."""
    require_auth: bool = True
    """Require a SigV4-shaped ``Authorization`` header (signatures are verified only with
    ``iam``)."""
    iam: str | Path | Principals | None = None
    """The principals (or the ``--iam`` file naming them): every request's signature is
    verified against their keys and every call checked against their policies; ``None``:
    any SigV4-shaped credentials are accepted and everything is allowed."""
    audit_log: str | Path | None = None
    """Write one CloudTrail record per API call to this file (``"-"``: standard output);
    ``None``: no audit log."""
    metrics: bool = True
    """Serve the ``AWS/Kinesis`` metrics as Prometheus text on ``GET /metrics``."""
    audit_data_events: bool = True
    """Record data events (PutRecord(s), GetRecords, GetShardIterator, SubscribeToShard) in
    the audit log, not only management events."""
    limits: str = "aws"
    """``aws``: enforce the service's per-shard and control-plane rates; ``off``: none."""
    limits_scale: float = 1.0
    """Multiplies the per-shard read/write limits (small numbers for fast tests)."""
    throttle_rate: float = 0.0
    """Injected: probability a PutRecords entry fails with ProvisionedThroughputExceeded."""
    internal_failure_rate: float = 0.0
    """Injected: probability a PutRecords entry fails with InternalFailure."""
    error_rate: float = 0.0
    """Injected: probability a whole request answers 500 InternalFailure."""
    latency_ms: tuple[float, float] = (0.0, 0.0)
    """Injected: added response latency, uniform in ``[low, high]`` milliseconds."""
    seed: int | None = None
    """Seed of the server's ``random.Random`` (fault draws, ids); ``None``: unseeded."""
    data_dir: str | Path | None = None
    """Keep streams and records in this directory (durable, survives kill -9); ``None``:
    in memory only."""
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    """With ``data_dir``: a shard's log segment rolls over at this size."""
    max_connections: int = 1000
    """Concurrent connections beyond which new ones get a 503 and are closed."""
    idle_timeout_seconds: float = 30.0
    """A connection waiting this long for (the rest of) a request's headers is closed."""
    body_timeout_seconds: float = 30.0
    """A request body not received within this long gets 408 and its connection closed."""
    write_timeout_seconds: float = 30.0
    """A client that reads nothing of a large answer for this long is cut off."""
    max_answer_bytes: int = 64 * 1024 * 1024
    """Large answers (GetRecords) in flight across every connection hold at most this
    (five answers of GetRecords' largest, ~13 MB of JSON each)."""
    max_body_bytes: int = 64 * 1024 * 1024
    """Large request bodies (over 256 KiB) being read, decoded and answered across every
    connection hold at most this (by their announced length); one that finds no room
    is not read until there is. One body may exceed it: it then waits to be alone."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.shard_limit < 1:
            raise ValueError(f"shard_limit must be at least 1, got {self.shard_limit}")
        if self.state_delay_seconds < 0:
            raise ValueError(f"state_delay_seconds must be >= 0, got {self.state_delay_seconds}")
        if self.iterator_ttl_seconds <= 0:
            raise ValueError(
                f"iterator_ttl_seconds must be > 0, got {self.iterator_ttl_seconds}"
            )
        if self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {self.max_request_bytes}")
        if not (len(self.account_id) == 12 and self.account_id.isdigit()):
            raise ValueError(f"account_id must be 12 digits, got {self.account_id!r}")
        if self.limits not in ("aws", "off"):
            raise ValueError(f"limits must be 'aws' or 'off', got {self.limits!r}")
        if not 0 < self.limits_scale < float("inf"):
            raise ValueError(f"limits_scale must be > 0, got {self.limits_scale}")
        check_rate("throttle_rate", self.throttle_rate)
        check_rate("internal_failure_rate", self.internal_failure_rate)
        check_rate("error_rate", self.error_rate)
        check_latency_ms(self.latency_ms)
        for name in ("idle_timeout_seconds", "body_timeout_seconds", "write_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_connections", "max_answer_bytes", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.segment_bytes < 1:
            raise ValueError(f"segment_bytes must be >= 1, got {self.segment_bytes}")
        if self.iam is not None and not self.require_auth:
            raise ValueError("--iam verifies every signature: it cannot go with --no-auth")
        self.fault_settings()  # the combined checks (throttle + internal failure <= 1)

    def fault_settings(self) -> FaultSettings:
        """The fault-injection part of the settings."""
        return FaultSettings(
            throttle_rate=self.throttle_rate,
            internal_failure_rate=self.internal_failure_rate,
            error_rate=self.error_rate,
            latency_ms=self.latency_ms,
        )

    def engine_config(self) -> EngineConfig:
        """The part of the settings the sans-IO engine uses."""
        return EngineConfig(
            region=self.region,
            account_id=self.account_id,
            shard_limit=self.shard_limit,
            state_delay_seconds=self.state_delay_seconds,
            iterator_ttl_seconds=self.iterator_ttl_seconds,
        )
