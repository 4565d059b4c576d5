"""ProducerCore: the producer's decisions, with no IO (driven by ``now``).

Theory of operation
-------------------
``add()`` validates a user record, hashes its partition key (or parses its explicit hash
key), predicts its shard with the shard map and appends it to that shard's open
:class:`~kpl.core.aggregator.Aggregator`. A full aggregator is *sealed* into a Kinesis
record (``_KRecord``: base64 data and partition key rendered once, reused by retries) and
queued on its shard. A Kinesis record of one user record is sent plain, never wrapped.
Aggregation happens only with a fresh shard map: before the first map and while a
refresh is pending, records are queued plain (the service then places each by its own
hash key, so no sub-record can land in a shard that does not own it). Before the FIRST
map, those plain records are also *held* (not sent) for up to :data:`FIRST_MAP_WAIT`
seconds from the first ListShards: when the map arrives they are aggregated like any
other record; only when that fetch fails or takes longer do they leave plain.

``poll(now)`` is the one place that sends:

1. sweep records past ``record_ttl`` (at most every ``_SWEEP_INTERVAL``);
2. seal aggregators older than ``record_max_buffered_time`` (and, when a request leaves
   anyway, those due within half of it: fewer, fuller requests);
3. *collect*: when something is due (a buffered-time deadline passed, a retry's backoff
   ended, ``flush()``), every sendable Kinesis record goes out; otherwise only full
   PutRecords requests (500 entries or ``collection_max_size``) leave. Shards are visited
   round-robin; each record takes tokens from its shard's :class:`ShardLimiter` first;
   at most ``max_connections`` requests are in flight. With ``preserve_order`` a shard
   contributes at most ONE Kinesis record per request and has at most one request in
   flight, and its retries stay ahead of its newer records: partial failures can then
   never reorder records of one partition key (all of a key's records in a request are
   in that one aggregated record, which succeeds or fails as a whole);
4. return the requests, the completions gathered since the last poll, the next
   deadline, and whether the shell should call ListShards.

``on_response()`` matches PutRecords entries to Kinesis records one by one. Failed
entries are classified by :mod:`kpl.core.retry` (one table): retried after a jittered
backoff (in place), retried after a shard-map refresh (re-routed), or failed. A success
on a shard other than the predicted one invalidates the map (one refresh, never a storm)
and its sub-records whose hash keys lie in the answering shard count as delivered; the
others are re-routed — or, when the answering shard is not in our map yet, held until
the refreshed map can tell. ``on_error()`` treats every entry of the request alike.

Every user record ends in exactly one completion: a ``(handle, RecordResult |
RecordFailed)`` pair, or — for the user records of a delivered Kinesis record on their
first try, the usual case — one bulk :class:`Delivered` (``iter_completions`` expands
both). Each failure is its own :class:`~kpl.errors.RecordFailed` carrying every attempt.

Memory per buffered record: a user record is encoded into its shard's aggregate as it
arrives and the core keeps only columns beside it (handle, arrival time, seq), no object
per record, so the garbage collector has nothing extra to track; the rare paths that need
whole records again (partial expiry, re-routing after a reshard, a misprediction) decode
them from the aggregate.
"""

from __future__ import annotations

import math
import random
from array import array
from base64 import b64decode, b64encode
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import md5
from typing import Any, Final

from kpl.config import ProducerConfig
from kpl.core.aggregator import Aggregator
from kpl.core.collector import Collector, put_records_body
from kpl.core.ratelimit import ShardLimiter
from kpl.core.results import Attempt, RecordResult
from kpl.core.retry import Action, Backoff, action_for_error, classify
from kpl.core.shard_map import RefreshPolicy, ShardMap
from kpl.errors import (
    InvalidPartitionKey,
    KinesisError,
    ProducerClosed,
    RecordExpired,
    RecordFailed,
    RecordTooLarge,
)
from kpl.protocol.aggregation import decode as decode_aggregated
from kpl.protocol.aggregation import encode_varint
from kpl.protocol.hashing import (
    ExplicitHashKeyError,
    parse_explicit_hash_key,
    partition_key_bytes,
)
from kpl.protocol.limits import (
    DEFAULT_MAX_RECORD_SIZE,
    MAX_PARTITION_KEY_LENGTH,
    MIB,
    PUT_RECORDS_MAX_BYTES,
    PUT_RECORDS_MAX_BYTES_LARGE,
)

__all__ = [
    "AGGREGATED_PARTITION_KEY",
    "FIRST_MAP_WAIT",
    "Attempt",
    "Completion",
    "Delivered",
    "Poll",
    "ProducerCore",
    "PutRecordsRequest",
    "RecordResult",
    "iter_completions",
]

#: The partition key of an aggregated Kinesis record; its ExplicitHashKey places it.
AGGREGATED_PARTITION_KEY = "a"
#: Longest that records put before the first shard map wait for it (seconds from the
#: first ListShards): then, or as soon as that call fails, they are sent unaggregated.
FIRST_MAP_WAIT = 1.0
#: Most partition keys whose bytes and hash key are remembered (the cache is emptied
#: when full: a workload of endless distinct keys pays one dict insert per record).
KEY_CACHE_SIZE = 16_384
#: How often buffered records are checked against ``record_ttl`` (at most).
_SWEEP_INTERVAL = 0.5
#: Error code for a PutRecords answer that does not match its request.
_MALFORMED = "MalformedResponse"

_INF = math.inf
# Pre-encoded field headers for the fast path of add() (every varint below 2**14):
# a sub-record's tag + length, its partition key index field, its data tag + length,
# and a partition key table entry's tag + length.
_RECORD_HEADERS: Final = [b"\x1a" + encode_varint(n) for n in range(0x4000)]
_INDEX_FIELDS: Final = [b"\x08" + encode_varint(n) for n in range(0x4000)]
_DATA_HEADERS: Final = _RECORD_HEADERS
_KEY_HEADERS: Final = [b"\x0a" + encode_varint(n) for n in range(MAX_PARTITION_KEY_LENGTH * 4 + 1)]
_from_bytes = int.from_bytes
_new_result = tuple.__new__

Completion = tuple[object, "RecordResult | RecordFailed"]


