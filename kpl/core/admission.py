"""Whether a put is accepted: input validation and the buffer budget's unit.

Validation rules, checked in this order, each with its own error:

- data is bytes-like (``bytes``, ``bytearray``, ``memoryview``): else :class:`TypeError`;
- the partition key is a ``str`` of 1 to ``MAX_PARTITION_KEY_LENGTH`` characters: else
  :class:`~kpl.errors.InvalidPartitionKey`;
- an explicit hash key, when given, is a ``str``: else
  :class:`~kpl.protocol.hashing.ExplicitHashKeyError` (a ``ValueError``);
- the partition key has UTF-8 bytes (no lone surrogates): else ``InvalidPartitionKey``;
- an explicit hash key is a decimal in [0, 2**128 - 1]: else ``ExplicitHashKeyError``;
- data + partition key bytes are at most the stream's record size: else
  :class:`~kpl.errors.RecordTooLarge`.

:func:`validate` applies them all. ``ProducerCore.add`` inlines the same checks on its
fast path and raises through the same builders below, so both give the same messages.

The buffer budget charges each outstanding record its data, its key and
:data:`RECORD_OVERHEAD` bytes; ``ProducerCore.has_room`` is the one formula.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import add, itemgetter
from typing import Any, cast

from kpl.config import ProducerConfig
from kpl.errors import InvalidPartitionKey, RecordTooLarge
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
    "RECORD_OVERHEAD",
    "as_bytes",
    "bad_data",
    "bad_explicit_hash_key_type",
    "bad_partition_key",
    "limits_for_stream",
    "nbytes",
    "too_large",
    "validate",
    "validate_many",
]

#: Bytes charged against ``max_buffered_bytes`` for each outstanding record on top of
#: its data and partition key, so that the budget bounds memory rather than payload.
#: The worst case is a stalled endpoint (no shard map, so every record is its own plain
#: Kinesis record): its future, handle, bookkeeping, base64 entry and attempts then take
#: about 1.5 KB of RSS apiece. Measured with bench/producer_e2e.py's memory child (400k
#: records of 100 B): at 1,152 B the RSS growth rose 1.27 MiB per MiB of budget between
#: budgets of 16 and 64 MiB, i.e. about 1,490 B per record beyond its data and key.
RECORD_OVERHEAD = 1536


def nbytes(data: bytes | bytearray | memoryview) -> int:
    """Bytes in ``data`` (a memoryview of wider items has more bytes than items)."""
    return data.nbytes if isinstance(data, memoryview) else len(data)


def bad_data(data: object) -> TypeError:
    """The error for data that is not bytes-like."""
    return TypeError(f"data must be bytes, got {type(data).__name__}")


def as_bytes(data: object) -> bytes:
    """``data`` as ``bytes`` (a copy of a bytearray or memoryview), or TypeError."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise bad_data(data)


def bad_partition_key(partition_key: object) -> InvalidPartitionKey:
    """The error for a partition key that is not a str or has the wrong length."""
    if not isinstance(partition_key, str):
        return InvalidPartitionKey(
            f"partition key must be a str, got {type(partition_key).__name__}"
        )
    return InvalidPartitionKey(
        f"partition key must be 1-{MAX_PARTITION_KEY_LENGTH} characters, got {len(partition_key)}"
    )


def bad_explicit_hash_key_type(explicit_hash_key: object) -> ExplicitHashKeyError:
    """The error for an explicit hash key that is not a str."""
    return ExplicitHashKeyError(
        f"explicit hash key must be a decimal str, got {type(explicit_hash_key).__name__}"
    )


def too_large(size: int, limit: int) -> RecordTooLarge:
    """The error for a record of ``size`` bytes (data + partition key) over ``limit``."""
    return RecordTooLarge(
        f"record of {size} bytes (data + partition key) exceeds max_record_size of {limit}"
    )


