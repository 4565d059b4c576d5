"""The reading side: turn Kinesis records back into the user records that were put.

:func:`deaggregate` takes one Kinesis record's data and partition key and returns its user
records: the sub-records of a KPL aggregated record (magic, protobuf, valid MD5), or the
record itself when it is plain — including data that starts with the magic bytes but
fails the checksum, which is plain data by the format's rule.
:func:`deaggregate_records` does the same for the record dicts of a GetRecords answer
(boto3's, with ``Data`` as bytes, or raw JSON with ``Data`` as base64).
:class:`UserRecords` is the sequence a consumer's batch holds: the user records of one
GetRecords answer, each built when it is read.
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, overload

from kpl.protocol.aggregation import decode

__all__ = [
    "AggregateRun",
    "UserRecord",
    "UserRecords",
    "built_user_record",
    "deaggregate",
    "deaggregate_records",
]


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user record as put by a producer."""

    partition_key: str
    data: bytes
    #: The explicit hash key the producer gave, if any.
    explicit_hash_key: str | None = None
    #: The Kinesis record's sequence number (shared by all sub-records of an aggregate).
    sequence_number: str | None = None
    #: Index inside the aggregated record (0 for a plain record).
    sub_sequence_number: int = 0
    #: Whether the record came out of a KPL aggregated record.
    aggregated: bool = False
    #: The shard it was read from (set by the consumer; ``None`` from :func:`deaggregate`).
    shard_id: str | None = None
    #: When the service took the Kinesis record in (epoch seconds), when read from a shard.
    approximate_arrival_timestamp: float | None = None


# Building a UserRecord through its constructor costs a call of the dataclass's __init__,
# which (the class being frozen) writes each field with object.__setattr__: about five
# times the cost of plain slot writes, paid for every user record a consumer delivers.
# _Builder shares UserRecord's __slots__ (same names, same order, same base) and has no
# methods of its own; an instance is filled with ordinary slot writes, then gets
# UserRecord as its class. CPython allows that assignment only between classes whose
# instances have the same layout, and raises TypeError otherwise, so a mismatch cannot
# go unnoticed; the object is then a UserRecord in every respect (type, equality, hash,
# repr, immutability). The check below keeps the slots exactly the dataclass's fields;
# built_user_record and UserRecords.__iter__ write every one of them, which the tests
# check field by field against the constructor's records.
class _Builder:
    __slots__ = UserRecord.__slots__
    partition_key: str
    data: bytes
    explicit_hash_key: str | None
    sequence_number: str | None
    sub_sequence_number: int
    aggregated: bool
    shard_id: str | None
    approximate_arrival_timestamp: float | None


if set(_Builder.__slots__) != {f.name for f in fields(UserRecord)}:  # pragma: no cover
    raise AssertionError("UserRecord's fields and slots differ")
_new = object.__new__


def built_user_record(
    partition_key: str,
    data: bytes,
    explicit_hash_key: str | None,
    sequence_number: str | None,
    sub_sequence_number: int,
    aggregated: bool,
    shard_id: str | None,
    approximate_arrival_timestamp: float | None,
) -> UserRecord:
    """``UserRecord(...)`` with the same arguments, built as described above."""
    user = _new(_Builder)
    user.partition_key = partition_key
    user.data = data
    user.explicit_hash_key = explicit_hash_key
    user.sequence_number = sequence_number
    user.sub_sequence_number = sub_sequence_number
    user.aggregated = aggregated
    user.shard_id = shard_id
    user.approximate_arrival_timestamp = approximate_arrival_timestamp
    user.__class__ = UserRecord  # type: ignore[assignment]
    return user  # type: ignore[return-value]


class AggregateRun(NamedTuple):
    """The user records one KPL aggregated record contributes to a :class:`UserRecords`,
    as columns: record ``i`` is ``partition_keys[i]``, ``data[i]``, sub-sequence number
    ``sub_sequence_numbers[i]`` (``i`` when that is ``None``: none was left out) and
    explicit hash key ``explicit_hash_keys[i]`` (``None`` when that is ``None``)."""

    sequence_number: str
    approximate_arrival_timestamp: float | None
    partition_keys: list[str]
    data: list[bytes]
    sub_sequence_numbers: list[int] | None
    explicit_hash_keys: list[str | None] | None


