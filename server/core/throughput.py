"""Per-shard throughput limits and control-plane rates, as plain arithmetic over ``now``.

Theory of operation
-------------------
Every limit is a **token bucket refilled continuously**: ``rate`` tokens per second up to
``capacity = rate * burst_seconds`` (one second of burst by default). A bucket starts
full the first time it is used. Why buckets rather than fixed one-second windows:

* a producer pacing itself at the nominal rate takes tokens as fast as they come back,
  so it is (almost) never throttled, whatever the phase of its batches against the
  wall-clock second;
* a burst of several times the rate empties the bucket in the first fraction of a
  second, and the rest is throttled until tokens come back: a producer sees the
  service's ``ProvisionedThroughputExceededException`` and recovers about one second
  later, as with the real service;
* a fixed window would let a producer put twice the limit across a window boundary and
  throttle a paced one that happens to straddle it.

The service does not publish its algorithm; it documents the per-second limits and that
"subsequent calls made within the next 1 second" (5 seconds after a 10 MiB GetRecords)
are throttled. One second of burst reproduces both closely enough.

Per shard (scaled by ``Limits.aws(scale)``, from ``kpl.protocol.limits``):

=================  ==========================  ===========================================
bucket             rate                        how it is taken
=================  ==========================  ===========================================
write records      1,000 records/s             with write bytes, all or nothing per entry
write bytes        1 MiB/s (data + part. key)  with write records
read calls         5 GetRecords/s              one per call; refused when empty
read bytes         2 MiB/s                     charged *after* a call with what it
                                               returned (may go into debt); a call is
                                               refused while the bucket is in debt
=================  ==========================  ===========================================

A take larger than a bucket's whole capacity (a 10 MiB record on a stream that allows
large records, or any record under a tiny ``--limits-scale``) is admitted only when the
bucket is full and leaves it in debt, so the *average* stays at the limit, as the service
documents for large records. After a 10 MiB GetRecords the read-bytes bucket owes
8 MiB, so reads are refused for 4 seconds (the service says "within the next 5 seconds";
we stay within one second of it without a second mechanism).

Control plane (account- or stream-wide, **not** scaled by ``--limits-scale``: the
figures are already small and tests drive them with a fake clock): each action's
published rate is its ``control_rate`` in the action registry (``server.core.actions``,
with the service-model text each comes from); :data:`CONTROL_RATES` collects them.
GetShardIterator goes through ``admit_control`` with ``"<stream>/<shard id>"`` as its
stream-scoped key, so each shard has its own bucket.

Enhanced fan-out: each registered consumer reads each shard from a read-bytes bucket of
its own (the shard's read-bytes rate, 2 MiB/s scaled), charged after every
SubscribeToShard event with what it carried, never from the shard's shared GetRecords
buckets; a subscription waits (``fanout_wait``) while its bucket is in debt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kpl.protocol.bucket import TokenBucket
from kpl.protocol.limits import (
    SHARD_READ_BYTES_PER_SECOND,
    SHARD_READ_CALLS_PER_SECOND,
    SHARD_WRITE_BYTES_PER_SECOND,
    SHARD_WRITE_RECORDS_PER_SECOND,
)
from server.core.actions import ACCOUNT, ACTIONS, STREAM, ControlRate

__all__ = [
    "ACCOUNT",
    "CONTROL_RATES",
    "STREAM",
    "ControlRate",
    "Limits",
    "Throughput",
]

# A microsecond of refill as slack: epoch seconds near 1.8e9 carry only ~0.2 us of
# precision, so "exactly on time" would otherwise be refused by rounding.
_SLACK_SECONDS: Final = 1e-6

#: Published control-plane rates, by action (from the action registry).
CONTROL_RATES: Final[dict[str, ControlRate]] = {
    action.name: action.control_rate
    for action in ACTIONS.values()
    if action.control_rate is not None
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-shard rates (per second) and the burst every bucket allows (seconds of rate)."""

    write_records_per_second: float = SHARD_WRITE_RECORDS_PER_SECOND
    write_bytes_per_second: float = SHARD_WRITE_BYTES_PER_SECOND
    read_calls_per_second: float = SHARD_READ_CALLS_PER_SECOND
    read_bytes_per_second: float = SHARD_READ_BYTES_PER_SECOND
    burst_seconds: float = 1.0

    @classmethod
    def aws(cls, scale: float = 1.0) -> Limits:
        """The service's per-shard limits multiplied by ``scale`` (> 0)."""
        if not scale > 0:
            raise ValueError(f"limits scale must be > 0, got {scale}")
        return cls(
            write_records_per_second=SHARD_WRITE_RECORDS_PER_SECOND * scale,
            write_bytes_per_second=SHARD_WRITE_BYTES_PER_SECOND * scale,
            read_calls_per_second=SHARD_READ_CALLS_PER_SECOND * scale,
            read_bytes_per_second=SHARD_READ_BYTES_PER_SECOND * scale,
        )


