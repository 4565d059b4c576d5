"""The KPL aggregated-record format: encode and decode.

An aggregated Kinesis record's data is ``MAGIC`` (F3 89 9A C2) + a protobuf
``AggregatedRecord`` + the 16-byte MD5 of the protobuf bytes. Schema (proto2)::

    AggregatedRecord { repeated string partition_key_table = 1;
                       repeated string explicit_hash_key_table = 2;
                       repeated Record records = 3; }
    Record { required uint64 partition_key_index = 1;
             optional uint64 explicit_hash_key_index = 2;
             required bytes data = 3; repeated Tag tags = 4; }
    Tag { required string key = 1; optional string value = 2; }

The message classes are built at import time from a ``FileDescriptorProto`` (no protoc,
no generated module to keep in sync). Decoding always goes through them.

Encoding is written by hand from pre-encoded pieces, with the same bytes as protobuf's
serialisation (tests assert it): filling the protobuf message would copy every key and
payload into it before serialising them again, which ``bench/producer_core.py`` measures
as the slower route. An encoder joins, in field order, the partition key table entries
(:func:`partition_key_entry`), the explicit hash key table entries
(:func:`explicit_hash_key_entry`) and the sub-records (:func:`encode_sub_record`), and
:func:`frame` adds the magic and the digest. For the common sub-record, whose varints are
all below ``SMALL_VARINT_LIMIT``, the pieces are precomputed: ``RECORD_HEADERS[body_len]
+ PARTITION_KEY_INDEX_FIELDS[index] + DATA_HEADERS[len(data)] + data`` is the whole
field, and ``PARTITION_KEY_ENTRY_HEADERS[len(key)] + key`` a whole key table entry.

Sizes: every length-delimited field costs ``1 (tag) + varint_size(len) + len``; an
encoder uses :func:`varint_size` to keep its size exact without serialising.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import md5
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from kpl.protocol.limits import MAX_PARTITION_KEY_LENGTH

__all__ = [
    "DATA_HEADERS",
    "DIGEST_SIZE",
    "EMPTY_SIZE",
    "MAGIC",
    "PARTITION_KEY_ENTRY_HEADERS",
    "PARTITION_KEY_INDEX_FIELDS",
    "RECORD_HEADERS",
    "SMALL_VARINT_LIMIT",
    "AggregatedRecordMessage",
    "DecodedRecord",
    "SubRecord",
    "decode",
    "encode",
    "encode_sub_record",
    "encode_varint",
    "explicit_hash_key_entry",
    "frame",
    "partition_key_entry",
    "varint_size",
]

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
#: Size of an aggregated record with no user records: magic + MD5.
EMPTY_SIZE = len(MAGIC) + DIGEST_SIZE

# Field tags (field_number << 3 | wire_type) as single bytes: all numbers are < 16.
TAG_PARTITION_KEY_TABLE = b"\x0a"  # 1, length-delimited
TAG_EXPLICIT_HASH_KEY_TABLE = b"\x12"  # 2, length-delimited
TAG_RECORD = b"\x1a"  # 3, length-delimited
TAG_PARTITION_KEY_INDEX = b"\x08"  # Record.1, varint
TAG_EXPLICIT_HASH_KEY_INDEX = b"\x10"  # Record.2, varint
TAG_DATA = b"\x1a"  # Record.3, length-delimited


def _build_messages() -> tuple[Any, Any, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="kpl_aggregation.proto", package="kpl.aggregation", syntax="proto2"
    )
    label = descriptor_pb2.FieldDescriptorProto
    tag = proto.message_type.add(name="Tag")
    tag.field.add(name="key", number=1, type=label.TYPE_STRING, label=label.LABEL_REQUIRED)
    tag.field.add(name="value", number=2, type=label.TYPE_STRING, label=label.LABEL_OPTIONAL)
    record = proto.message_type.add(name="Record")
    record.field.add(
        name="partition_key_index", number=1, type=label.TYPE_UINT64, label=label.LABEL_REQUIRED
    )
    record.field.add(
        name="explicit_hash_key_index", number=2, type=label.TYPE_UINT64, label=label.LABEL_OPTIONAL
    )
    record.field.add(name="data", number=3, type=label.TYPE_BYTES, label=label.LABEL_REQUIRED)
    record.field.add(
        name="tags",
        number=4,
        type=label.TYPE_MESSAGE,
        type_name=".kpl.aggregation.Tag",
        label=label.LABEL_REPEATED,
    )
    aggregated = proto.message_type.add(name="AggregatedRecord")
    aggregated.field.add(
        name="partition_key_table", number=1, type=label.TYPE_STRING, label=label.LABEL_REPEATED
    )
    aggregated.field.add(
        name="explicit_hash_key_table", number=2, type=label.TYPE_STRING, label=label.LABEL_REPEATED
    )
    aggregated.field.add(
        name="records",
        number=3,
        type=label.TYPE_MESSAGE,
        type_name=".kpl.aggregation.Record",
        label=label.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"kpl.aggregation.{name}"))
        for name in ("AggregatedRecord", "Record", "Tag")
    )


#: The protobuf message classes (typed ``Any``: they are built at runtime).
AggregatedRecordMessage, RecordMessage, TagMessage = _build_messages()


def varint_size(value: int) -> int:
    """Bytes of the base-128 varint encoding of a non-negative ``value``."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


