"""Routing: which shard each user record goes to, and into what Kinesis record.

Theory of operation
-------------------
:class:`ShardRouting` owns the shard map and everything derived from it: one
:class:`~kpl.core.collector.Shard` per open shard of the map (plus the *unrouted*
pseudo-shard for records without one), their starting and ending hash keys for a binary
search, and the :class:`~kpl.core.shard_map.RefreshPolicy` that says when to ask
ListShards again.

A record is aggregated only while the map is *fresh*: present, and no refresh wanted or
outstanding. Otherwise it is queued plain (the service then places each record by its
own hash key, so no sub-record can land in a shard that does not own it), except in two
cases where it waits for the next map instead, so that it can still be aggregated:

- without a map, records are *held* in the unrouted queue until ``hold_until`` (the
  first ListShards plus ``FIRST_MAP_WAIT``; minus infinity once that fetch failed or
  timed out);
- with a map whose refresh is pending (a misprediction after a reshard, say), records
  wait in ``_held`` until a map that can be trusted is installed, and at the latest
  ``shard_map_hold_time`` after the first of them was held (never less than
  ``record_max_buffered_time`` after a record's put, never past its ``record_ttl``):
  then, or as soon as the refresh fails, they are queued plain. After a failed refresh,
  until the next one starts, records wait ``record_max_buffered_time`` only. The bound
  counts from the start of the hold, not from each answer: a ListShards that answers
  with a map still mid-reshard (the delivery that asked for it unexplained) re-holds
  the records without extending their wait. A plain record costs a whole Kinesis
  record of the shard's 1,000 per second where an aggregated one carries hundreds, so
  waiting for the map is worth far more than ``record_max_buffered_time`` whenever
  ListShards is slow.

A Kinesis record that fails after its shard was replaced (a throttle answered after the
new map came) is re-routed by the current map: aggregated again while the map is fresh,
held with the others while a refresh is pending, plain otherwise (and always with
``preserve_order``, where its records must stay ahead of their shard's newer ones).

Installing a map keeps the shards whose id and hash range are unchanged (with their
queues and token buckets) and drains the others, whose records are routed again in
put() order. Shards are replaced, never edited, so a Kinesis record built for a replaced
shard (``stale``) is routed afresh when it has to be retried.

Partition keys repeat (users, devices, sessions): a bounded cache keeps each valid key's
UTF-8 bytes, MD5 hash key, key-table entry and predicted shard for the current map, so
that most records cost a dict hit instead of an MD5 and a binary search.

``ProducerCore`` derives from this class: its ``add()`` fast path reads the same
attributes (``_shards``, ``_starts``, ``_ends``, ``_fresh``) as plain attribute loads.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

from kpl.config import ProducerConfig
from kpl.core.collector import Queues, Shard
from kpl.core.ratelimit import ShardLimiter
from kpl.core.records import (
    AGGREGATED_PARTITION_KEY,
    ARRIVAL,
    HASH,
    SEQ,
    KRecord,
    OpenAggregate,
    UserRecord,
    aggregated_krecord,
    aggregated_krecords,
    plain_krecord,
)
from kpl.core.shard_map import RefreshPolicy, ShardMap
from kpl.protocol.aggregation import PARTITION_KEY_ENTRY_HEADERS as _KEY_HEADERS
from kpl.protocol.hashing import hash_key_for, md5, partition_key_bytes

__all__ = ["KEY_CACHE_SIZE", "ShardRouting"]

_INF = math.inf
_from_bytes = int.from_bytes

#: Most partition keys whose bytes and hash key are remembered (the cache is emptied
#: when full: a workload of endless distinct keys pays one dict insert per record).
KEY_CACHE_SIZE = 16_384


class ShardRouting:
    """The shard map, the shards built from it, and the routing of user records."""

    def __init__(self, config: ProducerConfig, queues: Queues) -> None:
        self._queues = queues
        self._rate_limit = config.rate_limit
        self._aggregation = config.aggregation_enabled
        self._mbt = config.record_max_buffered_time
        self._ttl = config.record_ttl
        self._hold_time = config.shard_map_hold_time
        self._agg_max_count = config.aggregation_max_count
        #: Largest aggregated record (the stream's record size less its partition key).
        self._agg_max_size = min(
            config.aggregation_max_size, config.max_record_size - len(AGGREGATED_PARTITION_KEY)
        )
        self._map: ShardMap | None = None
        self._shards: list[Shard] = []
        self._unrouted = Shard(None, None, None)
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._refresh = RefreshPolicy(config.shard_map_refresh_min_interval)
        # Aggregate only with a map we trust: set by _refresh_changed().
        self._fresh = False
        # Records without a map are held until this `now` (set by the first ListShards;
        # -inf once the first fetch failed or timed out: then they go plain).
        self._hold_until = _INF
        # The last ListShards failure, for the message of records that waited for a map.
        self._map_error: BaseException | None = None
        # The last ListShards failed and no other has started since.
        self._refresh_failed = False
        # Records put while a refresh of the map is pending, waiting for the new map
        # until _held_until at the latest (see _route for the bound).
        self._held: list[UserRecord] = []
        self._held_until = _INF
        # When the current hold began (the first record held since records last went
        # out): the bound of the wait counts from here, across answers that re-hold.
        self._hold_started = _INF
        # The last record put before the last flush (by seq): routed again later (a new
        # map), such records are still due at once.
        self._flush_seq = 0
        # (hash key, shard stored in) of deliveries the current map did not predict.
        self._evidence: list[tuple[int, str]] = []
        #: User records received so far (each record's seq is the count at its put).
        self._seq = 0
        # partition key -> (UTF-8 bytes, hash key, key-table entry, predicted shard or
        # None). The shard is the current map's: installing a map empties the cache.
        self._key_cache: dict[str, tuple[bytes, int, bytes, Shard | None]] = {}
        self._key_cache_since = 0  # _seq when the cache was last emptied
        self._key_cache_off_until = 0  # paused (keys hardly repeat) until this _seq

    @property
    def shard_map(self) -> ShardMap | None:
        """The current shard map (``None`` before the first ListShards)."""
        return self._map

    def _key_entry(self, partition_key: str) -> tuple[bytes, int, bytes, Shard | None]:
        """A valid partition key's UTF-8 bytes, hash key, key-table entry (tag, length,
        bytes) and predicted shard; cached for the next records with that key."""
        pk_bytes = partition_key_bytes(partition_key)
        hash_key = _from_bytes(md5(pk_bytes).digest(), "big")
        i = bisect_right(self._starts, hash_key) - 1
        entry = (
            pk_bytes,
            hash_key,
            _KEY_HEADERS[len(pk_bytes)] + pk_bytes,
            self._shards[i] if i >= 0 and hash_key <= self._ends[i] else None,
        )
        if self._seq >= self._key_cache_off_until:
            if len(self._key_cache) >= KEY_CACHE_SIZE:
                self._key_cache_full()
            else:
                self._key_cache[partition_key] = entry
        return entry

    def _key_cache_full(self) -> None:
        """Empty the full key cache; pause it while keys hardly repeat.

        The cache filled after ``_seq - _key_cache_since`` records, KEY_CACHE_SIZE of
        them misses: under half of them hits means mostly distinct keys, where caching
        costs more than it saves, so it pauses for four times its size in records.
        """
        records = self._seq - self._key_cache_since
        self._key_cache.clear()
        if records < 2 * KEY_CACHE_SIZE:
            self._key_cache_off_until = self._key_cache_since = self._seq + 4 * KEY_CACHE_SIZE
        else:
            self._key_cache_since = self._seq

    def _refresh_changed(self) -> None:
        refresh = self._refresh
        self._fresh = (
            self._aggregation
            and self._map is not None
            and not refresh.wanted
            and not refresh.outstanding
        )

    def _invalidate_map(self) -> None:
        """The map is wrong somewhere: ask for a new one (at most once per interval)."""
        self._refresh.invalidate()
        self._refresh_changed()

    def _landed_elsewhere(self, krecord: KRecord, shard_id: str) -> None:
        """``krecord``, predicted for another shard, was stored in ``shard_id``: ask for
        a new map, unless the current one already puts it there (it was built for a
        map replaced since; its answer says nothing about the current one)."""
        entry = krecord.entry
        hash_key = hash_key_for(entry["PartitionKey"], entry.get("ExplicitHashKey"))
        if self._map is not None and self._map.shard_id_for(hash_key) == shard_id:
            return
        self._evidence.append((hash_key, shard_id))
        self._refresh.invalidate(evidence=True)
        self._refresh_changed()

    def _all_shards(self) -> list[Shard]:
        return [*self._shards, self._unrouted]

    def _route(self, record: UserRecord, now: float, hold: bool = True) -> None:
        """Add ``record`` to its shard's open aggregate, queue it plain, or (``hold``,
        during a refresh of the map) keep it for the new map."""
        shard_map = self._map
        if hold and not self._fresh and shard_map is not None and self._aggregation:
            self._held.append(record)
            if self._hold_started == _INF:
                self._hold_started = now
            arrival = record[ARRIVAL]
            # The last refresh failed and the next one has not started: the map is not
            # coming soon, so the usual buffered time only.
            wait = 0.0 if self._refresh_failed else self._hold_time
            deadline = max(self._hold_started + wait, arrival + self._mbt)
            if deadline > arrival + self._ttl:
                deadline = arrival + self._ttl
            if deadline < self._held_until:
                self._held_until = deadline
                self._queues.wake(deadline)
            return
        if shard_map is None:
            shard = self._unrouted
        else:
            i = shard_map.lookup(record[HASH])
            shard = self._shards[i] if i >= 0 else self._unrouted
        queues = self._queues
        if self._fresh and shard.limiter is not None:
            agg = shard.agg
            if agg is None:
                agg = shard.agg = OpenAggregate(self._agg_max_size, self._agg_max_count, record)
                deadline = record[ARRIVAL] + self._mbt
                shard.agg_deadline = deadline
                queues.wake(deadline)
            if agg.add_record(record):
                if record[ARRIVAL] + self._mbt < shard.agg_deadline:
                    # A re-routed older record: the aggregate is due sooner.
                    shard.agg_deadline = record[ARRIVAL] + self._mbt
                    queues.wake(shard.agg_deadline)
                return
            if agg.count:
                queues.seal(shard)
                agg = shard.agg = OpenAggregate(self._agg_max_size, self._agg_max_count, record)
                deadline = record[ARRIVAL] + self._mbt
                shard.agg_deadline = deadline
                if agg.add_record(record):
                    return
            # Too large to aggregate even alone: it goes plain.
            shard.agg = None
            shard.agg_deadline = _INF
        queues.enqueue(self._plain(record, shard))

    def _take_held(self) -> list[UserRecord]:
        """The records held for the next map (no longer held)."""
        held = self._held
        self._held = []
        self._held_until = _INF
        return held

    def _release_held(self, now: float, force: bool = False) -> None:
        """Queue the held records plain if their wait is over (or ``force``)."""
        if self._held and (force or now >= self._held_until):
            self._hold_started = _INF
            records = sorted(self._take_held(), key=lambda r: r[SEQ])
            for record in records:
                self._route(record, now, hold=False)
            self._queues.wake(now)
            self._flushed_again(records)

    def _route_again(self, records: list[UserRecord], now: float) -> None:
        """Route ``records`` again, in put() order, and collect at once."""
        records.sort(key=lambda r: r[SEQ])
        for record in records:
            self._route(record, now)
        if not self._held:
            self._hold_started = _INF  # nothing waits for a map any more
        if records or self._queues.queued_count:
            self._queues.wake(now)
        self._flushed_again(records)

    def _flushed_again(self, records: list[UserRecord]) -> None:
        """Records just routed again (in put() order) include some put before a flush:
        seal what they went into, so that they leave at the next collection."""
        if records and records[0][SEQ] <= self._flush_seq:
            for shard in self._shards:
                if shard.agg is not None and shard.agg.count:
                    self._queues.seal(shard)
            self._queues.force = True

    def _plain(self, record: UserRecord, shard: Shard) -> KRecord:
        return plain_krecord(record, shard, record[ARRIVAL] + self._mbt)

    def _rebuild(self, items: list[UserRecord], shard: Shard) -> KRecord:
        """A Kinesis record of ``items`` (a subset of one that fitted) for ``shard``."""
        return aggregated_krecord(items, shard, self._agg_max_size, self._agg_max_count, self._mbt)

    def _requeue_front(
        self, records: list[UserRecord], not_before: float, attempts: int, now: float
    ) -> None:
        """Re-route ``records`` (of a Kinesis record built for a map no longer trusted) as
        retries due at ``not_before``, ahead of their shards' newer records (what
        preserve_order needs): aggregated by the current map while it is fresh, plain
        otherwise. Without preserve_order, while a refresh is pending they wait for the
        new map with the records held for it."""
        records = sorted(records, key=lambda r: r[SEQ])
        if (
            not self._queues.preserve
            and self._aggregation
            and not self._fresh
            and self._map is not None
        ):
            for record in records:
                self._route(record, now)  # held for the new map
            return
        by_shard: dict[int, list[UserRecord]] = {}
        for record in records:
            i = self._map.lookup(record[HASH]) if self._map is not None else -1
            by_shard.setdefault(i, []).append(record)
        for i, group in by_shard.items():
            shard = self._shards[i] if i >= 0 else self._unrouted
            if self._fresh and shard.limiter is not None and len(group) > 1:
                krecords = aggregated_krecords(
                    group, shard, self._agg_max_size, self._agg_max_count, self._mbt
                )
            else:
                krecords = [self._plain(record, shard) for record in group]
            self._queues.retry_first(krecords, not_before, attempts)

    def _install(
        self, shards: Sequence[tuple[str, int, int]], now: float, drain_all: bool
    ) -> list[UserRecord]:
        """Make ``shards`` the map; return the records to route again: those of the
        shards that changed and of the unrouted one (of every shard when ``drain_all``)."""
        new_map = ShardMap(shards)
        old = {s.shard_id: s for s in self._shards}
        new_shards: list[Shard] = []
        for i, shard_id in enumerate(new_map.ids):
            hash_range = new_map.range_of(i)
            kept = old.pop(shard_id, None)
            if kept is not None and kept.hash_range == hash_range:
                new_shards.append(kept)
            else:
                limiter = kept.limiter if kept is not None else None
                new_shards.append(
                    Shard(shard_id, hash_range, limiter or ShardLimiter(self._rate_limit, now))
                )
                if kept is not None:
                    old[shard_id] = kept  # its contents must move
        moving: list[UserRecord] = self._take_held()
        for shard in [*old.values(), self._unrouted]:
            shard.stale = shard.shard_id is not None
            moving.extend(self._queues.drain(shard))
        if drain_all:
            for shard in new_shards:
                moving.extend(self._queues.drain(shard))
        changed = self._map is None or self._map.shards() != new_map.shards()
        # Deliveries the new map explains need no further refresh.
        evidence = self._evidence
        self._evidence = [(h, s) for h, s in evidence if new_map.shard_id_for(h) != s]
        explained = bool(evidence) and not self._evidence
        self._map = new_map
        self._shards = new_shards
        self._starts = [new_map.range_of(i)[0] for i in range(len(new_map))]
        self._ends = [new_map.range_of(i)[1] for i in range(len(new_map))]
        self._map_error = None
        self._refresh_failed = False
        self._refresh.installed(now, changed=changed, explained=explained)
        self._refresh_changed()
        return moving