def validate(
    data: object, partition_key: object, explicit_hash_key: object, max_record_size: int
) -> None:
    """Raise the error a put of these arguments gets, or return when it is acceptable."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise bad_data(data)
    if not isinstance(partition_key, str):
        raise bad_partition_key(partition_key)
    if not partition_key or len(partition_key) > MAX_PARTITION_KEY_LENGTH:
        raise bad_partition_key(partition_key)
    if explicit_hash_key is not None and not isinstance(explicit_hash_key, str):
        raise bad_explicit_hash_key_type(explicit_hash_key)
    pk_bytes = partition_key_bytes(partition_key)
    if explicit_hash_key is not None:
        parse_explicit_hash_key(explicit_hash_key)
    size = nbytes(data) + len(pk_bytes)
    if size > max_record_size:
        raise too_large(size, max_record_size)


def limits_for_stream(config: ProducerConfig, stream_max_record_size: int) -> tuple[int, int]:
    """(largest record, largest PutRecords request) for a stream whose records may
    reach ``stream_max_record_size`` bytes.

    Options left at their defaults follow the stream: its record size, and 10 MiB
    requests when records may exceed 1 MiB. Values set in the config are kept, but never
    above what the stream accepts (a 10 MiB request to a standard stream would be
    refused whole); a request always holds at least one record.
    """
    request = (
        PUT_RECORDS_MAX_BYTES_LARGE if stream_max_record_size > MIB else PUT_RECORDS_MAX_BYTES
    )
    record = (
        stream_max_record_size
        if config.max_record_size == DEFAULT_MAX_RECORD_SIZE
        else min(config.max_record_size, stream_max_record_size)
    )
    if config.collection_max_size != PUT_RECORDS_MAX_BYTES:
        request = min(config.collection_max_size, request)
    return record, max(request, record)


_SHAPES = frozenset((tuple, list))
_first = itemgetter(0)
_second = itemgetter(1)
_BYTES = {bytes}
_STR = {str}


def validate_many(
    records: Sequence[object], max_record_size: int
) -> tuple[list[Any], list[Any], list[Any] | None, int, list[int] | None]:
    """Check every record of a bulk put; return its columns and its budget size.

    Each record is ``(data, partition_key)`` or ``(data, partition_key,
    explicit_hash_key)``; the first bad one raises what :func:`validate` raises for it
    (a malformed entry raises ``TypeError``), so a refused call buffers nothing. Returns
    the data, the partition keys, the explicit hash keys (``None`` when no record has
    one), the sum of ``nbytes(data) + len(partition_key)`` (the size the buffer budget
    is asked about) and, when every record is plain bytes with an ASCII key, each
    record's data + key bytes (else ``None``).
    """
    if (
        records
        and _SHAPES.issuperset(map(type, records))
        and set(map(len, records)) == {2}  # type: ignore[arg-type]
    ):
        # The common case, each rule checked over the whole call by C-driven loops (an
        # ASCII key has UTF-8 bytes, as many as it has characters); when one fails, the
        # loop below finds the record and raises its error. The columns are taken by
        # itemgetter, not zip(*records), which makes an iterator per record: enough
        # short-lived objects for a young garbage collection on every call.
        shaped = cast(Sequence[Sequence[Any]], records)
        datas_ = list(map(_first, shaped))
        keys_ = list(map(_second, shaped))
        if (
            set(map(type, datas_)) == _BYTES
            and set(map(type, keys_)) == _STR
            and all(map(str.isascii, keys_))
        ):
            key_lengths = list(map(len, keys_))
            if min(key_lengths) > 0 and max(key_lengths) <= MAX_PARTITION_KEY_LENGTH:
                sizes = list(map(add, map(len, datas_), key_lengths))
                if max(sizes) <= max_record_size:
                    return datas_, keys_, None, sum(sizes), sizes
    datas: list[Any] = []
    keys: list[Any] = []
    hash_keys: list[Any] | None = None
    total = 0
    for index, record in enumerate(records):
        if type(record) is not tuple or len(record) != 2:
            if not isinstance(record, tuple | list) or len(record) not in (2, 3):
                raise TypeError(
                    f"record {index}: expected (data, partition_key[, explicit_hash_key]),"
                    f" got {type(record).__name__}"
                )
            if len(record) == 3 and record[2] is not None:
                if hash_keys is None:
                    hash_keys = [None] * index
                validate(record[0], record[1], record[2], max_record_size)
                datas.append(record[0])
                keys.append(record[1])
                hash_keys.append(record[2])
                total += nbytes(record[0]) + len(record[1])
                continue
            record = (record[0], record[1])
        data, key = record
        # The common case in a few C-level tests (an ASCII key has UTF-8 bytes, as many
        # as it has characters); anything else goes through the full rules.
        if (
            type(data) is bytes
            and type(key) is str
            and 0 < len(key) <= MAX_PARTITION_KEY_LENGTH
            and key.isascii()
        ):
            size = len(data) + len(key)
            if size > max_record_size:
                raise too_large(size, max_record_size)
        else:
            validate(data, key, None, max_record_size)
            size = nbytes(data) + len(key)
        total += size
        datas.append(data)
        keys.append(key)
        if hash_keys is not None:
            hash_keys.append(None)
    return datas, keys, hash_keys, total, None