#: Varints below this (two bytes at most) are precomputed: every index, and the lengths
#: of small records and of every partition key.
SMALL_VARINT_LIMIT: Final = 1 << 14

_SMALL_VARINTS: list[bytes] = [
    bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])
    for n in range(SMALL_VARINT_LIMIT)
]


def encode_varint(value: int) -> bytes:
    """The base-128 varint encoding of a non-negative ``value``."""
    if value < SMALL_VARINT_LIMIT:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: ``RECORD_HEADERS[n]``: the ``records`` tag and a sub-record body length ``n``.
RECORD_HEADERS: Final[list[bytes]] = [TAG_RECORD + v for v in _SMALL_VARINTS]
#: ``DATA_HEADERS[n]``: a sub-record's ``data`` tag and data length ``n`` (the same bytes
#: as :data:`RECORD_HEADERS`: both fields are number 3, length-delimited).
DATA_HEADERS: Final[list[bytes]] = RECORD_HEADERS
#: ``PARTITION_KEY_INDEX_FIELDS[i]``: a sub-record's whole ``partition_key_index`` field.
PARTITION_KEY_INDEX_FIELDS: Final[list[bytes]] = [
    TAG_PARTITION_KEY_INDEX + v for v in _SMALL_VARINTS
]
#: ``PARTITION_KEY_ENTRY_HEADERS[n]``: a partition key table entry's tag and key length
#: ``n``, for every length a valid key's UTF-8 bytes can have (up to 4 per character).
PARTITION_KEY_ENTRY_HEADERS: Final[list[bytes]] = [
    TAG_PARTITION_KEY_TABLE + _SMALL_VARINTS[n] for n in range(MAX_PARTITION_KEY_LENGTH * 4 + 1)
]


def partition_key_entry(key: bytes) -> bytes:
    """The complete ``partition_key_table`` entry of a key's UTF-8 bytes."""
    return TAG_PARTITION_KEY_TABLE + encode_varint(len(key)) + key


def explicit_hash_key_entry(key: bytes) -> bytes:
    """The complete ``explicit_hash_key_table`` entry of a key's (ASCII) bytes."""
    return TAG_EXPLICIT_HASH_KEY_TABLE + encode_varint(len(key)) + key


