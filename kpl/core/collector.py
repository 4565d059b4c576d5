"""Queues and collection: Kinesis records -> PutRecords requests within the limits.

Theory of operation
-------------------
Every predicted shard (and the unrouted pseudo-shard, for records without a shard in the
map) is a :class:`Shard`: its open aggregate, its ``queue`` of sealed Kinesis records in
put() order, its ``retries`` waiting for their backoff, its token buckets and its count
of requests in flight. :class:`Queues` owns what spans the shards: the queued counts,
the requests in flight, and when collecting may send more (``next_collect``).

``Queues.collect(now)``:

1. seal aggregates older than ``record_max_buffered_time`` (and, when a request leaves
   anyway, those due within half of it: fewer, fuller requests);
2. when something is due (a buffered-time deadline passed, a retry's backoff ended,
   ``flush()``), every sendable Kinesis record goes out; otherwise only full PutRecords
   requests (``collection_max_count`` entries or ``collection_max_size``) leave, or,
   while the buffer budget is over half used or a put waits for room (``eager``),
   whatever is queued, so that the service works on earlier records while the caller
   adds more;
3. shards are visited round-robin; each record takes tokens from its shard's
   :class:`~kpl.core.ratelimit.ShardLimiter` first; at most ``max_connections``
   requests are in flight;
4. with ``preserve_order`` a shard contributes at most ONE Kinesis record per request
   and has at most one request in flight, and its retries stay ahead of its newer
   records: partial failures can then never reorder records of one partition key (all of
   a key's records in a request are in that one aggregated record, which succeeds or
   fails as a whole).

:class:`Collector` is the arithmetic of one request: 1-``max_count`` entries whose
sizes (data plus partition key, as the service counts them) add up to at most
``max_size``; ``try_add(size)`` returns False (changing nothing) when the entry would
break a limit. The first entry always fits, since a single record is bounded by
``max_record_size``. :func:`put_records_body` renders the JSON 1.1 body with orjson from
entries that already hold base64 data (rendered once per Kinesis record, reused by every
retry).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from kpl.config import ProducerConfig
from kpl.core.metrics import ProducerMetrics
from kpl.core.ratelimit import ShardLimiter
from kpl.core.records import ARRIVAL, KRecord, OpenAggregate, UserRecord, sealed_krecord
from kpl.core.results import Completions

__all__ = ["Collector", "Poll", "PutRecordsRequest", "Queues", "Shard", "put_records_body"]

_INF = math.inf


class Collector:
    """Counts one PutRecords request being filled: entries and bytes."""

    __slots__ = ("count", "max_count", "max_size", "size")

    def __init__(self, max_count: int, max_size: int) -> None:
        self.max_count = max_count
        self.max_size = max_size
        self.count = 0
        self.size = 0

    def try_add(self, size: int) -> bool:
        """Count one more entry of ``size`` bytes, or return False when it does not fit."""
        if self.count >= self.max_count or (self.count and self.size + size > self.max_size):
            return False
        self.count += 1
        self.size += size
        return True

    def full(self, next_size: int = 1) -> bool:
        """Whether no entry of ``next_size`` bytes would fit any more."""
        return self.count >= self.max_count or self.size + next_size > self.max_size

    def reset(self) -> None:
        """Start a new request."""
        self.count = 0
        self.size = 0


def put_records_body(
    stream_name: str, stream_arn: str | None, entries: Sequence[dict[str, str]]
) -> bytes:
    """The PutRecords JSON body: ``StreamARN`` when known, else ``StreamName``."""
    if stream_arn is not None:
        return orjson.dumps({"Records": entries, "StreamARN": stream_arn})
    return orjson.dumps({"Records": entries, "StreamName": stream_name})


@dataclass(slots=True)
class PutRecordsRequest:
    """One PutRecords call, ready to send; match its answer with ``on_response``."""

    id: int
    #: The complete JSON 1.1 body (StreamName or StreamARN, Records), rendered by orjson.
    body: bytes
    #: Kinesis records in the request.
    record_count: int
    #: Sum of data + partition key sizes of the entries.
    byte_size: int
    #: User records in the request.
    user_record_count: int = 0
    #: ``now`` when the core handed the request out.
    started: float = 0.0
    #: The core's own bookkeeping; opaque to the shell.
    records: list[Any] = field(default_factory=list, repr=False)


@dataclass(slots=True)
class Poll:
    """What ``ProducerCore.poll(now)`` asks of the shell."""

    #: Send these now (never more than the in-flight limit allows).
    requests: list[PutRecordsRequest]
    #: Resolve these futures (expired records, records settled by a new shard map).
    completions: Completions
    #: Call ``poll()`` again at this ``now`` at the latest (``None``: only when woken).
    deadline: float | None
    #: Call ListShards and then ``set_shard_map()`` (or ``on_shard_map_error()``).
    refresh_shard_map: bool


class Shard:
    """Everything the core keeps for one predicted shard (or the unrouted pseudo-shard)."""

    __slots__ = (
        "agg",
        "agg_deadline",
        "hash_range",
        "in_flight",
        "limiter",
        "queue",
        "retries",
        "shard_id",
        "stale",
    )

    def __init__(
        self, shard_id: str | None, hash_range: tuple[int, int] | None, limiter: ShardLimiter | None
    ) -> None:
        self.shard_id = shard_id
        self.hash_range = hash_range
        self.limiter = limiter
        self.agg: OpenAggregate | None = None
        self.agg_deadline = _INF
        self.queue: deque[KRecord] = deque()
        self.retries: deque[KRecord] = deque()
        self.in_flight = 0
        #: Replaced by a new map: what it still holds was built for the old one.
        self.stale = False


class Queues:
    """The shards' queued Kinesis records, the requests in flight, and when to collect."""

    __slots__ = (
        "blocked",
        "eager",
        "force",
        "full_pending",
        "in_flight",
        "max_connections",
        "max_count",
        "max_size",
        "mbt",
        "metrics",
        "next_collect",
        "preserve",
        "queue_deadline",
        "queued_bytes",
        "queued_count",
        "request_ids",
        "rr",
        "stream_arn",
        "stream_name",
    )

    def __init__(
        self,
        config: ProducerConfig,
        metrics: ProducerMetrics,
        stream_name: str,
        stream_arn: str | None,
    ) -> None:
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.metrics = metrics
        self.max_count = config.collection_max_count
        #: The request size in force (the stream's limits may change it).
        self.max_size = config.collection_max_size
        self.max_connections = config.max_connections
        self.preserve = config.preserve_order
        self.mbt = config.record_max_buffered_time
        self.queued_count = 0
        self.queued_bytes = 0
        #: The earliest ``now`` at which collecting may send more.
        self.next_collect = _INF
        #: At most the earliest deadline of a queued Kinesis record.
        self.queue_deadline = _INF
        #: Queued records may fill a request: collect at once.
        self.full_pending = False
        #: Due records wait for an answer (a free slot, or their shard's request).
        self.blocked = False
        #: flush(): everything queued is due.
        self.force = False
        #: The buffer budget is over half used, or a put waits for room: queued
        #: records leave at the next collection without waiting for a full request.
        self.eager = False
        self.in_flight: dict[int, PutRecordsRequest] = {}
        self.request_ids = 0
        self.rr = 0  # round-robin start of collection

    def wake(self, at: float) -> None:
        """Collect again at ``at`` at the latest."""
        if at < self.next_collect:
            self.next_collect = at

    def enqueue(self, krecord: KRecord) -> None:
        """Queue a sealed Kinesis record on its shard."""
        krecord.shard.queue.append(krecord)
        self.queued_count += 1
        self.queued_bytes += krecord.size
        deadline = krecord.deadline
        if deadline < self.queue_deadline:
            self.queue_deadline = deadline
            if deadline < self.next_collect:
                self.next_collect = deadline
        if self.queued_count >= self.max_count or self.queued_bytes >= self.max_size:
            self.full_pending = True

    def seal(self, shard: Shard) -> None:
        """Turn the shard's open aggregate into a queued Kinesis record."""
        agg = shard.agg
        assert agg is not None
        shard.agg = None
        deadline = shard.agg_deadline
        shard.agg_deadline = _INF
        self.enqueue(sealed_krecord(agg, shard, deadline, self.mbt))

    def retry(self, krecord: KRecord, not_before: float) -> None:
        """Queue a failed Kinesis record again on its shard, due at ``not_before``.

        With preserve_order it was its shard's oldest record in flight, so it goes ahead
        of everything newer.
        """
        krecord.not_before = not_before
        if self.preserve:
            krecord.shard.retries.appendleft(krecord)
        else:
            krecord.shard.retries.append(krecord)
        self.wake(not_before)

    def retry_first(self, krecords: list[KRecord], not_before: float, attempts: int) -> None:
        """Queue Kinesis records of one shard, in this order, ahead of its other
        retries, due at ``not_before`` after ``attempts`` failed tries."""
        for krecord in krecords:
            krecord.attempts = attempts
            krecord.not_before = not_before
        if krecords:
            krecords[0].shard.retries.extendleft(reversed(krecords))
        self.wake(not_before)

    def drain(self, shard: Shard) -> list[UserRecord]:
        """Take every user record the shard holds (open aggregate, queue, retries)."""
        records: list[UserRecord] = []
        if shard.agg is not None:
            records.extend(shard.agg.records())
            shard.agg = None
            shard.agg_deadline = _INF
        for krecord in shard.queue:
            self.queued_count -= 1
            self.queued_bytes -= krecord.size
            records.extend(krecord.items)
        shard.queue.clear()
        for krecord in shard.retries:
            records.extend(krecord.items)
        shard.retries.clear()
        return records

    def sweep(
        self,
        shards: Sequence[Shard],
        horizon: float,
        rebuild: Callable[[list[UserRecord], Shard], KRecord],
    ) -> list[tuple[Shard, list[UserRecord]]]:
        """Take the user records that arrived at or before ``horizon`` out of the queues
        and retries, by shard; what is left of a Kinesis record is made anew by
        ``rebuild``, keeping its place and its retry state."""
        expired: list[tuple[Shard, list[UserRecord]]] = []
        for shard in shards:
            for queued, queue in ((True, shard.queue), (False, shard.retries)):
                # A Kinesis record's deadline is its oldest user record's + the buffered time.
                if not any(k.deadline - self.mbt <= horizon for k in queue):
                    continue
                kept: deque[KRecord] = deque()
                for krecord in queue:
                    if min(krecord.arrivals) > horizon:
                        kept.append(krecord)
                        continue
                    old = [r for r in krecord.items if r[ARRIVAL] <= horizon]
                    if not old:
                        kept.append(krecord)
                        continue
                    if queued:
                        self.queued_count -= 1
                        self.queued_bytes -= krecord.size
                    expired.append((shard, old))
                    live = [r for r in krecord.items if r[ARRIVAL] > horizon]
                    if live:
                        rebuilt = rebuild(live, shard)
                        rebuilt.attempts = krecord.attempts
                        rebuilt.not_before = krecord.not_before
                        rebuilt.last_delay = krecord.last_delay
                        kept.append(rebuilt)
                        if queued:
                            self.queued_count += 1
                            self.queued_bytes += rebuilt.size
                queue.clear()
                queue.extend(kept)
        return expired

    def collect(
        self, shards: Sequence[Shard], now: float, holding: bool, hold_until: float
    ) -> list[PutRecordsRequest]:
        """The requests to send now (see the module docstring); sets ``next_collect``.

        ``holding``: nothing may leave (no map yet, or preserve_order waits for one) until
        the map arrives or ``hold_until``.
        """
        due = self.force or now >= self.next_collect
        # Seal aggregators past their buffered-time deadline. When a request leaves anyway,
        # aggregators due within half the buffered time ride along: fewer, fuller requests.
        horizon = now + 0.5 * self.mbt if due else now
        for shard in shards:
            if shard.agg is not None and shard.agg_deadline <= horizon:
                self.seal(shard)
        eager = self.eager
        self.force = self.eager = False
        self.full_pending = False
        slots = self.max_connections - len(self.in_flight)
        collector = Collector(self.max_count, self.max_size)
        preserve = self.preserve
        batches: list[list[KRecord]] = []
        batch: list[KRecord] = []
        next_wake = _INF
        n = len(shards)
        start = self.rr % n
        self.rr += 1
        blocked = False
        for k in range(n):
            shard = shards[(start + k) % n]
            if not shard.queue and not shard.retries:
                continue
            if holding:
                continue
            if preserve and (shard.in_flight or shard.shard_id is None):
                # One request per shard at a time; unrouted records wait for the map.
                blocked = blocked or bool(shard.in_flight)
                continue
            limiter = shard.limiter
            while True:
                krecord, from_retries = self._next_sendable(shard, now, preserve)
                if krecord is None:
                    break
                size = krecord.size
                if not collector.try_add(size):
                    batches.append(batch)
                    batch = []
                    collector.reset()
                    slots -= 1
                    if slots == 0:
                        blocked = True
                        break
                    collector.try_add(size)
                if limiter is not None:
                    wait = limiter.take(1, size, now)
                    if wait:
                        collector.count -= 1
                        collector.size -= size
                        if now + wait < next_wake:
                            next_wake = now + wait
                        break
                if from_retries:
                    shard.retries.popleft()
                else:
                    shard.queue.popleft()
                    self.queued_count -= 1
                    self.queued_bytes -= size
                batch.append(krecord)
                if preserve:
                    shard.in_flight += 1
                    break
            if preserve and shard.in_flight and (shard.queue or shard.retries):
                blocked = True  # the rest waits for this shard's answer
            if shard.retries:
                wake = min(r.not_before for r in shard.retries)
                if now < wake < next_wake:
                    next_wake = wake
            if slots == 0:
                break
        if batch:
            if due or eager or collector.full():
                batches.append(batch)
            else:
                # Neither due nor full: put the records back and wait for more.
                for krecord in reversed(batch):
                    self._unsend(krecord)
        if due:
            # What is left is blocked (limits, slots, in flight): those wake us.
            self.queue_deadline = _INF
            self.blocked = blocked
        elif self.queue_deadline < next_wake:
            next_wake = self.queue_deadline
        for shard in shards:
            if shard.agg is not None and shard.agg_deadline < next_wake:
                next_wake = shard.agg_deadline
        if holding:
            # Only the map (which wakes the shell) or the end of the wait can help.
            next_wake = hold_until
        self.next_collect = next_wake
        if blocked and not due:
            self.full_pending = True
        return [self._request(b, now) for b in batches if b]

    @staticmethod
    def _next_sendable(
        shard: Shard, now: float, preserve: bool
    ) -> tuple[KRecord | None, bool]:
        """The shard's next record to send and whether it is a retry (None: nothing)."""
        retries = shard.retries
        if retries:
            if retries[0].not_before <= now:
                return retries[0], True
            if preserve:
                return None, False  # the oldest records go first, or nothing does
            for i, krecord in enumerate(retries):
                if krecord.not_before <= now:
                    del retries[i]
                    retries.appendleft(krecord)
                    return krecord, True
        if shard.queue:
            return shard.queue[0], False
        return None, False

    def _unsend(self, krecord: KRecord) -> None:
        shard = krecord.shard
        if shard.limiter is not None:
            shard.limiter.records.tokens += 1
            shard.limiter.bytes.tokens += krecord.size
        if self.preserve:
            shard.in_flight -= 1
        shard.queue.appendleft(krecord)
        self.queued_count += 1
        self.queued_bytes += krecord.size

    def _request(self, batch: list[KRecord], now: float) -> PutRecordsRequest:
        self.request_ids += 1
        metrics = self.metrics
        entries = [krecord.entry for krecord in batch]
        size = 0
        users = 0
        for krecord in batch:
            size += krecord.size
            count = len(krecord.handles)
            users += count
            if not krecord.attempts:
                # Each user record's own wait, from its put() to its first send.
                metrics.buffering += now * count - sum(krecord.arrivals)
                metrics.buffered_n += count
        request = PutRecordsRequest(
            id=self.request_ids,
            body=put_records_body(self.stream_name, self.stream_arn, entries),
            record_count=len(batch),
            byte_size=size,
            user_record_count=users,
            started=now,
            records=batch,
        )
        self.in_flight[request.id] = request
        metrics.requests += 1
        metrics.request_krecords += len(batch)
        return request

    def answered(self, request: PutRecordsRequest, now: float) -> bool:
        """Take ``request`` out of the in-flight set; False when it was not there (its
        records were failed by ``abandon``, and the answer is to be ignored)."""
        if self.in_flight.pop(request.id, None) is None:
            return False
        metrics = self.metrics
        metrics.responses += 1
        metrics.request_time += now - request.started
        if self.preserve:
            for krecord in request.records:
                krecord.shard.in_flight -= 1
        if self.blocked:
            # Due records waited for a slot or for their shard's request: try again now.
            self.blocked = False
            self.next_collect = now
        elif self.queued_count:
            self.full_pending = True
        return True

    def abandon(self) -> list[KRecord]:
        """Forget every request in flight (the shell is closing); their records."""
        krecords: list[KRecord] = []
        for request in self.in_flight.values():
            for krecord in request.records:
                krecords.append(krecord)
                krecord.shard.in_flight = 0
        self.in_flight.clear()
        return krecords
