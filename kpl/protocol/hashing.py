"""Partition key -> 128-bit hash key, explicit hash key parsing, hash key ranges.

Kinesis places a record by a 128-bit hash key: the MD5 digest of the UTF-8 partition
key read as a big-endian unsigned integer, or the record's explicit hash key (a decimal
string) when one is given. Both the producer (to predict a record's shard) and the
server (to route it) use these functions, so they agree by construction.

A stream of ``n`` shards created at once (or resharded to ``n`` uniformly) splits the
hash space into ``n`` equal ranges, the last one taking the remainder:
:func:`uniform_ranges`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import md5
else:
    try:
        # CPython's own MD5: for inputs as short as partition keys, about twice as fast
        # per call as hashlib's OpenSSL constructor (the same digests).
        from _md5 import md5
    except ImportError:  # an interpreter built without it
        from hashlib import md5

__all__ = [
    "EXPLICIT_HASH_KEY_PATTERN",
    "EXPLICIT_HASH_KEY_RE",
    "HASH_KEY_SPACE",
    "MAX_HASH_KEY",
    "ExplicitHashKeyError",
    "InvalidPartitionKey",
    "hash_key_for",
    "md5",
    "parse_explicit_hash_key",
    "partition_key_bytes",
    "partition_key_hash",
    "uniform_ranges",
]

#: The number of hash keys: every hash key lies in ``[0, HASH_KEY_SPACE)``.
HASH_KEY_SPACE = 1 << 128
#: The largest hash key, ``2**128 - 1``.
MAX_HASH_KEY = HASH_KEY_SPACE - 1

#: The service model's pattern for a hash key (ExplicitHashKey, NewStartingHashKey), as
#: its validation messages quote it: a decimal without leading zeros, at most 39 digits.
#: The range check (<= 2**128 - 1) is separate.
EXPLICIT_HASH_KEY_PATTERN = r"0|([1-9]\d{0,38})"
#: :data:`EXPLICIT_HASH_KEY_PATTERN` compiled (use ``fullmatch``), ASCII only: ``int()``
#: would take other scripts' digits ("1٣"); the service does not.
EXPLICIT_HASH_KEY_RE = re.compile(EXPLICIT_HASH_KEY_PATTERN, re.ASCII)

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
    if not EXPLICIT_HASH_KEY_RE.fullmatch(value):
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


def uniform_ranges(count: int) -> list[tuple[int, int]]:
    """The service's split of the hash space into ``count`` inclusive ``(start, end)``
    ranges, as CreateStream makes them: equal steps, the last range ends at the top."""
    step = HASH_KEY_SPACE // count
    return [
        (i * step, MAX_HASH_KEY if i == count - 1 else (i + 1) * step - 1) for i in range(count)
    ]