def encode_sub_record(
    partition_key_index: int, explicit_hash_key_index: int | None, data: bytes
) -> bytes:
    """The complete ``records`` field (tag, length, body) of one sub-record."""
    n = len(data)
    if explicit_hash_key_index is None:
        body_len = 2 + varint_size(partition_key_index) + varint_size(n) + n
        return b"".join(
            (
                TAG_RECORD,
                encode_varint(body_len),
                TAG_PARTITION_KEY_INDEX,
                encode_varint(partition_key_index),
                TAG_DATA,
                encode_varint(n),
                data,
            )
        )
    body_len = (
        3
        + varint_size(partition_key_index)
        + varint_size(explicit_hash_key_index)
        + varint_size(n)
        + n
    )
    return b"".join(
        (
            TAG_RECORD,
            encode_varint(body_len),
            TAG_PARTITION_KEY_INDEX,
            encode_varint(partition_key_index),
            TAG_EXPLICIT_HASH_KEY_INDEX,
            encode_varint(explicit_hash_key_index),
            TAG_DATA,
            encode_varint(n),
            data,
        )
    )


def frame(body: bytes) -> bytes:
    """An aggregated record's complete data from its protobuf body: magic + body + MD5."""
    return b"".join((MAGIC, body, md5(body).digest()))


@dataclass(frozen=True, slots=True)
class SubRecord:
    """One user record to aggregate, as indexes into the key tables."""

    partition_key_index: int
    explicit_hash_key_index: int | None
    data: bytes


def encode(
    partition_keys: Sequence[str], explicit_hash_keys: Sequence[str], records: Sequence[SubRecord]
) -> bytes:
    """A whole aggregated record from its key tables and sub-records, in one call.

    The producer builds aggregates incrementally from the same pieces; this is for
    callers that have every user record at hand (tools, tests of readers).
    """
    return frame(
        b"".join(
            (
                *(partition_key_entry(key.encode()) for key in partition_keys),
                *(explicit_hash_key_entry(key.encode()) for key in explicit_hash_keys),
                *(
                    encode_sub_record(r.partition_key_index, r.explicit_hash_key_index, r.data)
                    for r in records
                ),
            )
        )
    )


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """A user record taken out of an aggregated record."""

    partition_key: str
    explicit_hash_key: str | None
    data: bytes


class _NotAggregated(Exception):
    pass


def decode(data: bytes) -> list[DecodedRecord] | None:
    """The user records of an aggregated record, or ``None`` when ``data`` is not one.

    Data is aggregated only with the magic prefix, a valid MD5 and a protobuf body whose
    keys are UTF-8 and whose indexes point into its key tables; anything else is plain data
    (as the KCL and the reference deaggregator treat it).
    """
    if len(data) <= len(MAGIC) + DIGEST_SIZE or not data.startswith(MAGIC):
        return None
    body = data[len(MAGIC) : -DIGEST_SIZE]
    if md5(body).digest() != data[-DIGEST_SIZE:]:
        return None
    message = AggregatedRecordMessage()
    try:
        message.ParseFromString(body)
        return _records_of(message)
    except (_NotAggregated, DecodeError):
        # A body that does not parse (or indexes outside the tables) is not a KPL record.
        return None


def _records_of(message: Any) -> list[DecodedRecord]:
    partition_keys: list[str] = list(message.partition_key_table)
    explicit_hash_keys: list[str] = list(message.explicit_hash_key_table)
    # protobuf hands out a proto2 string that is not UTF-8 as bytes: not a KPL record.
    if any(type(key) is not str for key in (*partition_keys, *explicit_hash_keys)):
        raise _NotAggregated
    out: list[DecodedRecord] = []
    for record in message.records:
        pk_index = record.partition_key_index
        if pk_index >= len(partition_keys):
            raise _NotAggregated
        ehk: str | None = None
        if record.HasField("explicit_hash_key_index"):
            ehk_index = record.explicit_hash_key_index
            if ehk_index >= len(explicit_hash_keys):
                raise _NotAggregated
            ehk = explicit_hash_keys[ehk_index]
        out.append(DecodedRecord(partition_keys[pk_index], ehk, bytes(record.data)))
    return out
