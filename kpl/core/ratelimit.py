"""Per-shard token buckets on records and bytes that adapt to what the shard takes.

A shard accepts 1,000 records/s and 1 MiB/s of writes. The producer keeps, per
predicted shard, one :class:`~kpl.protocol.bucket.TokenBucket` for each, refilled
continuously and holding at most one second's worth. A Kinesis record takes its tokens
from both buckets or from neither, and otherwise learns how long to wait until both have
them.

The buckets' rate is ``scale`` times the published one, and ``scale`` adapts (AIMD):

* it starts at the ceiling, ``rate_limit`` percent (the KPL's 150 % by default), and
  never goes above it;
* a ``ProvisionedThroughputExceededException`` for a Kinesis record sent to the shard
  multiplies it by :data:`BACKOFF` and empties the buckets (the shard has no room at that
  moment), at most once per round trip: only a record sent after the last cut can cut
  again (the answers of requests already in flight say what the old rate did); and only
  while the rate is what paces the producer (a bucket at most :data:`IDLE` full);
* while records are delivered it grows by :data:`RECOVERY` per second (an additive
  step, in units of the published rate), back up to the ceiling;
* it never goes below :data:`MIN_SCALE`.

One limiter per shard, shared by every Kinesis record sent to that shard; a shard that a
new map introduces (a split or merge child) starts with a fresh limiter at the ceiling,
while shards the new map keeps as they were keep what they learned.
"""

from __future__ import annotations

from kpl.protocol.bucket import TokenBucket
from kpl.protocol.limits import SHARD_WRITE_BYTES_PER_SECOND, SHARD_WRITE_RECORDS_PER_SECOND

__all__ = ["BACKOFF", "IDLE", "MIN_SCALE", "RECOVERY", "ShardLimiter"]

#: The factor a throttle applies to the rate.
BACKOFF = 0.75
#: How fast the rate grows back while records are delivered, in published rates per
#: second (0.1: a tenth of the shard's limit more every second).
RECOVERY = 0.1
#: The lowest rate, in published rates (a shard never gets less than this share).
MIN_SCALE = 0.05
#: A throttle cuts nothing while both buckets are fuller than this share: the producer
#: sends well below its rate, so the shard is busy with others' writes (or the refusal
#: is not about the rate at all) and a lower rate would change nothing.
IDLE = 0.9


class ShardLimiter:
    """The two buckets of one shard (Kinesis records, bytes), at an adaptive rate."""

    __slots__ = ("bytes", "ceiling", "cut_at", "grown_at", "records", "scale", "throttles")

    def __init__(self, rate_limit_percent: float, now: float) -> None:
        #: The highest scale: ``rate_limit`` percent of the published rates.
        self.ceiling = scale = rate_limit_percent / 100.0
        #: The buckets' rate now, in published rates.
        self.scale = scale
        #: When the rate was last cut (only a record sent later may cut it again).
        self.cut_at = -1e300
        #: When the rate last grew (or was cut): the next growth counts from there.
        self.grown_at = now
        #: Throttles that cut the rate.
        self.throttles = 0
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

    def throttled(self, sent: float, now: float) -> None:
        """A Kinesis record sent at ``sent`` was throttled by the shard."""
        if sent < self.cut_at:
            return  # sent at the old rate, which has been cut already
        records, size = self.records, self.bytes
        if (
            records.refill(now) > IDLE * records.capacity
            and size.refill(now) > IDLE * size.capacity
        ):
            return  # not pacing anything: a lower rate would not send less
        self.throttles += 1
        scale = self.scale * BACKOFF
        self.cut_at = self.grown_at = now
        self._set(scale if scale > MIN_SCALE else MIN_SCALE, now)
        # The shard has no room now: no burst from tokens saved up at the old rate.
        if self.records.tokens > 0.0:
            self.records.tokens = 0.0
        if self.bytes.tokens > 0.0:
            self.bytes.tokens = 0.0

    def delivered(self, now: float) -> None:
        """A Kinesis record sent to the shard was stored."""
        if self.scale >= self.ceiling:
            return
        scale = self.scale + RECOVERY * (now - self.grown_at)
        self.grown_at = now
        self._set(scale if scale < self.ceiling else self.ceiling, now)

    def _set(self, scale: float, now: float) -> None:
        self.scale = scale
        records = SHARD_WRITE_RECORDS_PER_SECOND * scale
        size = SHARD_WRITE_BYTES_PER_SECOND * scale
        self.records.set_rate(records, records, now)
        self.bytes.set_rate(size, size, now)
