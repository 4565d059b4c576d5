"""What a user record's future resolves to, and how the core hands completions over.

Every user record ends in exactly one completion: a ``(handle, RecordResult |
RecordFailed)`` pair, or, for the user records of a Kinesis record delivered on their
first try (the usual case), one bulk :class:`Delivered` per Kinesis record.
:func:`iter_completions` expands both into pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from kpl.errors import RecordFailed

__all__ = [
    "Attempt",
    "Completion",
    "Completions",
    "Delivered",
    "RecordResult",
    "iter_completions",
]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one user record: a PutRecords call that carried it, or its expiry."""

    #: ``now`` when the request was handed to the shell, and when its answer came back.
    started: float
    ended: float
    success: bool
    #: The entry's ``ErrorCode`` or the request's error (``None`` on success).
    error_code: str | None
    error_message: str | None


class RecordResult(NamedTuple):
    """Where a delivered user record landed (an immutable named tuple).

    A named tuple rather than a frozen dataclass: one is made per record on the hot path
    (the core builds it with ``tuple.__new__``), and a frozen dataclass's ``__init__``
    costs several times as much.
    """

    #: The shard that stored the record.
    shard_id: str
    #: The sequence number of the Kinesis record that carried it.
    sequence_number: str
    #: Index of the user record inside its aggregated Kinesis record (0 when sent plain).
    sub_sequence_number: int
    #: Every try, the last one the success.
    attempts: tuple[Attempt, ...]


#: One user record's outcome: its handle and its result or failure.
Completion = tuple[object, "RecordResult | RecordFailed"]

_new_result = tuple.__new__


class Delivered:
    """The completion of every user record of one delivered Kinesis record, in bulk.

    The record at index ``i`` of ``handles`` succeeded as
    ``RecordResult(shard_id, sequence_number, i, attempts)``. One object per Kinesis
    record instead of one ``(handle, RecordResult)`` pair per user record: the shell
    builds each result as it resolves the future (see :func:`iter_completions`).
    """

    __slots__ = ("attempts", "handles", "sequence_number", "shard_id")

    def __init__(
        self,
        handles: Sequence[object],
        shard_id: str,
        sequence_number: str,
        attempts: tuple[Attempt, ...],
    ) -> None:
        self.handles = handles
        self.shard_id = shard_id
        self.sequence_number = sequence_number
        self.attempts = attempts

    def __repr__(self) -> str:
        return (
            f"Delivered({len(self.handles)} records, {self.shard_id}, {self.sequence_number})"
        )


#: What the core hands the shell: single completions and bulk deliveries, mixed.
Completions = list["Completion | Delivered"]


def iter_completions(
    completions: Iterable[Completion | Delivered],
) -> Iterator[Completion]:
    """Every ``(handle, outcome)`` pair of ``completions``, bulk deliveries expanded."""
    for item in completions:
        if type(item) is Delivered:
            shard_id, sequence, attempts = item.shard_id, item.sequence_number, item.attempts
            for sub, handle in enumerate(item.handles):
                yield handle, _new_result(RecordResult, (shard_id, sequence, sub, attempts))
        else:
            yield item  # type: ignore[misc]
