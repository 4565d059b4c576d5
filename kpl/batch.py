"""The bulk put path's bookkeeping: one :class:`BatchResult` per ``put_many()`` call.

Theory of operation
-------------------
``put_many()`` hands the core every record of a call with an ``int`` handle, numbered
consecutively from one counter for the producer's life: the call that owns a handle is
the open batch whose ``[start, start + count)`` holds it, found by binary search. An int
costs the cyclic garbage collector nothing (it is not tracked), unlike the Future and the
RecordResult that ``put()`` makes per record.

The core completes a Kinesis record delivered on its first try with one bulk
:class:`~kpl.core.results.Delivered`: its handles are the records' ints, in the order of
their sub-sequence numbers, and (but after a shard-map change) in put order too. So the
records of one call are one run of that list, found by bisection: :meth:`Batches.delivered`
keeps, per call and per Kinesis record, a reference to the core's list, the run's bounds,
the shard, the sequence number and the attempts. No object is made per record until
:meth:`BatchResult.results` is called. Failures are kept one by one, as ``(index in the
call, RecordFailed)``, and so are the rare records delivered after a retry (their
results carry their attempts).

A call is *open* until each of its records is completed and it has finished adding them
(``put_many`` may wait for buffer room part way); then its future gets the
:class:`BatchResult`.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from operator import lt
from typing import Any, cast

from kpl.core.results import Attempt, Completion, Delivered, RecordResult
from kpl.errors import RecordFailed

__all__ = ["BatchResult", "Batches", "as_sequence"]

_new_result = tuple.__new__
# Records of one call delivered in one Kinesis record: the record's handle list (the
# core's own), the run ``[lo, hi)`` of it that is the call's, the shard, the sequence
# number, the sub-sequence number of ``handles[lo]``, and the attempts.
_Piece = tuple[Sequence[int], int, int, str, str, int, tuple[Attempt, ...]]


def as_sequence(records: Iterable[Any]) -> list[Any] | tuple[Any, ...]:
    """``records`` of a put_many() call as a sequence (a list or tuple is used as is)."""
    if type(records) is list or type(records) is tuple:
        return records
    if isinstance(records, str | bytes):
        raise TypeError("put_many() takes an iterable of (data, partition_key) tuples")
    return list(records)


class BatchResult:
    """The outcome of one ``put_many()`` call: counts, failures, results on request.

    ``failures`` lists ``(index, RecordFailed)`` for each record of the call that was not
    delivered, by index in the call (not sorted). :meth:`results` builds the
    :class:`~kpl.RecordResult` of every record when asked (``None`` for a failed one);
    before that call, nothing is kept per delivered record.
    """

    __slots__ = (
        "_adding", "_epoch", "_future", "_late", "_pieces", "count", "delivered",
        "failed", "failures", "start",
    )

    def __init__(self, start: int, count: int, epoch: int, future: asyncio.Future[Any]) -> None:
        #: Records in the call.
        self.count = count
        #: Records delivered so far (all of them that were, once awaited).
        self.delivered = 0
        #: Records failed so far (expired ones included).
        self.failed = 0
        #: ``(index in the call, RecordFailed)`` of each record not delivered.
        self.failures: list[tuple[int, RecordFailed]] = []
        #: The handle of the call's first record (internal numbering).
        self.start = start
        self._epoch = epoch
        self._future = future
        self._pieces: list[_Piece] = []
        self._late: list[tuple[int, RecordResult]] = []
        # Still adding records (waiting for buffer room): not complete before that ends.
        self._adding = True

    @property
    def ok(self) -> bool:
        """Whether every record of the call was delivered."""
        return self.delivered == self.count

    def results(self) -> list[RecordResult | None]:
        """Each record's :class:`~kpl.RecordResult` in call order (``None``: failed, see
        :attr:`failures`). Built anew on each call from per-Kinesis-record pieces."""
        out: list[RecordResult | None] = [None] * self.count
        start = self.start
        new = _new_result
        for handles, lo, hi, shard_id, sequence, sub, attempts in self._pieces:
            for j in range(lo, hi):
                out[handles[j] - start] = new(
                    RecordResult, (shard_id, sequence, sub + j - lo, attempts)
                )
        for index, result in self._late:
            out[index] = result
        return out

    def __repr__(self) -> str:
        return (
            f"BatchResult(count={self.count}, delivered={self.delivered}, "
            f"failed={self.failed})"
        )


class Batches:
    """The producer's open ``put_many()`` calls, by handle range."""

    __slots__ = ("_ends", "_starts", "next_handle", "open")

    def __init__(self) -> None:
        #: Open calls in handle order (so in call order, and flush-epoch order).
        self.open: list[BatchResult] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        #: The handle the next record put by put_many() gets.
        self.next_handle = 0

    def new(self, count: int, epoch: int, future: asyncio.Future[Any]) -> BatchResult:
        """Open a call of ``count`` records (handles ``next_handle`` onwards)."""
        batch = BatchResult(self.next_handle, count, epoch, future)
        self.next_handle += count
        self.open.append(batch)
        self._starts.append(batch.start)
        self._ends.append(batch.start + count)
        return batch

    def oldest_epoch(self) -> int | None:
        """The flush epoch of the oldest open call (``None``: none is open)."""
        return self.open[0]._epoch if self.open else None

    def _find(self, handle: int) -> BatchResult:
        return self.open[bisect_right(self._starts, handle) - 1]

    def delivered(
        self,
        handles: Sequence[int],
        shard_id: str,
        sequence: str,
        attempts: tuple[Attempt, ...],
        sub: int = 0,
    ) -> list[BatchResult]:
        """Handles of one Kinesis record (sub-sequence numbers from ``sub``) delivered;
        return the calls touched."""
        n = len(handles)
        if n > 1 and not all(map(lt, handles, handles[1:])):
            # Not in put order (records re-routed after a shard-map change): one by one.
            touched = []
            for offset, handle in enumerate(handles, sub):
                batch = self._find(handle)
                batch._pieces.append(([handle], 0, 1, shard_id, sequence, offset, attempts))
                batch.delivered += 1
                touched.append(batch)
            return touched
        # In put order: each call's records are one run of the list, found by bisection.
        touched = []
        lo = 0
        i = bisect_right(self._starts, handles[0]) - 1
        while lo < n:
            batch = self.open[i]
            hi = bisect_left(handles, self._ends[i], lo)
            batch._pieces.append((handles, lo, hi, shard_id, sequence, sub + lo, attempts))
            batch.delivered += hi - lo
            touched.append(batch)
            lo = hi
            if lo < n:
                i = bisect_right(self._starts, handles[lo], i) - 1
        return touched

    def completed(self, handle: int, outcome: RecordResult | RecordFailed) -> BatchResult:
        """One record's own completion (a failure, or a delivery after retries)."""
        batch = self._find(handle)
        index = handle - batch.start
        if type(outcome) is RecordResult:
            batch._late.append((index, outcome))
            batch.delivered += 1
        else:
            batch.failures.append((index, outcome))  # type: ignore[arg-type]
            batch.failed += 1
        return batch

    def finish_adding(self, batch: BatchResult, added: int) -> None:
        """The call has added ``added`` records (fewer than asked when it was
        interrupted): it completes once those are."""
        batch._adding = False
        batch.count = added
        self.settle([batch])

    def settle(self, batches: Sequence[BatchResult]) -> bool:
        """Close the calls of ``batches`` that are complete; whether any closed."""
        closed = False
        for batch in batches:
            if batch._adding or batch.delivered + batch.failed < batch.count:
                continue
            i = next((i for i, open_ in enumerate(self.open) if open_ is batch), -1)
            if i < 0:
                continue  # closed already (listed twice)
            del self.open[i]
            del self._starts[i]
            del self._ends[i]
            closed = True
            if not batch._future.done():
                batch._future.set_result(batch)
        return closed

    def take(
        self, completions: Sequence[Completion | Delivered], futures: bool
    ) -> tuple[list[Completion | Delivered], bool]:
        """Settle the records of open calls among ``completions``; return the others
        (``put()`` records) and whether a call closed. ``futures``: whether ``put()``
        records may be among them (otherwise every handle is an int)."""
        rest: list[Completion | Delivered] = []
        touched: list[BatchResult] = []
        for item in completions:
            if type(item) is Delivered:
                handles = item.handles
                shard_id, sequence, attempts = item.shard_id, item.sequence_number, item.attempts
                ints = cast(Sequence[int], handles)
                if not futures or all(type(h) is int for h in handles):
                    touched += self.delivered(ints, shard_id, sequence, attempts)
                    continue
                if not any(type(h) is int for h in handles):
                    rest.append(item)
                    continue
                # One Kinesis record carrying records of both kinds: each run of ints is
                # delivered as one piece, each put() record gets its own result.
                run = 0
                for sub, handle in enumerate(handles):
                    if type(handle) is not int:
                        if run < sub:
                            touched += self.delivered(
                                ints[run:sub], shard_id, sequence, attempts, run
                            )
                        run = sub + 1
                        rest.append((handle, _new_result(
                            RecordResult, (shard_id, sequence, sub, attempts))))
                if run < len(handles):
                    touched += self.delivered(ints[run:], shard_id, sequence, attempts, run)
                continue
            handle, outcome = item  # type: ignore[misc]
            if type(handle) is int:
                touched.append(self.completed(handle, outcome))
            else:
                rest.append(item)
        return rest, self.settle(touched) if touched else False
