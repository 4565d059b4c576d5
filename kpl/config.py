"""ProducerConfig: the producer's options, frozen and validated at construction.

The names are the AWS KPL's options in snake_case; times are seconds (floats), sizes are
bytes, ``rate_limit`` is a percentage of a shard's published write limits. A bad value
raises :class:`ValueError` naming the option, so a typo fails at startup rather than
deep inside the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from kpl.protocol.limits import (
    DEFAULT_MAX_RECORD_SIZE,
    MAX_MAX_RECORD_SIZE_KIB,
    MIB,
    PUT_RECORDS_MAX_BYTES,
    PUT_RECORDS_MAX_BYTES_LARGE,
    PUT_RECORDS_MAX_ENTRIES,
)

__all__ = ["Jitter", "ProducerConfig"]

#: How retry delays are randomised: "full" (uniform in [0, cap]) or "decorrelated"
#: (uniform in [min_backoff, 3 * previous delay], capped).
Jitter = Literal["full", "decorrelated"]

_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """Options of a :class:`kpl.Producer`; every field has the KPL's default."""

    #: The longest a user record waits in a buffer before it is sent (KPL: 100 ms); at
    #: most ``record_ttl``.
    record_max_buffered_time: float = 0.1
    #: A record not delivered within this many seconds of put() fails with ``Expired``.
    record_ttl: float = 30.0
    #: Pack user records bound for one shard into KPL aggregated Kinesis records.
    aggregation_enabled: bool = True
    #: Largest aggregated Kinesis record, magic and checksum included.
    aggregation_max_size: int = 51_200
    #: Most user records in one aggregated Kinesis record.
    aggregation_max_count: int = _UINT32_MAX
    #: Most Kinesis records in one PutRecords request (1-500).
    collection_max_count: int = PUT_RECORDS_MAX_ENTRIES
    #: Largest PutRecords request, counted as data + partition key of every entry.
    collection_max_size: int = PUT_RECORDS_MAX_BYTES
    #: Per-shard rate limit as a percentage of 1,000 records/s and 1 MiB/s.
    rate_limit: float = 150.0
    #: Fail throttled records at once instead of retrying them.
    fail_if_throttled: bool = False
    #: Most PutRecords requests in flight (and HTTP connections in the pool).
    max_connections: int = 24
    #: Seconds a PutRecords call may take before it counts as failed (and is retried).
    request_timeout: float = 6.0
    #: Seconds to establish a connection.
    connect_timeout: float = 6.0
    #: Memory budget of the records put and not yet completed: each is charged its data,
    #: its partition key and a fixed per-record overhead (``kpl.core.admission.RECORD_OVERHEAD``,
    #: 1536 bytes: future, bookkeeping, encoded copy), so that the budget bounds memory
    #: rather than payload. put() waits (put_nowait raises) while a record does not fit.
    max_buffered_bytes: int = 64 * MIB
    #: Budget of buffered user records.
    max_buffered_records: int = 100_000
    #: At most one request in flight per shard and retries keep their place, so records
    #: of one partition key arrive in put() order.
    preserve_order: bool = False
    #: Retry backoff: the first retry waits about ``min_backoff``, doubling up to
    #: ``max_backoff``, randomised by ``jitter``.
    min_backoff: float = 0.1
    max_backoff: float = 5.0
    jitter: Jitter = "full"
    #: ListShards is called at most once per this many seconds, however many
    #: mispredictions arrive.
    shard_map_refresh_min_interval: float = 1.0
    #: Longest that records put while the shard map is being refreshed (a reshard) wait
    #: for the new map, so that they are aggregated with it, counted from the first one
    #: held; never past their ``record_ttl``, never less than ``record_max_buffered_time``
    #: after their put. When the refresh fails, or takes longer, they are sent
    #: unaggregated (each then costs a whole Kinesis record of the shard's rate).
    shard_map_hold_time: float = 1.0
    #: Largest user record (data + partition key); 1 MiB unless the stream raised it.
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE

    def __post_init__(self) -> None:
        _positive("record_max_buffered_time", self.record_max_buffered_time, zero_ok=True)
        _positive("record_ttl", self.record_ttl)
        _positive("request_timeout", self.request_timeout)
        _positive("connect_timeout", self.connect_timeout)
        _positive("min_backoff", self.min_backoff, zero_ok=True)
        _positive("max_backoff", self.max_backoff, zero_ok=True)
        _positive(
            "shard_map_refresh_min_interval", self.shard_map_refresh_min_interval, zero_ok=True
        )
        _positive("shard_map_hold_time", self.shard_map_hold_time, zero_ok=True)
        _positive("rate_limit", self.rate_limit)
        if self.record_max_buffered_time > self.record_ttl:
            # A record would wait in its buffer past the moment it should have failed,
            # and then be delivered after its TTL.
            raise ValueError(
                f"record_max_buffered_time ({self.record_max_buffered_time}) must not exceed "
                f"record_ttl ({self.record_ttl})"
            )
        if self.max_backoff < self.min_backoff:
            raise ValueError(
                f"max_backoff ({self.max_backoff}) must be at least min_backoff "
                f"({self.min_backoff})"
            )
        if self.jitter not in ("full", "decorrelated"):
            raise ValueError(f"jitter must be 'full' or 'decorrelated', got {self.jitter!r}")
        for name in ("aggregation_enabled", "fail_if_throttled", "preserve_order"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        _int_in("max_record_size", self.max_record_size, 1, MAX_MAX_RECORD_SIZE_KIB * 1024)
        _int_in("aggregation_max_size", self.aggregation_max_size, 64, self.max_record_size)
        _int_in("aggregation_max_count", self.aggregation_max_count, 1, _UINT32_MAX)
        _int_in("collection_max_count", self.collection_max_count, 1, PUT_RECORDS_MAX_ENTRIES)
        _int_in("collection_max_size", self.collection_max_size, 1, PUT_RECORDS_MAX_BYTES_LARGE)
        if self.collection_max_size < self.max_record_size:
            raise ValueError(
                f"collection_max_size ({self.collection_max_size}) must hold at least one "
                f"record of max_record_size ({self.max_record_size})"
            )
        _int_in("max_connections", self.max_connections, 1, 4096)
        _int_in("max_buffered_bytes", self.max_buffered_bytes, self.max_record_size, 2**63)
        _int_in("max_buffered_records", self.max_buffered_records, 1, 2**63)


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = "non-negative" if zero_ok else "positive"
        raise ValueError(f"{name} must be a finite {bound} number, got {value!r}")


def _int_in(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
