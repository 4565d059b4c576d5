"""Per-shard token buckets on records and bytes: pure arithmetic on ``now``.

A shard accepts 1,000 records/s and 1 MiB/s of writes. The producer keeps, per
predicted shard, one bucket for each, refilled continuously at ``rate_limit`` percent of
the published rate and holding at most one second's worth. ``take(n, now)`` either takes
the tokens and returns 0.0, or takes nothing and returns how long to wait until they are
there. A request larger than the whole bucket passes when the bucket is full (the bucket
then goes negative), so an oversized record is slowed, never stuck forever.
"""

from __future__ import annotations

from kpl.protocol.limits import SHARD_WRITE_BYTES_PER_SECOND, SHARD_WRITE_RECORDS_PER_SECOND

__all__ = ["ShardLimiter", "TokenBucket"]


class TokenBucket:
    """A continuously refilled bucket of ``rate`` tokens per second, capped at ``capacity``."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            tokens = self.tokens + (now - self.updated) * self.rate
            self.tokens = tokens if tokens < self.capacity else self.capacity
            self.updated = now

    def delay(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens can be taken (0.0: now). Takes nothing."""
        self._refill(now)
        need = n if n < self.capacity else self.capacity
        if self.tokens >= need:
            return 0.0
        return (need - self.tokens) / self.rate

    def take(self, n: float, now: float) -> float:
        """Take ``n`` tokens and return 0.0, or take none and return the wait in seconds."""
        wait = self.delay(n, now)
        if wait == 0.0:
            self.tokens -= n
        return wait


class ShardLimiter:
    """The two buckets of one shard: Kinesis records and bytes (data + partition key)."""

    __slots__ = ("bytes", "records")

    def __init__(self, rate_limit_percent: float, now: float) -> None:
        scale = rate_limit_percent / 100.0
        self.records = TokenBucket(
            SHARD_WRITE_RECORDS_PER_SECOND * scale, SHARD_WRITE_RECORDS_PER_SECOND * scale, now
        )
        self.bytes = TokenBucket(
            SHARD_WRITE_BYTES_PER_SECOND * scale, SHARD_WRITE_BYTES_PER_SECOND * scale, now
        )

    def take(self, records: int, size: int, now: float) -> float:
        """Take one Kinesis record's tokens from both buckets, or nothing and the wait."""
        wait = self.records.delay(records, now)
        wait_bytes = self.bytes.delay(size, now)
        if wait_bytes > wait:
            wait = wait_bytes
        if wait == 0.0:
            self.records.tokens -= records
            self.bytes.tokens -= size
        return wait
