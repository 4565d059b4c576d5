"""Partition key -> 128-bit hash key, and explicit hash key parsing.

Kinesis places a record by a 128-bit hash key: the MD5 digest of the UTF-8 partition
key read as a big-endian unsigned integer, or the record's explicit hash key (a decimal
string) when one is given. Both the producer (to predict a record's shard) and the
server (to route it) use these functions, so they agree by construction.
"""

from __future__ import annotations

import re
from hashlib import md5

__all__ = [
    "HASH_KEY_SPACE",
    "MAX_HASH_KEY",
    "ExplicitHashKeyError",
    "InvalidPartitionKey",
    "hash_key_for",
    "parse_explicit_hash_key",
    "partition_key_bytes",
    "partition_key_hash",
]

#: The number of hash keys: every hash key lies in ``[0, HASH_KEY_SPACE)``.
HASH_KEY_SPACE = 1 << 128
#: The largest hash key, ``2**128 - 1``.
MAX_HASH_KEY = HASH_KEY_SPACE - 1

# The service model's pattern for ExplicitHashKey: a decimal without leading zeros,
# at most 39 digits. The range check (<= 2**128 - 1) is separate.
_EXPLICIT_HASH_KEY = re.compile(r"0|[1-9]\d{0,38}")

_from_bytes = int.from_bytes


class InvalidPartitionKey(ValueError):
    """A partition key that is empty, longer than 256 characters, or not a str."""


class ExplicitHashKeyError(ValueError):
    """An explicit hash key that is not a decimal integer in ``[0, 2**128 - 1]``."""


def partition_key_bytes(partition_key: str) -> bytes:
    """The key's UTF-8 bytes; a key that has none (a lone surrogate) is invalid."""
    try:
        return partition_key.encode()
    except UnicodeEncodeError as error:
        raise InvalidPartitionKey(
            f"partition key is not valid Unicode text ({error.reason} at {error.start})"
        ) from None


def partition_key_hash(partition_key: str) -> int:
    """The hash key of a partition key: MD5 of its UTF-8 bytes, big-endian."""
    return _from_bytes(md5(partition_key.encode("utf-8")).digest(), "big")


def parse_explicit_hash_key(value: str) -> int:
    """Parse an explicit hash key; raise :class:`ExplicitHashKeyError` when invalid."""
    if not _EXPLICIT_HASH_KEY.fullmatch(value):
        raise ExplicitHashKeyError(
            f"explicit hash key must be a decimal integer without leading zeros, got {value!r}"
        )
    number = int(value)
    if number > MAX_HASH_KEY:
        raise ExplicitHashKeyError(
            f"explicit hash key must be at most 2**128 - 1, got {value}"
        )
    return number


def hash_key_for(partition_key: str, explicit_hash_key: str | None = None) -> int:
    """The hash key that places a record: the explicit one if given, else the key's MD5."""
    if explicit_hash_key is not None:
        return parse_explicit_hash_key(explicit_hash_key)
    return partition_key_hash(partition_key)
