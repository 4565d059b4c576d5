"""Sequence numbers: 56 decimal digits that encode the stream, the shard and a counter.

Layout (decimal digits, most significant first)::

    49  SSSSSSSSSS  EEEEEEEEEE  CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC
    |   shard index stream epoch  per-shard counter (34 digits)
    version (2)  (10)        (10: creation second, mod 10**10)

* Every number has exactly 56 digits, like the service's.
* Within a shard only the counter changes, so numbers are strictly increasing iff the
  counter is; across shards there is no order (as on the service).
* The shard index lets AT/AFTER_SEQUENCE_NUMBER against another shard be refused with
  the service's message; the stream epoch tells numbers from an earlier stream of the
  same name apart ("did not come from this stream").

A shard's ``StartingSequenceNumber`` is its base (counter 0); its first record takes
counter 1, so the starting number itself is never a record's. The engine keeps the next
counter per shard; after a restart it continues above ``Storage.last_sequence_number``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "COUNTER_SPAN",
    "DIGITS",
    "ParsedSequenceNumber",
    "parse_sequence_number",
    "shard_base",
]

DIGITS = 56
_VERSION = 49
_INDEX_SPAN = 10**10
_EPOCH_SPAN = 10**10
#: Counters run in ``[0, COUNTER_SPAN)``.
COUNTER_SPAN = 10**34
_VERSION_UNIT = _INDEX_SPAN * _EPOCH_SPAN * COUNTER_SPAN


class ParsedSequenceNumber(NamedTuple):
    """The fields of a sequence number in our layout."""

    shard_index: int
    stream_epoch: int
    counter: int


def shard_base(shard_index: int, stream_epoch: int) -> int:
    """The sequence number with counter 0 for a shard: its ``StartingSequenceNumber``."""
    return (
        (_VERSION * _INDEX_SPAN + shard_index % _INDEX_SPAN) * _EPOCH_SPAN
        + stream_epoch % _EPOCH_SPAN
    ) * COUNTER_SPAN


def parse_sequence_number(value: int) -> ParsedSequenceNumber | None:
    """Split a number into its fields, or ``None`` if it is not in our layout."""
    head, counter = divmod(value, COUNTER_SPAN)
    head, epoch = divmod(head, _EPOCH_SPAN)
    version, index = divmod(head, _INDEX_SPAN)
    if version != _VERSION:
        return None
    return ParsedSequenceNumber(index, epoch, counter)
