"""User records, open aggregates and Kinesis records: what the core holds per record.

Theory of operation
-------------------
A user record is a plain tuple (:data:`UserRecord`, fields at the indexes below): the
cheapest object to make per record, and one the garbage collector stops tracking once
its fields are atomic (a tuple subclass, such as a NamedTuple, stays tracked). Its failed
attempts, rare, live in the core keyed by its seq.

A user record is encoded into its shard's :class:`OpenAggregate` as it arrives; the
aggregate keeps only columns beside the encoded bytes (handles, arrival times, seqs), no
object per record, so the garbage collector has nothing extra to track. Sealed, it
becomes a :class:`KRecord` (one Kinesis record: base64 data and partition key rendered
once, reused by retries). A Kinesis record of one user record is sent plain, never
wrapped; an aggregated one carries :data:`AGGREGATED_PARTITION_KEY` and, as its explicit
hash key, its first user record's hash key (so it lands where that record belongs).

The rare paths that need whole records again (partial expiry, re-routing after a
reshard, a misprediction) decode them from the aggregate (:func:`records_of`).
"""

from __future__ import annotations

from array import array
from base64 import b64decode
from collections.abc import Sequence
from hashlib import md5
from typing import TYPE_CHECKING, Final

from pybase64 import b64encode_as_string

from kpl.core.aggregator import Aggregator
from kpl.protocol.aggregation import decode as decode_aggregated
from kpl.protocol.hashing import parse_explicit_hash_key

if TYPE_CHECKING:
    from kpl.core.collector import Shard

__all__ = [
    "AGGREGATED_PARTITION_KEY",
    "ARRIVAL",
    "DATA",
    "EHK",
    "HANDLE",
    "HASH",
    "PK",
    "SEQ",
    "SIZE",
    "KRecord",
    "OpenAggregate",
    "UserRecord",
    "aggregated_krecord",
    "aggregated_krecords",
    "plain_krecord",
    "records_of",
    "sealed_krecord",
]

#: The partition key of an aggregated Kinesis record; its ExplicitHashKey places it.
AGGREGATED_PARTITION_KEY = "a"

#: (data, partition key, explicit hash key, hash key, handle, arrival, seq, size), where
#: size is the data + partition key bytes (what the service and the budget count).
UserRecord = tuple[bytes, str, "str | None", int, object, float, int, int]
DATA: Final = 0
PK: Final = 1
EHK: Final = 2
HASH: Final = 3
HANDLE: Final = 4
ARRIVAL: Final = 5
SEQ: Final = 6
SIZE: Final = 7

_from_bytes = int.from_bytes


class OpenAggregate(Aggregator):
    """An aggregator plus what the pipeline keeps per user record in it, as columns.

    ``items`` holds the handles. Arrival times and seqs are kept in parallel arrays so
    that a buffered user record costs no object of its own for the garbage collector to
    track and scan: its bytes live in the encoded aggregate.
    ``first`` is the first record in full (the aggregate's hash key, and what a
    one-record aggregate is sent as).
    """

    __slots__ = ("arrivals", "first", "seqs", "user_bytes")

    def __init__(self, max_size: int, max_count: int, first: UserRecord) -> None:
        super().__init__(max_size, max_count)
        self.first = first
        # Raw machine numbers, not lists of objects: no float and int object per record
        # stays alive (they would spread the heap the garbage collector scans).
        self.arrivals = array("d")
        self.seqs = array("q")
        self.user_bytes = 0

    def add_record(self, record: UserRecord) -> bool:
        """``try_add`` for a record tuple (the paths other than ``add``'s fast path)."""
        if not self.try_add(record[PK], record[EHK], record[DATA], record[HANDLE]):
            return False
        self.arrivals.append(record[ARRIVAL])
        self.seqs.append(record[SEQ])
        self.user_bytes += record[SIZE]
        return True

    def records(self) -> list[UserRecord]:
        """The user records in it, rebuilt from the encoded bytes and the columns."""
        return records_of(self.serialize(), self.items, self.arrivals, self.seqs)


def records_of(
    data: bytes, handles: Sequence[object], arrivals: Sequence[float], seqs: Sequence[int]
) -> list[UserRecord]:
    """The user records of our own aggregated ``data``, with their columns beside them."""
    decoded = decode_aggregated(data)
    assert decoded is not None, "our own aggregate decodes"
    assert len(decoded) == len(handles)
    out: list[UserRecord] = []
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