class Delivered:
    """The completion of every user record of one delivered Kinesis record, in bulk.

    The record at index ``i`` of ``handles`` succeeded as
    ``RecordResult(shard_id, sequence_number, i, attempts)``. One object per Kinesis
    record instead of one ``(handle, RecordResult)`` pair per user record: the shell
    builds each result as it resolves the future (see :func:`iter_completions`).
    """

    __slots__ = ("attempts", "handles", "sequence_number", "shard_id")

    def __init__(
        self,
        handles: Sequence[object],
        shard_id: str,
        sequence_number: str,
        attempts: tuple[Attempt, ...],
    ) -> None:
        self.handles = handles
        self.shard_id = shard_id
        self.sequence_number = sequence_number
        self.attempts = attempts

    def __repr__(self) -> str:
        return (
            f"Delivered({len(self.handles)} records, {self.shard_id}, {self.sequence_number})"
        )


#: What the core hands the shell: single completions and bulk deliveries, mixed.
Completions = list["Completion | Delivered"]


def iter_completions(
    completions: Iterable[Completion | Delivered],
) -> Iterator[Completion]:
    """Every ``(handle, outcome)`` pair of ``completions``, bulk deliveries expanded."""
    for item in completions:
        if type(item) is Delivered:
            shard_id, sequence, attempts = item.shard_id, item.sequence_number, item.attempts
            for sub, handle in enumerate(item.handles):
                yield handle, _new_result(RecordResult, (shard_id, sequence, sub, attempts))
        else:
            yield item  # type: ignore[misc]


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"data must be bytes, got {type(data).__name__}")


def _bad_partition_key(partition_key: object) -> InvalidPartitionKey:
    if not isinstance(partition_key, str):
        return InvalidPartitionKey(
            f"partition key must be a str, got {type(partition_key).__name__}"
        )
    return InvalidPartitionKey(
        f"partition key must be 1-{MAX_PARTITION_KEY_LENGTH} characters, got {len(partition_key)}"
    )


# A user record is a plain tuple: the cheapest object to make per record, and one the
# garbage collector stops tracking once its fields are atomic (a tuple subclass, such as
# a NamedTuple, stays tracked). Its failed attempts, rare, live in
# ``ProducerCore._attempts`` keyed by its seq.
_UserRecord = tuple[bytes, str, "str | None", int, object, float, int, int]
_DATA: Final = 0
_PK: Final = 1
_EHK: Final = 2
_HASH: Final = 3
_HANDLE: Final = 4
_ARRIVAL: Final = 5
_SEQ: Final = 6
_SIZE: Final = 7



class _Shard:
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
        self.agg: _OpenAggregate | None = None
        self.agg_deadline = _INF
        self.queue: deque[_KRecord] = deque()
        self.retries: deque[_KRecord] = deque()
        self.in_flight = 0
        self.stale = False


class _OpenAggregate(Aggregator):
    """An aggregator plus what the pipeline keeps per user record in it, as columns.

    ``items`` holds the handles. Arrival times and seqs are kept in parallel arrays so
    that a buffered user record costs no object of its own for the garbage collector to
    track and scan: its bytes live in the encoded aggregate.
    ``first`` is the first record in full (the aggregate's hash key, and what a
    one-record aggregate is sent as).
    """

    __slots__ = ("arrivals", "first", "seqs", "user_bytes")

    def __init__(self, max_size: int, max_count: int, first: _UserRecord) -> None:
        super().__init__(max_size, max_count)
        self.first = first
        # Raw machine numbers, not lists of objects: no float and int object per record
        # stays alive (they would spread the heap the garbage collector scans).
        self.arrivals = array("d")
        self.seqs = array("q")
        self.user_bytes = 0

    def add_record(self, record: _UserRecord) -> bool:
        """``try_add`` for a record tuple (the paths other than ``add``'s fast path)."""
        if not self.try_add(record[_PK], record[_EHK], record[_DATA], record[_HANDLE]):
            return False
        self.arrivals.append(record[_ARRIVAL])
        self.seqs.append(record[_SEQ])
        self.user_bytes += record[_SIZE]
        return True

    def records(self) -> list[_UserRecord]:
        """The user records in it, rebuilt from the encoded bytes and the columns."""
        return _records_of(self.serialize(), self.items, self.arrivals, self.seqs)


def _records_of(
    data: bytes, handles: Sequence[object], arrivals: Sequence[float], seqs: Sequence[int]
) -> list[_UserRecord]:
    decoded = decode_aggregated(data)
    assert decoded is not None, "our own aggregate decodes"
    assert len(decoded) == len(handles)
    out: list[_UserRecord] = []
    for sub, handle, arrival, seq in zip(decoded, handles, arrivals, seqs, strict=True):
        pk_bytes = sub.partition_key.encode()
        ehk = sub.explicit_hash_key
        hash_key = (
            _from_bytes(md5(pk_bytes).digest(), "big")
            if ehk is None
            else parse_explicit_hash_key(ehk)
        )
        out.append(
            (sub.data, sub.partition_key, ehk, hash_key, handle, arrival, seq,
             len(sub.data) + len(pk_bytes))
        )
    return out


class _KRecord:
    """One Kinesis record: a plain user record or an aggregated one.

    Per user record only columns are kept (handles, arrivals, seqs); the rare paths
    that need whole records (expiry of part of it, re-routing, a misprediction) get
    them from ``items``, decoded from the entry's data on first use.
    """

    __slots__ = (
        "_items",
        "aggregated",
        "arrivals",
        "attempts",
        "deadline",
        "entry",
        "handles",
        "last_delay",
        "not_before",
        "seqs",
        "shard",
        "size",
        "user_bytes",
    )

    def __init__(
        self,
        handles: Sequence[object],
        arrivals: Sequence[float],
        seqs: Sequence[int],
        user_bytes: int,
        entry: dict[str, str],
        size: int,
        shard: _Shard,
        deadline: float,
        aggregated: bool,
        items: list[_UserRecord] | None = None,
    ) -> None:
        self.handles = handles
        self.arrivals = arrivals
        self.seqs = seqs
        self.user_bytes = user_bytes
        self._items = items
        self.entry = entry
        self.size = size
        self.shard = shard
        self.deadline = deadline
        self.aggregated = aggregated
        self.attempts = 0
        self.not_before = 0.0
        self.last_delay = 0.0

    @classmethod
    def of(
        cls,
        items: list[_UserRecord],
        entry: dict[str, str],
        size: int,
        shard: _Shard,
        deadline: float,
        aggregated: bool,
    ) -> _KRecord:
        """A Kinesis record of known user records (plain ones, rebuilt ones)."""
        if len(items) == 1:
            # Plain records are many when aggregation is off: 1-tuples are the smallest.
            (record,) = items
            return cls(
                (record[_HANDLE],), (record[_ARRIVAL],), (record[_SEQ],), record[_SIZE],
                entry, size, shard, deadline, aggregated, items,
            )
        return cls(
            [r[_HANDLE] for r in items],
            [r[_ARRIVAL] for r in items],
            [r[_SEQ] for r in items],
            sum(r[_SIZE] for r in items),
            entry,
            size,
            shard,
            deadline,
            aggregated,
            items,
        )

    @property
    def items(self) -> list[_UserRecord]:
        """The user records, in sub-sequence order (decoded on first use)."""
        items = self._items
        if items is None:
            items = self._items = _records_of(
                b64decode(self.entry["Data"]), self.handles, self.arrivals, self.seqs
            )
        return items


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
    """What ``poll(now)`` asks of the shell."""

    #: Send these now (never more than the in-flight limit allows).
    requests: list[PutRecordsRequest]
    #: Resolve these futures (expired records, records settled by a new shard map).
    completions: Completions
    #: Call ``poll()`` again at this ``now`` at the latest (``None``: only when woken).
    deadline: float | None
    #: Call ListShards and then ``set_shard_map()`` (or ``on_shard_map_error()``).
    refresh_shard_map: bool


