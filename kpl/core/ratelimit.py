"""Per-shard token buckets on records and bytes: pure arithmetic on ``now``.

A shard accepts 1,000 records/s and 1 MiB/s of writes. The producer keeps, per
predicted shard, one :class:`~kpl.protocol.bucket.TokenBucket` for each, refilled
continuously at ``rate_limit`` percent of the published rate and holding at most one
second's worth. A Kinesis record takes its tokens from both buckets or from neither,
and otherwise learns how long to wait until both have them.
"""

from __future__ import annotations

from kpl.protocol.bucket import TokenBucket
from kpl.protocol.limits import SHARD_WRITE_BYTES_PER_SECOND, SHARD_WRITE_RECORDS_PER_SECOND

__all__ = ["ShardLimiter"]


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
