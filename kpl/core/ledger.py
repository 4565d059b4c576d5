"""The ledger: each held user record's failed attempts, and what its completion counts.

Theory of operation
-------------------
A user record's failed attempts are kept by its seq in one dict, empty while everything
goes well (so a delivery on the first try, the usual case, looks nothing up and
completes a whole Kinesis record with one bulk :class:`~kpl.core.results.Delivered`).
When a record completes, its attempts leave the dict and go into its
:class:`~kpl.core.results.RecordResult` or :class:`~kpl.errors.RecordFailed`, and the
completion is counted in :class:`~kpl.core.metrics.ProducerMetrics`.

Every method that completes records appends the completions to the list it is given
and returns ``(records, bytes)`` completed, which the core takes off its buffer budget.
"""

from __future__ import annotations

from collections.abc import Iterable

from kpl.core.metrics import ProducerMetrics
from kpl.core.mispredict import Placed
from kpl.core.records import HANDLE, SEQ, SIZE, KRecord, UserRecord
from kpl.core.results import Attempt, Completions, Delivered, RecordResult
from kpl.errors import RecordExpired, RecordFailed

__all__ = ["Ledger"]

_new_result = tuple.__new__


class Ledger:
    """Failed attempts by user record seq; completions and their counters."""

    __slots__ = ("attempts", "metrics", "ttl")

    def __init__(self, metrics: ProducerMetrics, ttl: float) -> None:
        self.metrics = metrics
        self.ttl = ttl
        #: Failed attempts of records still held, by record seq.
        self.attempts: dict[int, tuple[Attempt, ...]] = {}

    def attempts_of(self, record: UserRecord) -> tuple[Attempt, ...]:
        """The failed attempts of ``record`` so far."""
        return self.attempts.get(record[SEQ], ())

    def add_attempt(self, record: UserRecord, attempt: Attempt) -> None:
        """Remember one more failed attempt of ``record``."""
        self.attempts[record[SEQ]] = (*self.attempts.get(record[SEQ], ()), attempt)

    def add_attempts(self, krecord: KRecord, attempt: Attempt) -> None:
        """Remember one more failed attempt of every user record of ``krecord``."""
        attempts = self.attempts
        for seq in krecord.seqs:
            attempts[seq] = (*attempts.get(seq, ()), attempt)

    def delivered(
        self,
        krecord: KRecord,
        shard_id: str,
        sequence: str,
        ok: Attempt,
        completions: Completions,
    ) -> tuple[int, int]:
        """Every user record of ``krecord`` was stored at ``shard_id``/``sequence``."""
        handles = krecord.handles
        n = len(handles)
        failed = self.attempts
        retries = 0
        if not failed:
            # Everything on its first try (the usual case): one bulk completion.
            completions.append(Delivered(handles, shard_id, sequence, (ok,)))
        else:
            pop = failed.pop
            append = completions.append
            for sub, (handle, seq) in enumerate(zip(handles, krecord.seqs, strict=True)):
                attempts = pop(seq, ())
                retries += len(attempts)
                append(
                    (handle, _new_result(RecordResult, (shard_id, sequence, sub, (*attempts, ok))))
                )
        size = krecord.user_bytes
        metrics = self.metrics
        metrics.put += n
        metrics.data_put += size
        metrics.retries += retries
        metrics.completed += n
        return n, size

    def confirmed(self, placed: list[Placed], completions: Completions) -> tuple[int, int]:
        """Sub-records of a mispredicted Kinesis record that its shard does own."""
        metrics = self.metrics
        records: list[UserRecord] = []
        for record, shard_id, sequence, sub, ok in placed:
            completions.append(
                (
                    record[HANDLE],
                    RecordResult(shard_id, sequence, sub, (*self.attempts_of(record), ok)),
                )
            )
            metrics.put += 1
            metrics.data_put += record[SIZE]
            records.append(record)
        return self._settle(records, success=True)

    def failed_krecord(
        self,
        krecord: KRecord,
        code: str,
        message: str,
        cause: BaseException | None,
        completions: Completions,
    ) -> tuple[int, int]:
        """Fail every user record of ``krecord`` (from its columns: nothing decoded)."""
        pop = self.attempts.pop
        retries = 0
        for handle, seq in zip(krecord.handles, krecord.seqs, strict=True):
            attempts = pop(seq, ())
            retries += len(attempts)
            completions.append((handle, RecordFailed(code, message, attempts, cause)))
        n = len(krecord.handles)
        metrics = self.metrics
        metrics.failed += n
        # A failure's attempts include the last one, which is not a retry.
        metrics.retries += max(0, retries - n)
        metrics.completed += n
        return n, krecord.user_bytes

    def failed(
        self,
        records: Iterable[UserRecord],
        code: str,
        message: str,
        cause: BaseException | None,
        completions: Completions,
    ) -> tuple[int, int]:
        """Fail ``records``, each with its own exception."""
        settled = list(records)
        for record in settled:
            completions.append(
                (record[HANDLE], RecordFailed(code, message, self.attempts_of(record), cause))
            )
        self.metrics.failed += len(settled)
        return self._settle(settled, success=False)

    def expired(
        self, records: list[UserRecord], completions: Completions, detail: str
    ) -> tuple[int, int]:
        """Fail ``records`` as not delivered within ``record_ttl`` (``detail``: why)."""
        message = f"not delivered within record_ttl of {self.ttl}s"
        if detail:
            message += f" ({detail})"
        self.metrics.expired += len(records)
        return self.failed(records, RecordExpired.code, message, None, completions)

    def _settle(self, records: list[UserRecord], success: bool) -> tuple[int, int]:
        """The records got their completion: drop their attempts, count retries."""
        n = 0
        size = 0
        retries = 0
        pop = self.attempts.pop
        for record in records:
            n += 1
            size += record[SIZE]
            retries += len(pop(record[SEQ], ()))
        # A success's attempts hold only the failed tries; a failure's include the last one.
        self.metrics.retries += retries if success else max(0, retries - n)
        self.metrics.completed += n
        return n, size