class KRecord:
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
        shard: Shard,
        deadline: float,
        aggregated: bool,
        items: list[UserRecord] | None = None,
    ) -> None:
        self.handles = handles
        self.arrivals = arrivals
        self.seqs = seqs
        self.user_bytes = user_bytes
        self._items = items
        #: The PutRecords entry (Data in base64, PartitionKey, ExplicitHashKey).
        self.entry = entry
        #: Data + partition key bytes, as the service counts them.
        self.size = size
        self.shard = shard
        #: When it must be sent at the latest: its oldest user record's arrival plus the
        #: buffered time.
        self.deadline = deadline
        self.aggregated = aggregated
        #: Failed tries so far, the earliest ``now`` of the next one, the last backoff.
        self.attempts = 0
        self.not_before = 0.0
        self.last_delay = 0.0

    @classmethod
    def of(
        cls,
        items: list[UserRecord],
        entry: dict[str, str],
        size: int,
        shard: Shard,
        deadline: float,
        aggregated: bool,
    ) -> KRecord:
        """A Kinesis record of known user records (plain ones, rebuilt ones)."""
        if len(items) == 1:
            # Plain records are many when aggregation is off: 1-tuples are the smallest.
            (record,) = items
            return cls(
                (record[HANDLE],), (record[ARRIVAL],), (record[SEQ],), record[SIZE],
                entry, size, shard, deadline, aggregated, items,
            )
        return cls(
            [r[HANDLE] for r in items],
            [r[ARRIVAL] for r in items],
            [r[SEQ] for r in items],
            sum(r[SIZE] for r in items),
            entry,
            size,
            shard,
            deadline,
            aggregated,
            items,
        )

    @property
    def items(self) -> list[UserRecord]:
        """The user records, in sub-sequence order (decoded on first use)."""
        items = self._items
        if items is None:
            items = self._items = records_of(
                b64decode(self.entry["Data"]), self.handles, self.arrivals, self.seqs
            )
        return items


def _aggregated_entry(data: bytes, hash_key: int) -> dict[str, str]:
    return {
        "Data": b64encode_as_string(data),
        "PartitionKey": AGGREGATED_PARTITION_KEY,
        "ExplicitHashKey": str(hash_key),
    }


def plain_krecord(record: UserRecord, shard: Shard, deadline: float) -> KRecord:
    """``record`` alone, as its own Kinesis record (not wrapped)."""
    entry = {"Data": b64encode_as_string(record[DATA]), "PartitionKey": record[PK]}
    if record[EHK] is not None:
        entry["ExplicitHashKey"] = record[EHK]
    return KRecord.of([record], entry, record[SIZE], shard, deadline, False)


def sealed_krecord(agg: OpenAggregate, shard: Shard, deadline: float, mbt: float) -> KRecord:
    """The Kinesis record an open aggregate becomes (plain when it holds one record;
    ``mbt`` is the buffered time, which dates a plain record from its own arrival)."""
    if agg.count == 1:
        return plain_krecord(agg.first, shard, agg.first[ARRIVAL] + mbt)
    data = agg.serialize()
    return KRecord(
        agg.items,
        agg.arrivals,
        agg.seqs,
        agg.user_bytes,
        _aggregated_entry(data, agg.first[HASH]),
        len(data) + len(AGGREGATED_PARTITION_KEY),
        shard,
        deadline,
        True,
    )


def aggregated_krecord(
    items: list[UserRecord], shard: Shard, max_size: int, max_count: int, mbt: float
) -> KRecord:
    """A Kinesis record of ``items`` (a subset of one that fitted) for ``shard``."""
    if len(items) == 1:
        return plain_krecord(items[0], shard, items[0][ARRIVAL] + mbt)
    agg = Aggregator(max_size, max_count)
    for item in items:
        added = agg.try_add(item[PK], item[EHK], item[DATA])
        assert added, "a subset of an aggregated record always fits"
    return _packed(agg, items, shard, mbt)


def aggregated_krecords(
    items: list[UserRecord], shard: Shard, max_size: int, max_count: int, mbt: float
) -> list[KRecord]:
    """``items`` (in this order) packed into as few Kinesis records for ``shard`` as the
    limits allow; a record too large to share one goes alone, plain."""
    out: list[KRecord] = []
    agg = Aggregator(max_size, max_count)
    group: list[UserRecord] = []
    for item in items:
        if agg.try_add(item[PK], item[EHK], item[DATA]):
            group.append(item)
            continue
        if group:
            out.append(_packed(agg, group, shard, mbt))
        agg = Aggregator(max_size, max_count)
        if agg.try_add(item[PK], item[EHK], item[DATA]):
            group = [item]
        else:
            out.append(plain_krecord(item, shard, item[ARRIVAL] + mbt))
            agg = Aggregator(max_size, max_count)
            group = []
    if group:
        out.append(_packed(agg, group, shard, mbt))
    return out


def _packed(agg: Aggregator, group: list[UserRecord], shard: Shard, mbt: float) -> KRecord:
    """The Kinesis record of ``group``, already added to ``agg``."""
    if len(group) == 1:
        return plain_krecord(group[0], shard, group[0][ARRIVAL] + mbt)
    data = agg.serialize()
    return KRecord.of(
        group,
        _aggregated_entry(data, group[0][HASH]),
        len(data) + len(AGGREGATED_PARTITION_KEY),
        shard,
        min(i[ARRIVAL] for i in group) + mbt,
        True,
    )