class _ShardBuckets:
    __slots__ = ("read_bytes", "read_calls", "write_bytes", "write_records")

    def __init__(self, limits: Limits, now: float) -> None:
        burst = limits.burst_seconds
        self.write_records = TokenBucket(
            limits.write_records_per_second, limits.write_records_per_second * burst, now
        )
        self.write_bytes = TokenBucket(
            limits.write_bytes_per_second, limits.write_bytes_per_second * burst, now
        )
        self.read_calls = TokenBucket(
            limits.read_calls_per_second, limits.read_calls_per_second * burst, now
        )
        self.read_bytes = TokenBucket(
            limits.read_bytes_per_second, limits.read_bytes_per_second * burst, now
        )


class Throughput:
    """The engine's :class:`~server.core.hooks.ThroughputGate`: per-shard and control rates.

    ``control`` maps an action to its :class:`ControlRate`; actions not in it are not
    limited. Control buckets hold ``max(1, rate * burst)`` calls so that a rate below
    one per second still admits a first call.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        control: dict[str, ControlRate] | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self.control = dict(CONTROL_RATES if control is None else control)
        self._shards: dict[tuple[str, str], _ShardBuckets] = {}
        self._control: dict[tuple[str, str], TokenBucket] = {}
        self._fanout: dict[tuple[str, str], TokenBucket] = {}

    def _buckets(self, stream_name: str, shard_id: str, now: float) -> _ShardBuckets:
        key = (stream_name, shard_id)
        buckets = self._shards.get(key)
        if buckets is None:
            buckets = self._shards[key] = _ShardBuckets(self.limits, now)
        return buckets

    def admit_write(
        self, stream_name: str, shard_id: str, records: int, size: int, now: float
    ) -> bool:
        """Take ``records`` and ``size`` bytes from the shard's write buckets, or nothing."""
        buckets = self._shards.get((stream_name, shard_id))
        if buckets is None:
            buckets = self._buckets(stream_name, shard_id, now)
        count = buckets.write_records
        volume = buckets.write_bytes
        # The hot path (once per PutRecords entry): the common case of two buckets with
        # room, inlined (TokenBucket.refill's arithmetic); anything unusual asks delay().
        if now > count.updated:
            tokens = count.tokens + (now - count.updated) * count.rate
            count.tokens = tokens if tokens < count.capacity else count.capacity
            count.updated = now
        if now > volume.updated:
            tokens = volume.tokens + (now - volume.updated) * volume.rate
            volume.tokens = tokens if tokens < volume.capacity else volume.capacity
            volume.updated = now
        if (count.tokens >= records and volume.tokens >= size) or (
            count.delay(records, now, _SLACK_SECONDS) == 0.0
            and volume.delay(size, now, _SLACK_SECONDS) == 0.0
        ):
            count.tokens -= records
            volume.tokens -= size
            return True
        return False

    def admit_read(self, stream_name: str, shard_id: str, now: float) -> bool:
        """One GetRecords call: refused when the call bucket is empty or bytes are owed."""
        buckets = self._buckets(stream_name, shard_id, now)
        if buckets.read_bytes.refill(now) < 0:
            return False
        return buckets.read_calls.take(1, now, _SLACK_SECONDS) == 0.0

    def record_read(self, stream_name: str, shard_id: str, size: int, now: float) -> None:
        """Charge what a GetRecords call returned (data + partition keys)."""
        if size:
            self._buckets(stream_name, shard_id, now).read_bytes.charge(size, now)

    def admit_control(self, action: str, stream_name: str | None, now: float) -> bool:
        """One control-plane call against the action's published rate."""
        rate = self.control.get(action)
        if rate is None:
            return True
        key = (action, (stream_name or "") if rate.scope == STREAM else "")
        bucket = self._control.get(key)
        if bucket is None:
            capacity = max(1.0, rate.per_second * self.limits.burst_seconds)
            bucket = self._control[key] = TokenBucket(rate.per_second, capacity, now)
        return bucket.take(1, now, _SLACK_SECONDS) == 0.0

    def _fanout_bucket(self, consumer_arn: str, shard_id: str, now: float) -> TokenBucket:
        key = (consumer_arn, shard_id)
        bucket = self._fanout.get(key)
        if bucket is None:
            rate = self.limits.read_bytes_per_second
            bucket = self._fanout[key] = TokenBucket(rate, rate * self.limits.burst_seconds, now)
        return bucket

    def fanout_wait(self, consumer_arn: str, shard_id: str, now: float) -> float:
        """Seconds until the consumer may be sent more of the shard (0.0: now)."""
        bucket = self._fanout_bucket(consumer_arn, shard_id, now)
        tokens = bucket.refill(now)
        return 0.0 if tokens >= 0 else -tokens / bucket.rate

    def record_fanout(self, consumer_arn: str, shard_id: str, size: int, now: float) -> None:
        """Charge the bytes one SubscribeToShard event carried to the consumer's bucket."""
        if size:
            self._fanout_bucket(consumer_arn, shard_id, now).charge(size, now)

    def forget_stream(self, stream_name: str) -> None:
        """Drop every bucket of a deleted stream (a new stream of that name starts fresh)."""
        for key in [k for k in self._shards if k[0] == stream_name]:
            del self._shards[key]
        prefix = stream_name + "/"
        for key in [k for k in self._control if k[1] == stream_name or k[1].startswith(prefix)]:
            del self._control[key]
        consumer_part = f":stream/{stream_name}/consumer/"
        for key in [k for k in self._fanout if consumer_part in k[0]]:
            del self._fanout[key]