class ProducerCore:
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
        self._rng = rng
        self._backoff = Backoff(config.min_backoff, config.max_backoff, config.jitter, rng)
        self._mbt = config.record_max_buffered_time
        self._ttl = config.record_ttl
        self._preserve = config.preserve_order
        self._aggregation = config.aggregation_enabled

        self._map: ShardMap | None = None
        self._shards: list[_Shard] = []
        self._unrouted = _Shard(None, None, None)
        self._refresh = RefreshPolicy(config.shard_map_refresh_min_interval)
        # Aggregate only with a map we trust: set by _refresh_changed().
        self._fresh = False
        # partition key -> (UTF-8 bytes, hash key, key-table entry, predicted shard or
        # None). The shard is the current map's: set_shard_map() empties the cache.
        self._key_cache: dict[str, tuple[bytes, int, bytes, _Shard | None]] = {}
        self._key_cache_since = 0  # _seq when the cache was last emptied
        self._key_cache_off_until = 0  # paused (keys hardly repeat) until this _seq
        # Records without a map are held until this `now` (set by the first ListShards;
        # -inf once the first fetch failed or timed out: then they go plain).
        self._hold_until = _INF
        self._starts: list[int] = []
        self._ends: list[int] = []
        # The limits in force: the config's, until set_stream_limits() learns the stream's.
        self._max_record_size = config.max_record_size
        self._collection_max_size = config.collection_max_size
        self._agg_max_size = min(
            config.aggregation_max_size, config.max_record_size - len(AGGREGATED_PARTITION_KEY)
        )
        self._rr = 0  # round-robin start of collection

        self._seq = 0
        #: User records held by the core (buffered, queued or in flight): plain
        #: attributes rather than properties, since the shell reads them on every put.
        self.buffered_records = 0
        #: Data + partition key bytes of the user records held by the core.
        self.buffered_bytes = 0
        self._queued_count = 0
        self._queued_bytes = 0
        self._next_collect = _INF  # the earliest `now` at which collecting may send more
        self._queue_deadline = _INF  # <= the earliest deadline of a queued Kinesis record
        self._full_pending = False  # queued records may fill a request: collect at once
        self._blocked = False  # due records wait for an answer (a slot or their shard)
        self._force = False
        self._next_sweep = _INF
        self._in_flight: dict[int, PutRecordsRequest] = {}
        self._request_ids = 0
        self._pending: Completions = []
        # Delivered to a shard our map did not know: (record, shard, sequence, sub, attempt).
        self._unverified: list[tuple[_UserRecord, str, str, int, Attempt]] = []
        # preserve_order only: records of a mispredicted aggregate must be sent again, so
        # nothing is sent until a new map puts every held record back in put() order.
        self._reorder = False
        # The last ListShards failure, for the message of records that waited for a map.
        self._map_error: BaseException | None = None
        self._errors_by_code: dict[str, int] = {}
        # Failed attempts of records still held, by record seq (empty when all goes well).
        self._attempts: dict[int, tuple[Attempt, ...]] = {}
        self._m_put = 0
        self._m_data_put = 0
        self._m_krecords_put = 0
        self._m_kdata_put = 0
        self._m_requests = 0
        self._m_request_krecords = 0
        self._m_request_time = 0.0
        self._m_responses = 0
        self._m_buffering = 0.0
        self._m_buffered_n = 0
        self._m_retries = 0
        self._m_completed = 0
        self._m_failed = 0
        self._m_expired = 0
        self._m_errors = 0
        self._m_mispredicted = 0
        self._m_refreshes = 0

    # ------------------------------------------------------------------ properties

    @property
    def in_flight(self) -> int:
        """Requests handed out by ``poll()`` and not yet answered."""
        return len(self._in_flight)

    @property
    def shard_map(self) -> ShardMap | None:
        """The current shard map (``None`` before the first ListShards)."""
        return self._map

    @property
    def max_record_size(self) -> int:
        """The largest user record (data + partition key) accepted now."""
        return self._max_record_size

    def set_stream_limits(self, max_record_size: int) -> None:
        """Apply the stream's maximum record size (DescribeStreamSummary's
        ``MaxRecordSizeInKiB`` * 1024).

        ``max_record_size`` and ``collection_max_size`` left at their defaults follow the
        stream: its record size, and 10 MiB requests when records may exceed 1 MiB. Values
        set in the config are kept, but never above what the stream accepts (a 10 MiB
        request to a standard stream would be refused whole). Aggregated records stay
        below the record size with their one-byte partition key.
        """
        config = self.config
        request = PUT_RECORDS_MAX_BYTES_LARGE if max_record_size > MIB else PUT_RECORDS_MAX_BYTES
        record = (
            max_record_size
            if config.max_record_size == DEFAULT_MAX_RECORD_SIZE
            else min(config.max_record_size, max_record_size)
        )
        if config.collection_max_size != PUT_RECORDS_MAX_BYTES:
            request = min(config.collection_max_size, request)
        self._max_record_size = record
        self._collection_max_size = max(request, record)
        self._agg_max_size = min(
            config.aggregation_max_size, record - len(AGGREGATED_PARTITION_KEY)
        )

    # ------------------------------------------------------------------ add

    def add(
        self,
        data: bytes,
        partition_key: str,
        explicit_hash_key: str | None,
        handle: object,
        now: float,
    ) -> None:
        """Buffer one user record; raise at once on bad input (nothing is kept then)."""
        # The hot path: every line here runs once per record (bench/producer_core.py).
        if type(data) is not bytes:
            data = _as_bytes(data)
        if type(partition_key) is not str:
            raise _bad_partition_key(partition_key)
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
                pk_bytes = partition_key_bytes(partition_key)
                hash_key = _from_bytes(md5(pk_bytes).digest(), "big")
                # Also its entry in an aggregate's key table (tag, length, bytes).
                key_entry = _KEY_HEADERS[len(pk_bytes)] + pk_bytes
                i = bisect_right(self._starts, hash_key) - 1
                shard = self._shards[i] if i >= 0 and hash_key <= self._ends[i] else None
                if self._seq >= self._key_cache_off_until:
                    if len(self._key_cache) >= KEY_CACHE_SIZE:
                        self._key_cache_full()
                    else:
                        self._key_cache[partition_key] = (pk_bytes, hash_key, key_entry, shard)
            else:
                pk_bytes, hash_key, key_entry, shard = cached
        else:
            if not partition_key or len(partition_key) > MAX_PARTITION_KEY_LENGTH:
                raise _bad_partition_key(partition_key)
            if type(explicit_hash_key) is not str:
                raise ExplicitHashKeyError(
                    "explicit hash key must be a decimal str, got "
                    f"{type(explicit_hash_key).__name__}"
                )
            # (no fast path here: the key-table entry goes unused)
            pk_bytes = key_entry = partition_key_bytes(partition_key)
            hash_key = parse_explicit_hash_key(explicit_hash_key)
            shard = None
        size = len(data) + len(pk_bytes)
        if size > self._max_record_size:
            raise RecordTooLarge(
                f"record of {size} bytes (data + partition key) exceeds max_record_size "
                f"of {self._max_record_size}"
            )
        self._seq = seq = self._seq + 1
        self.buffered_records += 1
        self.buffered_bytes += size
        # Fast path: a fresh map, a predicted shard (never with an explicit hash key),
        # small varints, and an open aggregator with room. Aggregator.try_add's common
        # case inlined (its exact size arithmetic, the same bytes): no call, and no
        # object made per record but the sub-record's bytes.
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
                        return
        self._route((data, partition_key, explicit_hash_key, hash_key, handle, now, seq, size), now)

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

    def _route(self, record: _UserRecord, now: float) -> None:
        shard_map = self._map
        if shard_map is None:
            shard = self._unrouted
        else:
            i = shard_map.lookup(record[_HASH])
            shard = self._shards[i] if i >= 0 else self._unrouted
        if self._fresh and shard.limiter is not None:
            agg = shard.agg
            if agg is None:
                agg = shard.agg = _OpenAggregate(
                    self._agg_max_size, self.config.aggregation_max_count, record
                )
                deadline = record[_ARRIVAL] + self._mbt
                shard.agg_deadline = deadline
                if deadline < self._next_collect:
                    self._next_collect = deadline
            if agg.add_record(record):
                if record[_ARRIVAL] + self._mbt < shard.agg_deadline:
                    # A re-routed older record: the aggregate is due sooner.
                    shard.agg_deadline = record[_ARRIVAL] + self._mbt
                    self._next_collect = min(self._next_collect, shard.agg_deadline)
                return
            if agg.count:
                self._seal(shard)
                agg = shard.agg = _OpenAggregate(
                    self._agg_max_size, self.config.aggregation_max_count, record
                )
                deadline = record[_ARRIVAL] + self._mbt
                shard.agg_deadline = deadline
                if agg.add_record(record):
                    return
            # Too large to aggregate even alone: it goes plain.
            shard.agg = None
            shard.agg_deadline = _INF
        self._enqueue(self._plain(record, shard))

    def _plain(self, record: _UserRecord, shard: _Shard) -> _KRecord:
        entry = {"Data": b64encode(record[_DATA]).decode(), "PartitionKey": record[_PK]}
        if record[_EHK] is not None:
            entry["ExplicitHashKey"] = record[_EHK]
        return _KRecord.of(
            [record], entry, record[_SIZE], shard, record[_ARRIVAL] + self._mbt, False
        )

    def _seal(self, shard: _Shard) -> None:
        """Turn the shard's open aggregator into a queued Kinesis record."""
        agg = shard.agg
        assert agg is not None
        shard.agg = None
        deadline = shard.agg_deadline
        shard.agg_deadline = _INF
        if agg.count == 1:
            krecord = self._plain(agg.first, shard)
        else:
            data = agg.serialize()
            krecord = _KRecord(
                agg.items,
                agg.arrivals,
                agg.seqs,
                agg.user_bytes,
                {
                    "Data": b64encode(data).decode(),
                    "PartitionKey": AGGREGATED_PARTITION_KEY,
                    "ExplicitHashKey": str(agg.first[_HASH]),
                },
                len(data) + len(AGGREGATED_PARTITION_KEY),
                shard,
                deadline,
                True,
            )
        self._enqueue(krecord)

    def _enqueue(self, krecord: _KRecord) -> None:
        krecord.shard.queue.append(krecord)
        self._queued_count += 1
        self._queued_bytes += krecord.size
        deadline = krecord.deadline
        if deadline < self._queue_deadline:
            self._queue_deadline = deadline
            if deadline < self._next_collect:
                self._next_collect = deadline
        if (
            self._queued_count >= self.config.collection_max_count
            or self._queued_bytes >= self._collection_max_size
        ):
            self._full_pending = True

    def _rebuild(self, items: list[_UserRecord], shard: _Shard) -> _KRecord:
        """A Kinesis record of ``items`` (a subset of one that fitted) for ``shard``."""
        if len(items) == 1:
            return self._plain(items[0], shard)
        agg = Aggregator(self._agg_max_size, self.config.aggregation_max_count)
        for item in items:
            added = agg.try_add(item[_PK], item[_EHK], item[_DATA])
            assert added, "a subset of an aggregated record always fits"
        data = agg.serialize()
        return _KRecord.of(
            items,
            {
                "Data": b64encode(data).decode(),
                "PartitionKey": AGGREGATED_PARTITION_KEY,
                "ExplicitHashKey": str(items[0][_HASH]),
            },
            len(data) + 1,
            shard,
            min(i[_ARRIVAL] for i in items) + self._mbt,
            True,
        )

    # ------------------------------------------------------------------ flush / poll

    def flush(self, now: float) -> None:
        """Make everything buffered ready to send at the next ``poll()``."""
        for shard in self._all_shards():
            if shard.agg is not None and shard.agg.count:
                self._seal(shard)
        self._force = True
        self._next_collect = now

    def poll(self, now: float) -> Poll:
        """Requests to send now, completions to resolve, and when to call again."""
        # The shell may poll after every put: answer "nothing yet" cheaply.
        if (
            now < self._next_collect
            and now < self._next_sweep
            and not self._full_pending
            and not self._pending
            and not self._refresh.wanted
        ):
            deadline = min(self._next_collect, self._next_sweep)
            return Poll([], [], None if deadline == _INF else deadline, False)
        completions = self._pending
        self._pending = []
        if self._next_sweep == _INF and self.buffered_records:
            self._next_sweep = now + min(_SWEEP_INTERVAL, self._ttl)
        if now >= self._next_sweep:
            self._sweep(now, completions)
        refresh = False
        if self._refresh.due(now):
            if self._map is None and self._hold_until == _INF:
                self._hold_until = now + FIRST_MAP_WAIT
            self._refresh.start(now)
            self._refresh_changed()
            self._m_refreshes += 1
            refresh = True
        requests: list[PutRecordsRequest] = []
        if len(self._in_flight) < self.config.max_connections:
            if now >= self._next_collect or self._full_pending:
                requests = self._collect(now)
            deadline = self._next_collect
        else:
            # Nothing can leave before an answer frees a slot, and an answer wakes us.
            deadline = _INF
        if self.buffered_records and self._next_sweep < deadline:
            deadline = self._next_sweep
        refresh_at = self._refresh.wake_at()
        if refresh_at is not None and refresh_at < deadline:
            deadline = refresh_at
        return Poll(requests, completions, None if deadline == _INF else deadline, refresh)

    def _all_shards(self) -> list[_Shard]:
        return [*self._shards, self._unrouted]

    def _collect(self, now: float) -> list[PutRecordsRequest]:
        config = self.config
        shards = self._all_shards()
        due = self._force or now >= self._next_collect
        # Seal aggregators past their buffered-time deadline. When a request leaves anyway,
        # aggregators due within half the buffered time ride along: fewer, fuller requests.
        horizon = now + 0.5 * self._mbt if due else now
        for shard in shards:
            if shard.agg is not None and shard.agg_deadline <= horizon:
                self._seal(shard)
        self._force = False
        self._full_pending = False
        slots = config.max_connections - len(self._in_flight)
        collector = Collector(config.collection_max_count, self._collection_max_size)
        preserve = self._preserve
        batches: list[list[_KRecord]] = []
        batch: list[_KRecord] = []
        next_wake = _INF
        n = len(shards)
        start = self._rr % n
        self._rr += 1
        blocked = False
        # Before the first map (and within FIRST_MAP_WAIT), plain records wait for it.
        holding = (self._map is None and now < self._hold_until) or self._reorder
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
                    self._queued_count -= 1
                    self._queued_bytes -= size
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
            if due or collector.full():
                batches.append(batch)
            else:
                # Neither due nor full: put the records back and wait for more.
                for krecord in reversed(batch):
                    self._unsend(krecord)
        if due:
            # What is left is blocked (limits, slots, in flight): those wake us.
            self._queue_deadline = _INF
            self._blocked = blocked
        elif self._queue_deadline < next_wake:
            next_wake = self._queue_deadline
        for shard in shards:
            if shard.agg is not None and shard.agg_deadline < next_wake:
                next_wake = shard.agg_deadline
        if holding:
            # Only the map (which wakes the shell) or the end of the wait can help.
            next_wake = _INF if self._reorder else self._hold_until
        self._next_collect = next_wake
        if blocked and not due:
            self._full_pending = True
        return [self._request(b, now) for b in batches if b]

    def _next_sendable(
        self, shard: _Shard, now: float, preserve: bool
    ) -> tuple[_KRecord | None, bool]:
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

    def _unsend(self, krecord: _KRecord) -> None:
        shard = krecord.shard
        if shard.limiter is not None:
            shard.limiter.records.tokens += 1
            shard.limiter.bytes.tokens += krecord.size
        if self._preserve:
            shard.in_flight -= 1
        shard.queue.appendleft(krecord)
        self._queued_count += 1
        self._queued_bytes += krecord.size

    def _request(self, batch: list[_KRecord], now: float) -> PutRecordsRequest:
        self._request_ids += 1
        entries = [krecord.entry for krecord in batch]
        size = 0
        users = 0
        for krecord in batch:
            size += krecord.size
            count = len(krecord.handles)
            users += count
            if not krecord.attempts:
                # Each user record's own wait, from its put() to its first send.
                self._m_buffering += now * count - sum(krecord.arrivals)
                self._m_buffered_n += count
        request = PutRecordsRequest(
            id=self._request_ids,
            body=put_records_body(self.stream_name, self.stream_arn, entries),
            record_count=len(batch),
            byte_size=size,
            user_record_count=users,
            started=now,
            records=batch,
        )
        self._in_flight[request.id] = request
        self._m_requests += 1
        self._m_request_krecords += len(batch)
        return request

    # ------------------------------------------------------------------ answers

    def on_response(
        self, request: PutRecordsRequest, response: Mapping[str, Any], now: float
    ) -> Completions:
        """Match a 200 PutRecords answer entry by entry; return the settled records."""
        if self._in_flight.pop(request.id, None) is None:
            return []  # abandoned by fail_all()
        self._answered(request, now)
        completions: Completions = []
        entries = response.get("Records") if isinstance(response, Mapping) else None
        batch: list[_KRecord] = request.records
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
        if self._in_flight.pop(request.id, None) is None:
            return []
        self._answered(request, now)
        completions: Completions = []
        if isinstance(error, KinesisError):
            code, message, status = error.error_code, error.message, error.http_status
        else:
            code, message, status = type(error).__name__, str(error), 0
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

    def _answered(self, request: PutRecordsRequest, now: float) -> None:
        self._m_responses += 1
        self._m_request_time += now - request.started
        if self._preserve:
            for krecord in request.records:
                krecord.shard.in_flight -= 1
        if self._blocked:
            # Due records waited for a slot or for their shard's request: try again now.
            self._blocked = False
            self._next_collect = now
        elif self._queued_count:
            self._full_pending = True

    def _delivered(
        self,
        krecord: _KRecord,
        shard_id: str,
        sequence: str,
        ok: Attempt,
        now: float,
        completions: Completions,
    ) -> None:
        # The Kinesis record was stored, whichever shard it landed on.
        self._m_krecords_put += 1
        self._m_kdata_put += krecord.size
        predicted = krecord.shard.shard_id
        if predicted is not None and predicted != shard_id:
            self._m_mispredicted += 1
            self._refresh.invalidate()
            self._refresh_changed()
            if krecord.aggregated:
                self._split_mispredicted(krecord, shard_id, sequence, ok, now, completions)
                return
        handles = krecord.handles
        n = len(handles)
        failed = self._attempts
        retries = 0
        if not failed:
            # Everything on its first try (the usual case): one bulk completion.
            completions.append(Delivered(handles, shard_id, sequence, (ok,)))
        else:
            pop = failed.pop
            append = completions.append
            for sub, (handle, seq) in enumerate(zip(handles, krecord.seqs, strict=True)):
                attempts = pop(seq, ())
                retries += len(attempts)
                append(
                    (handle, _new_result(RecordResult, (shard_id, sequence, sub, (*attempts, ok))))
                )
        size = krecord.user_bytes
        self._m_put += n
        self._m_data_put += size
        self._m_retries += retries
        self._m_completed += n
        self.buffered_records -= n
        self.buffered_bytes -= size

    def _split_mispredicted(
        self,
        krecord: _KRecord,
        shard_id: str,
        sequence: str,
        ok: Attempt,
        now: float,
        completions: Completions,
    ) -> None:
        """An aggregated record landed on ``shard_id``: keep the sub-records it owns.

        The Kinesis record itself is already counted as put by ``_delivered``.
        """
        index = self._map.index_of(shard_id) if self._map is not None else -1
        if index < 0:
            for sub, record in enumerate(krecord.items):
                self._unverified.append((record, shard_id, sequence, sub, ok))
            self._reorder = self._preserve
            return
        start, end = self._map.range_of(index) if self._map is not None else (0, -1)
        again: list[_UserRecord] = []
        delivered: list[_UserRecord] = []
        for sub, record in enumerate(krecord.items):
            if start <= record[_HASH] <= end:
                completions.append(
                    (
                        record[_HANDLE],
                        RecordResult(shard_id, sequence, sub, (*self._attempts_of(record), ok)),
                    )
                )
                delivered.append(record)
            else:
                again.append(record)
        self._count_put(delivered)
        self._settle(delivered)
        if again and self._preserve:
            # Newer records of these keys wait behind them: hold everything until the
            # refreshed map, which routes every held record again in put() order.
            self._reorder = True
        for record in again:
            # Sent but not kept where a consumer would read it: count it as a failed try.
            self._add_attempt(
                record,
                Attempt(
                    ok.started,
                    now,
                    False,
                    "Mispredicted",
                    f"aggregated record landed on {shard_id}, outside this record's hash key",
                ),
            )
            self._route(record, now)

    def _count_put(self, records: Iterable[_UserRecord]) -> None:
        for record in records:
            self._m_put += 1
            self._m_data_put += record[_SIZE]

    def _attempts_of(self, record: _UserRecord) -> tuple[Attempt, ...]:
        return self._attempts.get(record[_SEQ], ())

    def _add_attempt(self, record: _UserRecord, attempt: Attempt) -> None:
        self._attempts[record[_SEQ]] = (*self._attempts.get(record[_SEQ], ()), attempt)

    def _settle(self, records: Iterable[_UserRecord], success: bool = True) -> None:
        """The records got their completion: release budget and attempts, count retries."""
        n = 0
        size = 0
        retries = 0
        pop = self._attempts.pop
        for record in records:
            n += 1
            size += record[_SIZE]
            retries += len(pop(record[_SEQ], ()))
        # A success's attempts hold only the failed tries; a failure's include the last one.
        self._m_retries += retries if success else max(0, retries - n)
        self._m_completed += n
        self.buffered_records -= n
        self.buffered_bytes -= size

    def _failed(
        self,
        krecord: _KRecord,
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
        self._m_errors += 1
        self._errors_by_code[code] = self._errors_by_code.get(code, 0) + 1
        attempt = Attempt(started, now, False, code, message)
        failed = self._attempts
        for seq in krecord.seqs:
            failed[seq] = (*failed.get(seq, ()), attempt)
        if action is None:
            action = classify(code, status=status, fail_if_throttled=self.config.fail_if_throttled)
        if action is Action.FAIL:
            self._fail_krecord(krecord, code, message, cause, completions)
            return
        if now - min(krecord.arrivals) < self._ttl:
            live = None  # all of them (no need to decode an aggregate)
        else:
            live = [r for r in krecord.items if now - r[_ARRIVAL] < self._ttl]
        if live is not None and len(live) < len(krecord.items):
            self._expire(
                [r for r in krecord.items if now - r[_ARRIVAL] >= self._ttl],
                now,
                completions,
                f"last error {code}: {message}",
            )
        if live is not None and not live:
            return
        if action is Action.RETRY_AFTER_REFRESH:
            self._refresh.invalidate()
            self._refresh_changed()
        krecord.attempts += 1
        delay = self._backoff.delay(krecord.attempts, krecord.last_delay)
        if action is Action.RETRY_AFTER_REFRESH or krecord.shard.stale:
            # Built for a map we no longer trust: route its users afresh, after the backoff.
            self._requeue_front(
                krecord.items if live is None else live, now + delay, krecord.attempts
            )
            return
        if live is not None and len(live) < len(krecord.items):
            attempts = krecord.attempts
            krecord = self._rebuild(live, krecord.shard)
            krecord.attempts = attempts
        krecord.last_delay = delay
        krecord.not_before = now + delay
        shard = krecord.shard
        if self._preserve:
            # It was the shard's oldest record in flight: ahead of everything newer.
            shard.retries.appendleft(krecord)
        else:
            shard.retries.append(krecord)
        if krecord.not_before < self._next_collect:
            self._next_collect = krecord.not_before

    def _requeue_front(
        self, records: list[_UserRecord], not_before: float, attempts: int = 1
    ) -> None:
        """Re-route ``records`` by the current map as plain retries due at ``not_before``,
        ahead of their shards' newer records (what preserve_order needs)."""
        by_shard: dict[int, list[_UserRecord]] = {}
        for record in sorted(records, key=lambda r: r[_SEQ]):
            i = self._map.lookup(record[_HASH]) if self._map is not None else -1
            by_shard.setdefault(i, []).append(record)
        for i, group in by_shard.items():
            shard = self._shards[i] if i >= 0 else self._unrouted
            krecords = [self._plain(record, shard) for record in group]
            for krecord in krecords:
                krecord.attempts = attempts
                krecord.not_before = not_before
            shard.retries.extendleft(reversed(krecords))
        if not_before < self._next_collect:
            self._next_collect = not_before

    def _fail_krecord(
        self,
        krecord: _KRecord,
        code: str,
        message: str,
        cause: BaseException | None,
        completions: list[Completion | Delivered],
    ) -> None:
        """Fail every user record of ``krecord`` (from its columns: nothing decoded)."""
        pop = self._attempts.pop
        retries = 0
        for handle, seq in zip(krecord.handles, krecord.seqs, strict=True):
            attempts = pop(seq, ())
            retries += len(attempts)
            completions.append((handle, RecordFailed(code, message, attempts, cause)))
        n = len(krecord.handles)
        self._m_failed += n
        # A failure's attempts include the last one, which is not a retry.
        self._m_retries += max(0, retries - n)
        self._m_completed += n
        self.buffered_records -= n
        self.buffered_bytes -= krecord.user_bytes

    def _fail(
        self,
        records: Iterable[_UserRecord],
        code: str,
        message: str,
        cause: BaseException | None,
        completions: Completions,
    ) -> None:
        settled = list(records)
        for record in settled:
            completions.append(
                (record[_HANDLE], RecordFailed(code, message, self._attempts_of(record), cause))
            )
        self._m_failed += len(settled)
        self._settle(settled, success=False)

    def _expire(
        self, records: list[_UserRecord], now: float, completions: Completions, detail: str
    ) -> None:
        message = f"not delivered within record_ttl of {self._ttl}s"
        if detail:
            message += f" ({detail})"
        self._m_expired += len(records)
        self._fail(records, RecordExpired.code, message, None, completions)

    # ------------------------------------------------------------------ TTL

    def _sweep(self, now: float, completions: Completions) -> None:
        """Fail records past ``record_ttl`` wherever they wait (not in flight)."""
        self._next_sweep = now + min(_SWEEP_INTERVAL, self._ttl) if self.buffered_records else _INF
        horizon = now - self._ttl
        for shard in self._all_shards():
            for name in ("queue", "retries"):
                queue: deque[_KRecord] = getattr(shard, name)
                # A Kinesis record's deadline is its oldest user record's + the buffered time.
                if not any(k.deadline - self._mbt <= horizon for k in queue):
                    continue
                kept: deque[_KRecord] = deque()
                for krecord in queue:
                    if min(krecord.arrivals) > horizon:
                        kept.append(krecord)
                        continue
                    old = [r for r in krecord.items if r[_ARRIVAL] <= horizon]
                    if not old:
                        kept.append(krecord)
                        continue
                    if name == "queue":
                        self._queued_count -= 1
                        self._queued_bytes -= krecord.size
                    detail = ""
                    if shard is self._unrouted and self._map_error is not None:
                        detail = f"no shard map: ListShards failed: {self._map_error}"
                    self._expire(old, now, completions, detail)
                    live = [r for r in krecord.items if r[_ARRIVAL] > horizon]
                    if live:
                        rebuilt = self._rebuild(live, shard)
                        rebuilt.attempts = krecord.attempts
                        rebuilt.not_before = krecord.not_before
                        rebuilt.last_delay = krecord.last_delay
                        kept.append(rebuilt)
                        if name == "queue":
                            self._queued_count += 1
                            self._queued_bytes += rebuilt.size
                queue.clear()
                queue.extend(kept)
        if self._unverified:
            old_unverified = [u for u in self._unverified if u[0][_ARRIVAL] <= horizon]
            if old_unverified:
                self._unverified = [u for u in self._unverified if u[0][_ARRIVAL] > horizon]
                self._expire(
                    [u[0] for u in old_unverified],
                    now,
                    completions,
                    "delivered to a shard the refreshed map never confirmed",
                )

    # ------------------------------------------------------------------ shard map

    def set_shard_map(self, shards: Sequence[tuple[str, int, int]], now: float) -> None:
        """Install the open shards from ListShards; re-route what the change affects."""
        new_map = ShardMap(shards)
        old = {s.shard_id: s for s in self._shards}
        new_shards: list[_Shard] = []
        for i, shard_id in enumerate(new_map.ids):
            hash_range = new_map.range_of(i)
            kept = old.pop(shard_id, None)
            if kept is not None and kept.hash_range == hash_range:
                new_shards.append(kept)
            else:
                limiter = kept.limiter if kept is not None else None
                new_shards.append(
                    _Shard(
                        shard_id, hash_range, limiter or ShardLimiter(self.config.rate_limit, now)
                    )
                )
                if kept is not None:
                    old[shard_id] = kept  # its contents must move
        # Everything waiting on a shard that changed (or on no shard) is routed again.
        moving: list[_UserRecord] = []
        for shard in [*old.values(), self._unrouted]:
            shard.stale = shard.shard_id is not None
            moving.extend(self._drain(shard))
        if self._reorder:
            # preserve_order after a misprediction: records of the unchanged shards go
            # back through routing too, so that the ones sent again take their place
            # among them by put() order (the seq sort below). With a consistent map the
            # shards that matter have changed and were drained above; this covers a map
            # that is not (ListShards pages straddling a reshard).
            for shard in new_shards:
                moving.extend(self._drain(shard))
            self._reorder = False
        self._map = new_map
        self._shards = new_shards
        self._key_cache.clear()  # its predicted shards are the old map's
        self._starts = [new_map.range_of(i)[0] for i in range(len(new_map))]
        self._ends = [new_map.range_of(i)[1] for i in range(len(new_map))]
        self._map_error = None
        self._refresh.installed(now)
        self._refresh_changed()
        if self._unverified:
            # Delivered to a shard the old map did not know: kept where the new map says
            # that shard owns their hash keys, sent again otherwise.
            unverified, self._unverified = self._unverified, []
            for item in unverified:
                record, shard_id, sequence, sub, ok = item
                index = new_map.index_of(shard_id)
                if index < 0:
                    # This map does not know the shard that answered us: it lags behind
                    # the service. Sending again would store a duplicate; ask again.
                    self._unverified.append(item)
                    continue
                start, end = new_map.range_of(index)
                if start <= record[_HASH] <= end:
                    self._pending.append(
                        (
                            record[_HANDLE],
                            RecordResult(shard_id, sequence, sub, (*self._attempts_of(record), ok)),
                        )
                    )
                    self._count_put([record])
                    self._settle([record])
                else:
                    self._add_attempt(
                        record,
                        Attempt(
                            ok.started,
                            now,
                            False,
                            "Mispredicted",
                            f"aggregated record landed on {shard_id}, outside this record's "
                            "hash key",
                        ),
                    )
                    moving.append(record)
            if self._unverified:
                self._refresh.invalidate()
                self._refresh_changed()
                self._reorder = self._preserve
        moving.sort(key=lambda r: r[_SEQ])
        for record in moving:
            self._route(record, now)
        if moving or self._queued_count:
            self._next_collect = min(self._next_collect, now)

    def _drain(self, shard: _Shard) -> list[_UserRecord]:
        records: list[_UserRecord] = []
        if shard.agg is not None:
            records.extend(shard.agg.records())
            shard.agg = None
            shard.agg_deadline = _INF
        for krecord in shard.queue:
            self._queued_count -= 1
            self._queued_bytes -= krecord.size
            records.extend(krecord.items)
        shard.queue.clear()
        for krecord in shard.retries:
            records.extend(krecord.items)
        shard.retries.clear()
        return records

    def on_shard_map_error(self, error: BaseException, now: float) -> None:
        """ListShards failed: keep the current map and ask again after the interval.

        Records held because their answering shard was unknown are sent again (a
        possible duplicate beats a possible loss).
        """
        self._refresh.failed()
        self._refresh_changed()
        self._map_error = error
        if (
            self._preserve
            and self._map is None
            and action_for_error(error) is Action.FAIL
            and (self._unrouted.queue or self._unrouted.retries)
        ):
            # preserve_order sends nothing without a map, and this refusal (access
            # denied, no such stream) will not pass by waiting: fail the waiting records
            # now with its reason rather than let them expire without one. Records put
            # later wait for the next ListShards, after the refresh interval.
            if isinstance(error, KinesisError):
                code, message = error.error_code, error.message
            else:
                code, message = type(error).__name__, str(error)
            self._fail(
                self._drain(self._unrouted),
                code,
                f"ListShards failed, and preserve_order needs the shard map: {message}",
                error,
                self._pending,
            )
            return
        if self._reorder:
            # preserve_order: records wait (held, or until record_ttl) for a map that can
            # put them back in order; sending them now could overtake older ones.
            return
        if self._map is None and self._hold_until != -_INF:
            # The first map is not coming soon: held records go out plain.
            self._hold_until = -_INF
            self._next_collect = min(self._next_collect, now)
        if self._unverified:
            unverified, self._unverified = self._unverified, []
            for record, shard_id, _sequence, _sub, ok in unverified:
                self._add_attempt(
                    record,
                    Attempt(
                        ok.started,
                        now,
                        False,
                        "Mispredicted",
                        f"landed on unknown shard {shard_id}; shard map refresh failed: {error}",
                    ),
                )
                self._route(record, now)
            self._next_collect = min(self._next_collect, now)

    # ------------------------------------------------------------------ shutdown

    def fail_all(self, error: BaseException, now: float) -> Completions:
        """Fail every record the core holds, in flight included (the shell is closing)."""
        if isinstance(error, KinesisError):
            code, message = error.error_code, error.message
        else:
            code, message = ProducerClosed.code, str(error) or type(error).__name__
        completions: Completions = self._pending
        self._pending = []
        records: list[_UserRecord] = []
        for shard in self._all_shards():
            records.extend(self._drain(shard))
        in_flight: list[_KRecord] = []
        for request in self._in_flight.values():
            for krecord in request.records:
                in_flight.append(krecord)
                krecord.shard.in_flight = 0
        self._in_flight.clear()
        records.extend(u[0] for u in self._unverified)
        self._unverified = []
        self._fail(records, code, message, error, completions)
        for krecord in in_flight:
            self._fail_krecord(krecord, code, message, error, completions)
        self._next_collect = _INF
        return completions

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, float]:
        """Counters and averages under the KPL's metric names (times in milliseconds)."""
        completed = self._m_completed
        metrics: dict[str, float] = {
            "UserRecordsReceived": self._seq,
            "UserRecordsPending": self.buffered_records,
            "UserRecordsPut": self._m_put,
            "UserRecordsDataPut": self._m_data_put,
            "UserRecordsFailed": self._m_failed,
            "UserRecordExpired": self._m_expired,
            "KinesisRecordsPut": self._m_krecords_put,
            "KinesisRecordsDataPut": self._m_kdata_put,
            "PutRecordsRequests": self._m_requests,
            "AllErrors": self._m_errors,
            "RetriesPerRecord": self._m_retries / completed if completed else 0.0,
            "BufferingTime": 1000.0 * self._m_buffering / self._m_buffered_n
            if self._m_buffered_n
            else 0.0,
            "RequestTime": 1000.0 * self._m_request_time / self._m_responses
            if self._m_responses
            else 0.0,
            "UserRecordsPerKinesisRecord": self._m_put / self._m_krecords_put
            if self._m_krecords_put
            else 0.0,
            "KinesisRecordsPerPutRecordsRequest": self._m_request_krecords / self._m_requests
            if self._m_requests
            else 0.0,
            "ShardMapMispredictions": self._m_mispredicted,
            "ShardMapRefreshes": self._m_refreshes,
            "InFlightRequests": len(self._in_flight),
            "BufferedBytes": self.buffered_bytes,
        }
        for code, count in sorted(self._errors_by_code.items()):
            metrics[f"ErrorsByCode.{code}"] = count
        return metrics
