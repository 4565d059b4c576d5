"""One aggregated Kinesis record being filled for one predicted shard.

Theory of operation
-------------------
``try_add()`` computes what the record's serialised size would become, adds the user
record and returns True when that fits within ``max_size`` (magic and MD5 included) and
``max_count``, and returns False — changing nothing — otherwise. "Full" is a return value;
the caller seals this aggregator and starts a new one.

The size is kept exactly and incrementally: a new partition key (or explicit hash key)
adds its table entry ``1 + varint_size(len) + len``; every user record adds
``1 + varint_size(body) + body`` where the body is its index fields and its data field.
Key tables are deduplicated through a dict from key to index, as the KPL does. Tests
compare ``size`` with ``len(serialize())`` for many random cases.

The bytes are written as records arrive (into a ``bytearray`` for the ``records`` field,
into small lists for the tables), so ``serialize()`` is one join and one MD5.
"""

from __future__ import annotations

from hashlib import md5

from kpl.core.aggregation import DIGEST_SIZE, MAGIC, encode_varint, varint_size

__all__ = ["EMPTY_SIZE", "Aggregator"]

#: Size of an aggregated record with no user records: magic + MD5.
EMPTY_SIZE = len(MAGIC) + DIGEST_SIZE

_VARINT = encode_varint


def _vsize(n: int) -> int:
    return 1 if n < 0x80 else 2 if n < 0x4000 else 3 if n < 0x200000 else varint_size(n)


class Aggregator:
    """A KPL aggregated record under construction; ``try_add()`` returns False when full."""

    __slots__ = ("_ehk_index", "_ehk_parts", "_pk_index", "_pk_parts", "_records",
                 "count", "items", "max_count", "max_size", "size")

    def __init__(self, max_size: int, max_count: int) -> None:
        self.max_size = max_size
        self.max_count = max_count
        #: Exact size of ``serialize()``.
        self.size = EMPTY_SIZE
        self.count = 0
        #: The caller's objects, one per user record, in sub-sequence order.
        self.items: list[object] = []
        self._pk_index: dict[str, int] = {}
        self._ehk_index: dict[str, int] = {}
        self._pk_parts: list[bytes] = []
        self._ehk_parts: list[bytes] = []
        self._records = bytearray()

    def try_add(self, partition_key: str, explicit_hash_key: str | None, data: bytes,
                item: object = None) -> bool:
        """Add a user record if it fits; return False (changing nothing) when full."""
        if self.count >= self.max_count:
            return False
        pk_bytes: bytes | None = None
        pk_index = self._pk_index.get(partition_key)
        grow = 0
        if pk_index is None:
            pk_index = len(self._pk_parts)
            pk_bytes = partition_key.encode()
            n = len(pk_bytes)
            grow = 1 + _vsize(n) + n
        n = len(data)
        body = 2 + (1 if pk_index < 0x80 else _vsize(pk_index)) + _vsize(n) + n
        ehk_bytes: bytes | None = None
        ehk_index: int | None = None
        if explicit_hash_key is not None:
            ehk_index = self._ehk_index.get(explicit_hash_key)
            if ehk_index is None:
                ehk_index = len(self._ehk_parts)
                ehk_bytes = explicit_hash_key.encode()
                grow += 1 + _vsize(len(ehk_bytes)) + len(ehk_bytes)
            body += 1 + _vsize(ehk_index)
        size = self.size + grow + 1 + _vsize(body) + body
        if size > self.max_size:
            return False
        self.size = size
        self.count += 1
        self.items.append(item)
        if pk_bytes is not None:
            self._pk_index[partition_key] = pk_index
            self._pk_parts.append(b"\x0a" + _VARINT(len(pk_bytes)) + pk_bytes)
        records = self._records
        if ehk_index is None:
            records += b"\x1a" + _VARINT(body) + b"\x08" + _VARINT(pk_index) + b"\x1a" \
                + _VARINT(n)
        else:
            if ehk_bytes is not None:
                assert explicit_hash_key is not None
                self._ehk_index[explicit_hash_key] = ehk_index
                self._ehk_parts.append(b"\x12" + _VARINT(len(ehk_bytes)) + ehk_bytes)
            records += b"\x1a" + _VARINT(body) + b"\x08" + _VARINT(pk_index) + b"\x10" \
                + _VARINT(ehk_index) + b"\x1a" + _VARINT(n)
        records += data
        return True

    def serialize(self) -> bytes:
        """The aggregated record's complete data: magic + protobuf + MD5."""
        parts: list[bytes | bytearray] = [*self._pk_parts, *self._ehk_parts, self._records]
        body = b"".join(parts)
        return b"".join((MAGIC, body, md5(body).digest()))

    def fits_alone(self, partition_key: str, explicit_hash_key: str | None,
                   data: bytes) -> bool:
        """Whether this user record would fit in an empty aggregator of the same limits."""
        pk = len(partition_key.encode())
        n = len(data)
        body = 3 + _vsize(n) + n
        size = EMPTY_SIZE + 1 + _vsize(pk) + pk
        if explicit_hash_key is not None:
            size += 1 + _vsize(len(explicit_hash_key)) + len(explicit_hash_key)
            body += 2
        return size + 1 + _vsize(body) + body <= self.max_size
