"""What a user record's future resolves to: its attempts and, on success, its place."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class RecordResult:
    """Where a delivered user record landed."""

    shard_id: str
    sequence_number: str
    #: Index of the user record inside its aggregated Kinesis record (0 when sent plain).
    sub_sequence_number: int
    attempts: tuple[Attempt, ...]