class UserRecords(Sequence[UserRecord]):
    """The user records of one GetRecords answer, in order, each built when read.

    A read-only sequence: ``len``, indexing, slicing, iteration, ``==`` with a list.
    Items are :class:`UserRecord` objects made on access (equal each time, not the
    same object): the records of a 10 MB answer are not all held at once, so those an
    application reads and drops die young and never reach the garbage collector's old
    generation, whose full passes over a large heap would otherwise cost more than
    building them. ``list(records)`` keeps them all, like any list.
    """

    __slots__ = ("_length", "_runs", "_shard_id", "_starts")

    def __init__(self, shard_id: str | None, runs: list[UserRecord | AggregateRun]) -> None:
        self._shard_id = shard_id
        #: Plain records, and the runs of aggregated ones.
        self._runs = runs
        self._length = sum(1 if type(r) is UserRecord else len(r.data) for r in runs)
        self._starts: list[int] | None = None

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[UserRecord]:
        shard_id = self._shard_id
        new = _new
        for run in self._runs:
            if type(run) is UserRecord:
                yield run
                continue
            assert isinstance(run, AggregateRun)
            sequence_number, arrival, keys, datas, numbers, explicit = run
            if numbers is None and explicit is None:
                number = -1
                for key, data in zip(keys, datas):  # noqa: B905 (columns of one length)
                    number += 1
                    user = new(_Builder)
                    user.partition_key = key
                    user.data = data
                    user.explicit_hash_key = None
                    user.sequence_number = sequence_number
                    user.sub_sequence_number = number
                    user.aggregated = True
                    user.shard_id = shard_id
                    user.approximate_arrival_timestamp = arrival
                    user.__class__ = UserRecord  # type: ignore[assignment]
                    yield user  # type: ignore[misc]
            else:
                for i in range(len(datas)):
                    yield self._build(run, i)

    def _build(self, run: AggregateRun, i: int) -> UserRecord:
        numbers, explicit = run.sub_sequence_numbers, run.explicit_hash_keys
        return built_user_record(
            run.partition_keys[i],
            run.data[i],
            None if explicit is None else explicit[i],
            run.sequence_number,
            i if numbers is None else numbers[i],
            True,
            self._shard_id,
            run.approximate_arrival_timestamp,
        )

    @overload
    def __getitem__(self, index: int) -> UserRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[UserRecord]: ...

    def __getitem__(self, index: int | slice) -> UserRecord | list[UserRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("user record index out of range")
        if self._starts is None:
            starts, at = [], 0
            for run in self._runs:
                starts.append(at)
                at += 1 if type(run) is UserRecord else len(run.data)
            self._starts = starts
        position = bisect_right(self._starts, index) - 1
        run = self._runs[position]
        if type(run) is UserRecord:
            return run
        assert isinstance(run, AggregateRun)
        return self._build(run, index - self._starts[position])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserRecords | list | tuple):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))  # noqa: B905

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"UserRecords({list(self)!r})"


def deaggregate(
    data: bytes | Mapping[str, Any],
    partition_key: str | None = None,
    explicit_hash_key: str | None = None,
    sequence_number: str | None = None,
) -> list[UserRecord]:
    """The user records inside one Kinesis record (itself, when it is not aggregated).

    ``data`` is the record's data with its ``partition_key``, or a whole GetRecords record
    dict (``Data``, ``PartitionKey``, optional ``ExplicitHashKey``/``SequenceNumber``).
    """
    if isinstance(data, Mapping):
        return deaggregate_records([data])
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes or a record dict, got {type(data).__name__}")
    if not isinstance(partition_key, str):
        raise TypeError("partition_key is required with raw data")
    data = bytes(data)
    decoded = decode(data)
    if decoded is None:
        return [UserRecord(partition_key, data, explicit_hash_key, sequence_number, 0, False)]
    return [
        UserRecord(sub.partition_key, sub.data, sub.explicit_hash_key, sequence_number, i, True)
        for i, sub in enumerate(decoded)
    ]


def deaggregate_records(records: Iterable[Mapping[str, Any]]) -> list[UserRecord]:
    """The user records of GetRecords record dicts (``Data`` as bytes or base64 text)."""
    out: list[UserRecord] = []
    for record in records:
        try:
            raw = record["Data"]
            partition_key = record["PartitionKey"]
        except KeyError as missing:
            raise ValueError(
                f"a Kinesis record needs Data and PartitionKey, missing {missing}"
            ) from None
        if isinstance(raw, str):
            try:
                raw = base64.b64decode(raw, validate=True)
            except binascii.Error as error:
                raise ValueError(f"record Data is not valid base64: {error}") from None
        out.extend(
            deaggregate(
                raw, partition_key, record.get("ExplicitHashKey"), record.get("SequenceNumber")
            )
        )
    return out
