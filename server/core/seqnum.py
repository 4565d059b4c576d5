"""Sequence numbers in the service's own layout (version 2): 56 decimal digits.

In hexadecimal a number is 47 digits, most significant first::

    2 CCCCCCCCC i NNNNNNNNNNNNNNNN 00 AAAAAAAAA IIIIIIII 2
    | |         | |                |  |         |        version again
    | |         | |                |  |         the shard index (8 hex digits)
    | |         | |                |  the record's arrival, epoch seconds (9 hex digits)
    | |         | |                two zero digits
    | |         | the per-shard sequence index (16 hex digits)
    | |         the low hex digit of the shard index
    | the shard's creation time, epoch seconds (9 hex digits)
    version

which is how public tooling decodes the service's numbers, so a number tells which shard
it came from (``It encodes shardId-X``) and, by the shard's creation time, whether it came
from this stream or an earlier one of the same name.

* Within a shard only the sequence index and the arrival change, and the index is the more
  significant: numbers are strictly increasing in a shard iff each record takes the next
  index. Across shards there is no order (as on the service).
* A shard's ``StartingSequenceNumber`` has index 0 and the shard's creation time as its
  arrival; its first record takes index 1, so the starting number is never a record's.
* After a restart a shard numbers on above ``Storage.last_sequence_number``
  (:func:`next_index`).

An earlier layout of this server (decimal ``49``, shard index, stream epoch, a 34-digit
counter) may still be in a data directory: :func:`parse_sequence_number` reads it too.
Every version-2 number of a shard created after 2001 is greater than every number of that
layout (shard indexes are below 2**31), so a shard holding old records numbers on above
them.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ARRIVAL_SHIFT",
    "ARRIVAL_SPAN",
    "DIGITS",
    "INDEX_SPAN",
    "INDEX_UNIT",
    "ParsedSequenceNumber",
    "arrival_part",
    "next_index",
    "parse_sequence_number",
    "sequence_head",
    "shard_base",
]

DIGITS = 56
_VERSION = 2
#: Arrival and creation times are kept modulo this (9 hex digits of seconds).
ARRIVAL_SPAN = 16**9
#: Sequence indexes run in ``[0, INDEX_SPAN)``.
INDEX_SPAN = 16**16
ARRIVAL_SHIFT = 36  # the shard index (8 hex digits) and the trailing version digit
_INDEX_SHIFT = 80  # ... the arrival (9) and the two zero digits
#: The difference between two numbers of a shard one sequence index apart, same arrival.
INDEX_UNIT = 1 << _INDEX_SHIFT
_LOW_DIGIT_SHIFT = 144
_CREATED_SHIFT = 148
_VERSION_SHIFT = 184

# The earlier decimal layout: 49, shard index (10 digits), stream epoch (10), counter (34).
_V1_VERSION = 49
_V1_SPAN = 10**10
_V1_COUNTER_SPAN = 10**34


class ParsedSequenceNumber(NamedTuple):
    """The fields a sequence number encodes."""

    version: int
    """2, or 1 for the earlier decimal layout."""
    shard_index: int
    created: int
    """Version 2: the shard's creation second (mod 16**9); version 1: the stream's."""
    counter: int
    """The per-shard sequence index (version 1: the counter)."""
    arrival: int
    """The record's arrival second (mod 16**9); 0 in version 1."""

    @property
    def origin(self) -> tuple[int, int]:
        """What tells the numbers of a shard from those of an earlier stream's shard."""
        return self.version, self.created


def sequence_head(created: int, shard_index: int) -> int:
    """A shard's number with sequence index 0 and arrival 0 (not itself a number handed
    out): a record's number is the head plus ``index * INDEX_UNIT`` plus
    :func:`arrival_part`."""
    return (
        _VERSION << _VERSION_SHIFT
        | (created % ARRIVAL_SPAN) << _CREATED_SHIFT
        | (shard_index & 0xF) << _LOW_DIGIT_SHIFT
        | (shard_index & 0xFFFFFFFF) << 4
        | _VERSION
    )


def arrival_part(arrival: float) -> int:
    """What a record's arrival (epoch seconds) adds to its number."""
    return (int(arrival) % ARRIVAL_SPAN) << ARRIVAL_SHIFT


def shard_base(shard_index: int, created: int) -> int:
    """A shard's ``StartingSequenceNumber``: index 0, its creation second as the arrival."""
    return sequence_head(created, shard_index) + arrival_part(created)


def next_index(head: int, last: int | None) -> int:
    """The sequence index a shard's next record takes, given the highest number it holds
    (``None``: none); its first record takes 1."""
    if last is None or last < head:
        return 1
    return (last - head) // INDEX_UNIT + 1


def parse_sequence_number(value: int) -> ParsedSequenceNumber | None:
    """The fields of a number of either layout, or ``None`` if it is in neither."""
    if value >> _VERSION_SHIFT == _VERSION and value & 0xF == _VERSION:
        shard_index = (value >> 4) & 0xFFFFFFFF
        if (value >> 72) & 0xFF == 0 and (value >> _LOW_DIGIT_SHIFT) & 0xF == shard_index & 0xF:
            return ParsedSequenceNumber(
                _VERSION,
                shard_index,
                (value >> _CREATED_SHIFT) % ARRIVAL_SPAN,
                (value >> _INDEX_SHIFT) % INDEX_SPAN,
                (value >> ARRIVAL_SHIFT) % ARRIVAL_SPAN,
            )
    if value >= _VERSION << _VERSION_SHIFT:
        return None  # the two layouts' ranges meet here (version 1 below, 2 above)
    head, counter = divmod(value, _V1_COUNTER_SPAN)
    head, epoch = divmod(head, _V1_SPAN)
    version, shard_index = divmod(head, _V1_SPAN)
    if version != _V1_VERSION:
        return None
    return ParsedSequenceNumber(1, shard_index, epoch, counter, 0)
