"""ProducerCore: the producer's decisions, with no IO (driven by ``now``).

Theory of operation
-------------------
``ProducerCore`` coordinates objects that each own one part of the state:

- :mod:`kpl.core.routing` (its base class): the shard map, the shards, and which shard
  and which Kinesis record each user record goes into;
- :mod:`kpl.core.records`: user records, open aggregates and sealed Kinesis records;
- :mod:`kpl.core.collector`: the shards' queues, the requests in flight, and the
  collection of PutRecords requests;
- :mod:`kpl.core.mispredict`: records that landed on another shard than predicted;
- :mod:`kpl.core.ledger`: each held record's failed attempts, and its completion;
- :mod:`kpl.core.metrics`: the counters behind ``metrics()``;
- :mod:`kpl.core.admission`: input validation and the buffer budget's unit.

``add()`` validates a user record, hashes its partition key (or parses its explicit hash
key), predicts its shard and appends it to that shard's open aggregate; that common case
is inlined here (the producer's hot path), the rest goes through routing, which also
keeps records put before the first map, or during a refresh of the map, for that map
(bounded in time) so that they are aggregated too.

``poll(now)`` is the one place that sends:

1. sweep records past ``record_ttl`` (at most every ``_SWEEP_INTERVAL``);
2. collect the PutRecords requests that may leave now (:class:`~kpl.core.collector.Queues`:
   buffered-time deadlines, full requests, rate limits, ``max_connections``,
   ``preserve_order``);
3. return the requests, the completions gathered since the last poll, the next
   deadline, and whether the shell should call ListShards.

``on_response()`` matches PutRecords entries to Kinesis records one by one. Failed
entries are classified by :mod:`kpl.core.retry` (one table): retried after a jittered
backoff (in place), retried after a shard-map refresh (re-routed), or failed. A success
on a shard the map did not predict for it invalidates the map (one refresh, never a
storm); :mod:`kpl.core.mispredict` decides what its sub-records become. Throttles and
deliveries adapt the shard's rate (:mod:`kpl.core.ratelimit`). ``on_error()`` treats
every entry of the request alike.

Every user record ends in exactly one completion (:mod:`kpl.core.results`): a
``(handle, RecordResult | RecordFailed)`` pair, or, for the user records of a Kinesis
record delivered on their first try, one bulk :class:`Delivered`. Each failure is its
own :class:`~kpl.errors.RecordFailed` carrying every attempt.

``add(check_room=True)`` validates a put and checks the buffer budget in the same call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from kpl.config import ProducerConfig
from kpl.core.admission import RECORD_OVERHEAD, limits_for_stream, validate
from kpl.core.admission import as_bytes as _as_bytes
from kpl.core.admission import bad_explicit_hash_key_type as _bad_explicit_hash_key_type
from kpl.core.admission import bad_partition_key as _bad_partition_key
from kpl.core.admission import too_large as _too_large
from kpl.core.bulk import add_many
from kpl.core.collector import Poll, PutRecordsRequest, Queues
from kpl.core.ledger import Ledger
from kpl.core.metrics import ProducerMetrics
from kpl.core.mispredict import Mispredictions
from kpl.core.records import AGGREGATED_PARTITION_KEY, KRecord, UserRecord
from kpl.core.records import ARRIVAL as _ARRIVAL
from kpl.core.results import (
    Attempt,
    Completion,
    Completions,
    Delivered,
    RecordResult,
    iter_completions,
)
from kpl.core.retry import Action, Backoff, action_for_error, classify, error_parts
from kpl.core.routing import ShardRouting
from kpl.errors import KinesisError, ProducerClosed
from kpl.protocol.aggregation import DATA_HEADERS as _DATA_HEADERS
from kpl.protocol.aggregation import PARTITION_KEY_INDEX_FIELDS as _INDEX_FIELDS
from kpl.protocol.aggregation import RECORD_HEADERS as _RECORD_HEADERS
from kpl.protocol.hashing import parse_explicit_hash_key, partition_key_bytes
from kpl.protocol.limits import MAX_PARTITION_KEY_LENGTH

__all__ = [
    "AGGREGATED_PARTITION_KEY",
    "FIRST_MAP_WAIT",
    "RECORD_OVERHEAD",
    "Attempt",
    "Completion",
    "Delivered",
    "Poll",
    "ProducerCore",
    "PutRecordsRequest",
    "RecordResult",
    "iter_completions",
]

#: Longest that records put before the first shard map wait for it (seconds from the
#: first ListShards): then, or as soon as that call fails, they are sent unaggregated.
FIRST_MAP_WAIT = 1.0
#: How often buffered records are checked against ``record_ttl`` (at most).
_SWEEP_INTERVAL = 0.5
#: Error code for a PutRecords answer that does not match its request.
_MALFORMED = "MalformedResponse"
#: The shard's refusal for its rate: its limiter slows down.
_THROTTLED = "ProvisionedThroughputExceededException"

_INF = math.inf
_new_result = tuple.__new__


class ProducerCore(ShardRouting):
    """The sans-IO producer pipeline; see the module docstring for the rules."""

    def __init__(
        self,
        stream_name: str,
        config: ProducerConfig,
        *,
        rng: random.Random,
        stream_arn: str | None = None,
    ) -> None:
        if not stream_name and not stream_arn:
            raise ValueError("a stream name or ARN is required")
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.config = config
        self._backoff = Backoff(config.min_backoff, config.max_backoff, config.jitter, rng)
        self._preserve = config.preserve_order
        self._max_buffered_records = config.max_buffered_records
        self._max_buffered_bytes = config.max_buffered_bytes
        # The largest record accepted: the config's, until set_stream_limits().
        self._max_record_size = config.max_record_size
        # How many more records add(check_room=True) may take without checking the
        # budget: a lower bound on what fits, whatever their size (0: check).
        self._sure_room = 0
        #: User records held by the core (buffered, queued or in flight): plain
        #: attributes rather than properties, since the shell reads them on every put.
        self.buffered_records = 0
        #: Data + partition key bytes of the user records held by the core.
        self.buffered_bytes = 0
        self._metrics = ProducerMetrics()
        self._queues = queues = Queues(config, self._metrics, stream_name, stream_arn)
        ShardRouting.__init__(self, config, queues)
        self._next_sweep = _INF
        self._pending: Completions = []
        self._mispredictions = Mispredictions(config.preserve_order)
        self._ledger = Ledger(self._metrics, config.record_ttl)

    # ------------------------------------------------------------------ properties

    @property
    def in_flight(self) -> int:
        """Requests handed out by ``poll()`` and not yet answered."""
        return len(self._queues.in_flight)

    @property
    def max_record_size(self) -> int:
        """The largest user record (data + partition key) accepted now."""
        return self._max_record_size

    @property
    def collection_max_size(self) -> int:
        """The largest PutRecords request (data + partition keys) sent now."""
        return self._queues.max_size

    def set_stream_limits(self, max_record_size: int) -> None:
        """Apply the stream's maximum record size (DescribeStreamSummary's
        ``MaxRecordSizeInKiB`` * 1024): see :func:`~kpl.core.admission.limits_for_stream`.
        Aggregated records stay below the record size with their one-byte partition key.
        """
        record, request = limits_for_stream(self.config, max_record_size)
        self._max_record_size = record
        self._sure_room = 0  # counted for the former largest record
        self._queues.max_size = request
        self._agg_max_size = min(
            self.config.aggregation_max_size, record - len(AGGREGATED_PARTITION_KEY)
        )

    # ------------------------------------------------------------------ admission

    def validate(self, data: object, partition_key: object, explicit_hash_key: object) -> None:
        """Raise the error ``add()`` would raise for this record, without adding it."""
        validate(data, partition_key, explicit_hash_key, self._max_record_size)

    def has_room(self, size: int, admitted: int = 0, admitted_bytes: int = 0) -> bool:
        """Whether the buffer budget takes one more user record of ``size`` bytes (data +
        partition key), beyond ``admitted`` records of ``admitted_bytes`` bytes let in
        and not added yet.

        Every record is charged its size plus :data:`RECORD_OVERHEAD` against
        ``max_buffered_bytes``, and counts against ``max_buffered_records``. A record
        always fits an empty buffer (the config keeps ``max_buffered_bytes`` at least
        ``max_record_size``).
        """
        records = self.buffered_records + admitted
        return not records or (
            records < self._max_buffered_records
            and self.buffered_bytes + admitted_bytes + (records + 1) * RECORD_OVERHEAD + size
            <= self._max_buffered_bytes
        )

    def room_wanted(self) -> None:
        """A put waits for room: the queued Kinesis records leave at the next ``poll()``
        instead of waiting for a full request the caller cannot fill until some complete.
        Open aggregates keep filling until their deadline: sealing them early would make
        more, smaller Kinesis records just when the shards' rates hold records back."""
        if self._queues.queued_count:
            self._queues.eager = True

    # ------------------------------------------------------------------ add

    def add(
        self,
        data: bytes,
        partition_key: str,
        explicit_hash_key: str | None,
        handle: object,
        now: float,
        check_room: bool = False,
    ) -> bool:
        """Buffer one user record; raise at once on bad input (nothing is kept then).

        The checks are :func:`kpl.core.admission.validate`'s, inlined: same order, same
        errors. With ``check_room``, a valid record that does not fit the buffer budget
        (:meth:`has_room`, charged its UTF-8 size) is not buffered and ``False`` is
        returned; otherwise it is buffered and the answer is ``True``.
        """
        # The hot path: every line here runs once per record (bench/producer_core.py).
        if type(data) is not bytes:
            data = _as_bytes(data)
        if type(partition_key) is not str:
            if not isinstance(partition_key, str):
                raise _bad_partition_key(partition_key)
            # A str subclass is a key; its plain value is what is hashed, cached and sent.
            partition_key = str.__str__(partition_key)
        if explicit_hash_key is None:
            # Partition keys repeat (users, devices, sessions): their UTF-8 bytes, MD5
            # hash key and predicted shard come from a bounded cache, a dict hit instead
            # of an MD5 and a binary search (the MD5 object alone costs more than the
            # rest of the aggregation of a record). Only valid keys are cached, so a hit
            # needs no length check either.
            cached = self._key_cache.get(partition_key)
            if cached is None:
                if not partition_key or len(partition_key) > MAX_PARTITION_KEY_LENGTH:
                    raise _bad_partition_key(partition_key)
                cached = self._key_entry(partition_key)
            pk_bytes, hash_key, key_entry, shard = cached
        else:
            if not partition_key or len(partition_key) > MAX_PARTITION_KEY_LENGTH:
                raise _bad_partition_key(partition_key)
            if type(explicit_hash_key) is not str:
                if not isinstance(explicit_hash_key, str):
                    raise _bad_explicit_hash_key_type(explicit_hash_key)
                explicit_hash_key = str.__str__(explicit_hash_key)
            # (no fast path here: the key-table entry goes unused)
            pk_bytes = key_entry = partition_key_bytes(partition_key)
            hash_key = parse_explicit_hash_key(explicit_hash_key)
            shard = None
        size = len(data) + len(pk_bytes)
        if size > self._max_record_size:
            raise _too_large(size, self._max_record_size)
        records = self.buffered_records
        if not check_room:
            self._sure_room = 0  # beyond has_room()'s count: recount at the next check
        elif self._sure_room:
            self._sure_room -= 1
        elif records:
            # has_room(size), with what is left once this record is in: the next
            # records that fit whatever their size pass without the arithmetic.
            left = (
                self._max_buffered_bytes - self.buffered_bytes
                - (records + 1) * RECORD_OVERHEAD - size
            )
            if records >= self._max_buffered_records or left < 0:
                return False
            self._sure_room = min(
                self._max_buffered_records - records - 1,
                left // (self._max_record_size + RECORD_OVERHEAD),
            )
        self._seq = seq = self._seq + 1
        self.buffered_records = records + 1
        self.buffered_bytes += size
        # Fast path: a fresh map, a predicted shard (never with an explicit hash key),
        # varints below SMALL_VARINT_LIMIT (2**14, the protocol's precomputed field
        # headers), and an open aggregate with room. Aggregator.try_add's common case
        # inlined (its exact size arithmetic, the same bytes): no call, and no object
        # made per record but the sub-record's bytes.
        if shard is not None and self._fresh:
            agg = shard.agg
            n = len(data)
            if agg is not None and agg.count < agg.max_count and n < 0x3F00:
                pk_table = agg._pk_index
                pk_index = pk_table.get(partition_key)
                if pk_index is None:
                    pk_index = len(pk_table)
                    grow = len(key_entry)
                else:
                    grow = 0
                if pk_index < 0x4000:
                    body = 4 + n + (n >= 0x80) + (pk_index >= 0x80)
                    new_size = agg.size + grow + 2 + body + (body >= 0x80)
                    if new_size <= agg.max_size:
                        if grow:
                            pk_table[partition_key] = pk_index
                            agg._pk_parts.append(key_entry)
                        # The pieces themselves, joined once by serialize(): no
                        # per-record bytes object and no copy of the data here.
                        agg._parts += (
                            _RECORD_HEADERS[body], _INDEX_FIELDS[pk_index],
                            _DATA_HEADERS[n], data,
                        )
                        agg.size = new_size
                        agg.count += 1
                        agg.items.append(handle)
                        agg.arrivals.append(now)
                        agg.seqs.append(seq)
                        agg.user_bytes += size
                        return True
        self._route((data, partition_key, explicit_hash_key, hash_key, handle, now, seq, size), now)
        return True

    def add_many(
        self,
        datas: Sequence[bytes],
        keys: Sequence[str],
        first_handle: int,
        now: float,
        sizes: list[int] | None = None,
    ) -> None:
        """Buffer records checked by :func:`~kpl.core.admission.validate_many`, without
        explicit hash keys: ``datas[i]`` with partition key ``keys[i]`` gets handle
        ``first_handle + i``. The outcome of ``add()`` for each in turn, with the
        per-record overhead paid per call (:mod:`kpl.core.bulk`). ``sizes``: each
        record's data + UTF-8 key bytes, when the caller knows them."""
        add_many(self, datas, keys, first_handle, now, sizes)

    # ------------------------------------------------------------------ flush / poll

    def flush(self, now: float) -> None:
        """Make everything buffered ready to send at the next ``poll()``."""
        queues = self._queues
        for shard in self._all_shards():
            if shard.agg is not None and shard.agg.count:
                queues.seal(shard)
        queues.force = True
        queues.next_collect = now
        self._flush_seq = self._seq

    def poll(self, now: float) -> Poll:
        """Requests to send now, completions to resolve, and when to call again."""
        queues = self._queues
        records = self.buffered_records
        if queues.queued_count and (
            2 * records > self._max_buffered_records
            or 2 * (self.buffered_bytes + records * RECORD_OVERHEAD) > self._max_buffered_bytes
        ):
            # The budget is over half used: what is queued leaves now, so that answers
            # free room before puts have to wait for it.
            queues.eager = True
        # The shell may poll after every put: answer "nothing yet" cheaply.
        if (
            now < queues.next_collect
            and now < self._next_sweep
            and now < self._held_until
            and not queues.full_pending
            and not queues.eager
            and not self._pending
            and not self._refresh.wanted
        ):
            deadline = min(queues.next_collect, self._next_sweep, self._held_until)
            return Poll([], [], None if deadline == _INF else deadline, False)
        completions = self._pending
        self._pending = []
        if self._next_sweep == _INF and self.buffered_records:
            self._next_sweep = now + min(_SWEEP_INTERVAL, self._ttl)
        if now >= self._next_sweep:
            self._sweep(now, completions)
        self._release_held(now)  # waited for a new map long enough: plain
        refresh = False
        if self._refresh.due(now):
            if self._map is None and self._hold_until == _INF:
                self._hold_until = now + FIRST_MAP_WAIT
            self._refresh.start(now)
            self._refresh_failed = False
            self._refresh_changed()
            self._metrics.refreshes += 1
            refresh = True
        requests: list[PutRecordsRequest] = []
        if len(queues.in_flight) < queues.max_connections:
            if now >= queues.next_collect or queues.full_pending or queues.eager:
                # Before the first map (and within FIRST_MAP_WAIT), plain records wait for
                # it; after a misprediction with preserve_order, everything waits for one.
                reorder = self._mispredictions.reorder
                holding = (self._map is None and now < self._hold_until) or reorder
                requests = queues.collect(
                    self._all_shards(), now, holding, _INF if reorder else self._hold_until
                )
            deadline = queues.next_collect
        else:
            # Nothing can leave before an answer frees a slot, and an answer wakes us.
            deadline = _INF
        if self.buffered_records and self._next_sweep < deadline:
            deadline = self._next_sweep
        deadline = min(deadline, self._held_until)  # records waiting for a new map
        refresh_at = self._refresh.wake_at()
        if refresh_at is not None and refresh_at < deadline:
            deadline = refresh_at
        return Poll(requests, completions, None if deadline == _INF else deadline, refresh)

    # ------------------------------------------------------------------ answers

    def on_response(
        self, request: PutRecordsRequest, response: Mapping[str, Any], now: float
    ) -> Completions:
        """Match a 200 PutRecords answer entry by entry; return the settled records."""
        if not self._queues.answered(request, now):
            return []  # abandoned by fail_all()
        completions: Completions = []
        entries = response.get("Records") if isinstance(response, Mapping) else None
        batch: list[KRecord] = request.records
        if not isinstance(entries, list) or len(entries) != len(batch):
            got = len(entries) if isinstance(entries, list) else "no"
            error = KinesisError.for_code(
                _MALFORMED,
                f"PutRecords answered {got} entries for {len(batch)} records",
                status=500,
            )
            for krecord in batch:
                self._failed(
                    krecord, error.error_code, error.message, 500, request.started, now, completions
                )
            return completions
        ok: Attempt | None = None
        for krecord, entry in zip(batch, entries, strict=True):
            code = entry.get("ErrorCode") if isinstance(entry, Mapping) else _MALFORMED
            if code is None:
                shard_id = entry.get("ShardId")
                sequence = entry.get("SequenceNumber")
                if not isinstance(shard_id, str) or not isinstance(sequence, str):
                    self._failed(
                        krecord,
                        _MALFORMED,
                        "entry without ShardId/SequenceNumber",
                        500,
                        request.started,
                        now,
                        completions,
                    )
                    continue
                if ok is None:
                    ok = Attempt(request.started, now, True, None, None)
                self._delivered(krecord, shard_id, sequence, ok, now, completions)
            else:
                message = entry.get("ErrorMessage") if isinstance(entry, Mapping) else None
                self._failed(
                    krecord, str(code), str(message or ""), 400, request.started, now, completions
                )
        return completions

    def on_error(
        self, request: PutRecordsRequest, error: BaseException, now: float
    ) -> Completions:
        """The whole request failed: classify the error and treat every entry alike."""
        if not self._queues.answered(request, now):
            return []
        completions: Completions = []
        code, message, status = error_parts(error)
        action = action_for_error(error, fail_if_throttled=self.config.fail_if_throttled)
        for krecord in request.records:
            self._failed(
                krecord,
                code,
                message,
                status,
                request.started,
                now,
                completions,
                action=action,
                cause=error,
            )
        return completions

    def _delivered(
        self,
        krecord: KRecord,
        shard_id: str,
        sequence: str,
        ok: Attempt,
        now: float,
        completions: Completions,
    ) -> None:
        # The Kinesis record was stored, whichever shard it landed on.
        metrics = self._metrics
        metrics.krecords_put += 1
        metrics.kdata_put += krecord.size
        predicted = krecord.shard.shard_id
        if predicted is not None and predicted != shard_id:
            metrics.mispredicted += 1
            self._landed_elsewhere(krecord, shard_id)
            if krecord.aggregated:
                delivered, again = self._mispredictions.landed(
                    krecord.items, shard_id, sequence, ok, now, self._map
                )
                self._release(self._ledger.confirmed(delivered, completions))
                for record, attempt in again:
                    self._ledger.add_attempt(record, attempt)
                    self._route(record, now)
                return
        limiter = krecord.shard.limiter
        if limiter is not None and limiter.scale < limiter.ceiling:
            limiter.delivered(now)
        n, size = self._ledger.delivered(krecord, shard_id, sequence, ok, completions)
        self.buffered_records -= n
        self.buffered_bytes -= size

    def _release(self, completed: tuple[int, int]) -> None:
        """Take completed records (count, data + key bytes) off the buffer budget."""
        n, size = completed
        self.buffered_records -= n
        self.buffered_bytes -= size

    def _failed(
        self,
        krecord: KRecord,
        code: str,
        message: str,
        status: int,
        started: float,
        now: float,
        completions: Completions,
        *,
        action: Action | None = None,
        cause: BaseException | None = None,
    ) -> None:
        self._metrics.error(code)
        if code == _THROTTLED and krecord.shard.limiter is not None:
            krecord.shard.limiter.throttled(started, now)
        self._ledger.add_attempts(krecord, Attempt(started, now, False, code, message))
        if action is None:
            action = classify(code, status=status, fail_if_throttled=self.config.fail_if_throttled)
        if action is Action.FAIL:
            self._release(self._ledger.failed_krecord(krecord, code, message, cause, completions))
            return
        if now - min(krecord.arrivals) < self._ttl:
            live = None  # all of them (no need to decode an aggregate)
        else:
            live = [r for r in krecord.items if now - r[_ARRIVAL] < self._ttl]
        if live is not None and len(live) < len(krecord.items):
            self._expire(
                [r for r in krecord.items if now - r[_ARRIVAL] >= self._ttl],
                completions,
                f"last error {code}: {message}",
            )
        if live is not None and not live:
            return
        if action is Action.RETRY_AFTER_REFRESH:
            self._invalidate_map()
        krecord.attempts += 1
        delay = self._backoff.delay(krecord.attempts, krecord.last_delay)
        if action is Action.RETRY_AFTER_REFRESH or krecord.shard.stale:
            # Built for a map we no longer trust: route its users afresh, after the backoff.
            self._requeue_front(
                krecord.items if live is None else live, now + delay, krecord.attempts, now
            )
            return
        if live is not None and len(live) < len(krecord.items):
            attempts = krecord.attempts
            krecord = self._rebuild(live, krecord.shard)
            krecord.attempts = attempts
        krecord.last_delay = delay
        self._queues.retry(krecord, now + delay)

    def _expire(self, records: list[UserRecord], completions: Completions, detail: str) -> None:
        self._release(self._ledger.expired(records, completions, detail))

    # ------------------------------------------------------------------ TTL

    def _sweep(self, now: float, completions: Completions) -> None:
        """Fail records past ``record_ttl`` wherever they wait (not in flight)."""
        self._next_sweep = now + min(_SWEEP_INTERVAL, self._ttl) if self.buffered_records else _INF
        horizon = now - self._ttl
        for shard, old in self._queues.sweep(self._all_shards(), horizon, self._rebuild):
            detail = ""
            if shard is self._unrouted and self._map_error is not None:
                detail = f"no shard map: ListShards failed: {self._map_error}"
            self._expire(old, completions, detail)
        old_unverified = self._mispredictions.expire(horizon)
        if old_unverified:
            self._expire(
                old_unverified,
                completions,
                "delivered to a shard the refreshed map never confirmed",
            )

    # ------------------------------------------------------------------ shard map

    def set_shard_map(self, shards: Sequence[tuple[str, int, int]], now: float) -> None:
        """Install the open shards from ListShards; re-route what the change affects."""
        mispredictions = self._mispredictions
        # Everything waiting on a shard that changed (or on no shard) is routed again.
        # preserve_order after a misprediction: records of the unchanged shards too, so
        # that the ones sent again take their place among them by put() order. With a
        # consistent map the shards that matter have changed anyway; this covers a map
        # that is not (ListShards pages straddling a reshard).
        moving = self._install(shards, now, drain_all=mispredictions.reorder)
        mispredictions.reorder = False
        self._key_cache.clear()  # its predicted shards are the old map's
        if mispredictions.unverified:
            # Delivered to a shard the old map did not know: kept where the new map says
            # that shard owns their hash keys, sent again otherwise.
            assert self._map is not None
            delivered, again = mispredictions.confirm(self._map, now)
            self._release(self._ledger.confirmed(delivered, self._pending))
            for record, attempt in again:
                self._ledger.add_attempt(record, attempt)
                moving.append(record)
            if mispredictions.unverified:
                self._invalidate_map()
        self._route_again(moving, now)

    def on_shard_map_error(self, error: BaseException, now: float) -> None:
        """ListShards failed: keep the current map and ask again after the interval.

        Records held because their answering shard was unknown are sent again (a
        possible duplicate beats a possible loss).
        """
        self._refresh.failed()
        self._refresh_changed()
        self._map_error = error
        self._refresh_failed = True
        unrouted = self._unrouted
        if (
            self._preserve
            and self._map is None
            and action_for_error(error) is Action.FAIL
            and (unrouted.queue or unrouted.retries)
        ):
            # preserve_order sends nothing without a map, and this refusal (access
            # denied, no such stream) will not pass by waiting: fail the waiting records
            # now with its reason rather than let them expire without one. Records put
            # later wait for the next ListShards, after the refresh interval.
            code, message, _ = error_parts(error)
            self._release(
                self._ledger.failed(
                    self._queues.drain(unrouted),
                    code,
                    f"ListShards failed, and preserve_order needs the shard map: {message}",
                    error,
                    self._pending,
                )
            )
            return
        if self._mispredictions.reorder:
            # preserve_order: records wait (held, or until record_ttl) for a map that can
            # put them back in order; sending them now could overtake older ones.
            return
        self._release_held(now, force=True)
        if self._map is None and self._hold_until != -_INF:
            # The first map is not coming soon: held records go out plain.
            self._hold_until = -_INF
            self._queues.wake(now)
        if self._mispredictions.unverified:
            for record, attempt in self._mispredictions.give_up(error, now):
                self._ledger.add_attempt(record, attempt)
                self._route(record, now, hold=False)
            self._queues.wake(now)

    # ------------------------------------------------------------------ shutdown

    def fail_all(self, error: BaseException, now: float) -> Completions:
        """Fail every record the core holds, in flight included (the shell is closing)."""
        code, message, _ = error_parts(error, ProducerClosed.code)
        completions: Completions = self._pending
        self._pending = []
        queues = self._queues
        records: list[UserRecord] = []
        for shard in self._all_shards():
            records.extend(queues.drain(shard))
        records.extend(self._take_held())
        in_flight = queues.abandon()
        records.extend(self._mispredictions.take_all())
        ledger = self._ledger
        self._release(ledger.failed(records, code, message, error, completions))
        for krecord in in_flight:
            self._release(ledger.failed_krecord(krecord, code, message, error, completions))
        queues.next_collect = _INF
        return completions

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, float]:
        """Counters and averages under the KPL's metric names (times in milliseconds)."""
        return self._metrics.as_dict(
            received=self._seq,
            pending=self.buffered_records,
            buffered_bytes=self.buffered_bytes,
            in_flight=len(self._queues.in_flight),
        )
