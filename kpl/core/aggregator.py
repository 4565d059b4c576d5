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

The bytes are the protocol's (:mod:`kpl.protocol.aggregation`): each sub-record is
written as it arrives (one ``b"".join`` of the precomputed field headers and its data —
measured faster than growing a ``bytearray``); ``serialize()`` adds the key tables,
joins, and frames the body with the magic and one MD5.
"""

from __future__ import annotations

from kpl.protocol.aggregation import (
    DATA_HEADERS,
    EMPTY_SIZE,
    PARTITION_KEY_INDEX_FIELDS,
    RECORD_HEADERS,
    encode_sub_record,
    explicit_hash_key_entry,
    frame,
    partition_key_entry,
    varint_size,
)

__all__ = ["EMPTY_SIZE", "Aggregator"]


class Aggregator:
    """A KPL aggregated record under construction; ``try_add()`` returns False when full."""

    __slots__ = (
        "_ehk_index",
        "_ehk_parts",
        "_parts",
        "_pk_index",
        "_pk_parts",
        "count",
        "items",
        "max_count",
        "max_size",
        "size",
    )

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
        # Field 1 entries first, then field 2, then field 3 (the protobuf field order);
        # partition keys and sub-records are kept apart and joined in serialize().
        self._parts: list[bytes] = []  # sub-records (field 3)
        self._ehk_parts: list[bytes] = []  # explicit hash key table (field 2)
        self._pk_parts: list[bytes] = []  # partition key table (field 1)

    def try_add(
        self,
        partition_key: str,
        explicit_hash_key: str | None,
        data: bytes,
        item: object = None,
        partition_key_bytes: bytes | None = None,
    ) -> bool:
        """Add a user record if it fits; return False (changing nothing) when full.

        ``partition_key_bytes`` may pass the key's UTF-8 bytes when the caller has them.
        """
        if self.count >= self.max_count:
            return False
        pk_index = self._pk_index.get(partition_key)
        if pk_index is None:
            pk_index = len(self._pk_index)
            pk_bytes = partition_key_bytes or partition_key.encode()
            k = len(pk_bytes)
            grow = 2 + k + (k >= 0x80) if k < 0x4000 else 1 + varint_size(k) + k
        else:
            pk_bytes = None
            grow = 0
        n = len(data)
        if explicit_hash_key is None and n < 0x3F00 and pk_index < 0x4000:
            # The common case, with every varint below 2**14: sizes by bool arithmetic.
            body = 4 + n + (n >= 0x80) + (pk_index >= 0x80)
            size = self.size + grow + 2 + body + (body >= 0x80)
            if size > self.max_size:
                return False
            self._parts.append(
                b"".join(
                    (
                        RECORD_HEADERS[body],
                        PARTITION_KEY_INDEX_FIELDS[pk_index],
                        DATA_HEADERS[n],
                        data,
                    )
                )
            )
        elif explicit_hash_key is None:
            body = 2 + varint_size(pk_index) + varint_size(n) + n
            size = self.size + grow + 1 + varint_size(body) + body
            if size > self.max_size:
                return False
            self._parts.append(encode_sub_record(pk_index, None, data))
        else:
            body = 2 + varint_size(pk_index) + varint_size(n) + n
            ehk_index = self._ehk_index.get(explicit_hash_key)
            ehk_bytes = None
            if ehk_index is None:
                ehk_index = len(self._ehk_index)
                ehk_bytes = explicit_hash_key.encode()
                grow += 1 + varint_size(len(ehk_bytes)) + len(ehk_bytes)
            body += 1 + varint_size(ehk_index)
            size = self.size + grow + 1 + varint_size(body) + body
            if size > self.max_size:
                return False
            if ehk_bytes is not None:
                self._ehk_index[explicit_hash_key] = ehk_index
                self._ehk_parts.append(explicit_hash_key_entry(ehk_bytes))
            self._parts.append(encode_sub_record(pk_index, ehk_index, data))
        if pk_bytes is not None:
            self._pk_index[partition_key] = pk_index
            self._pk_parts.append(partition_key_entry(pk_bytes))
        self.size = size
        self.count += 1
        self.items.append(item)
        return True

    def serialize(self) -> bytes:
        """The aggregated record's complete data: magic + protobuf + MD5."""
        parts = self._pk_parts + self._ehk_parts
        parts += self._parts
        return frame(b"".join(parts))
