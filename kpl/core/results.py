"""What a user record's future resolves to: its attempts and, on success, its place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Attempt", "RecordResult"]


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
