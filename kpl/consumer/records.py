"""The reading side: turn Kinesis records back into the user records that were put.

:func:`deaggregate` takes one Kinesis record's data and partition key and returns its user
records: the sub-records of a KPL aggregated record (magic, protobuf, valid MD5), or the
record itself when it is plain — including data that starts with the magic bytes but
fails the checksum, which is plain data by the format's rule.
:func:`deaggregate_records` does the same for the record dicts of a GetRecords answer
(boto3's, with ``Data`` as bytes, or raw JSON with ``Data`` as base64).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kpl.protocol.aggregation import decode

__all__ = ["UserRecord", "deaggregate", "deaggregate_records"]


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
