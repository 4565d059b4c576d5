"""Batches: put_many()'s bookkeeping, fed completions directly (no producer, no IO)."""

from __future__ import annotations

import asyncio

from kpl.batch import Batches
from kpl.core.results import Attempt, Completion, Delivered, RecordResult
from kpl.errors import RecordFailed

OK = (Attempt(1.0, 2.0, True, None, None),)


async def test_pieces_spanning_calls_rebuild_every_result_and_close_each_call() -> None:
    loop = asyncio.get_running_loop()
    batches = Batches()
    first = batches.new(3, 0, loop.create_future())  # handles 0-2
    second = batches.new(5, 0, loop.create_future())  # handles 3-7
    for batch in (first, second):
        batches.finish_adding(batch, batch.count)
    late = RecordResult("s2", "9", 0, (Attempt(0.0, 1.0, False, "X", "x"), *OK))
    failed = RecordFailed("Expired", "gone", ())
    rest, closed = batches.take([
        Delivered([1, 2, 3, 4], "s1", "7", OK),  # consecutive, across both calls
        Delivered([6, 0], "s1", "8", OK),  # re-routed records: not consecutive
        (5, late),  # delivered after a retry
    ], futures=False)
    assert rest == []
    assert closed
    assert first._future.result() is first
    assert first.ok
    assert first.results() == [
        RecordResult("s1", "8", 1, OK), RecordResult("s1", "7", 0, OK),
        RecordResult("s1", "7", 1, OK),
    ]
    assert not second._future.done()  # handle 7 is outstanding
    rest, closed = batches.take([(7, failed)], futures=False)
    assert closed
    assert second._future.result() is second
    assert (second.delivered, second.failed, second.ok) == (4, 1, False)
    assert second.failures == [(4, failed)]
    assert second.results() == [
        RecordResult("s1", "7", 2, OK), RecordResult("s1", "7", 3, OK), late,
        RecordResult("s1", "8", 0, OK), None,
    ]
    assert batches.open == []


async def test_put_records_in_the_same_kinesis_record_are_handed_back() -> None:
    loop = asyncio.get_running_loop()
    batches = Batches()
    batch = batches.new(2, 0, loop.create_future())
    future = loop.create_future()
    pair: Completion = (future, RecordFailed("X", "x", ()))
    rest, closed = batches.take([Delivered([future, 0, 1], "s", "5", OK), pair], futures=True)
    assert rest == [(future, RecordResult("s", "5", 0, OK)), pair]
    assert not closed  # still adding
    batches.finish_adding(batch, 2)
    assert batch._future.done()
    assert batch.results() == [RecordResult("s", "5", 1, OK), RecordResult("s", "5", 2, OK)]


async def test_an_interrupted_call_completes_with_the_records_it_added() -> None:
    loop = asyncio.get_running_loop()
    batches = Batches()
    batch = batches.new(10, 0, loop.create_future())
    batches.take([Delivered([0, 1, 2], "s", "5", OK)], futures=False)
    assert not batch._future.done()
    batches.finish_adding(batch, 3)
    assert batch._future.done()
    assert batch.count == 3
    assert batch.ok


async def test_runs_of_ints_around_put_records_keep_their_sub_sequence_numbers() -> None:
    loop = asyncio.get_running_loop()
    batches = Batches()
    batch = batches.new(5, 0, loop.create_future())
    batches.finish_adding(batch, 5)
    first, second = loop.create_future(), loop.create_future()
    rest, closed = batches.take(
        [Delivered([0, 1, first, 2, 3, second, 4], "s", "5", OK)], futures=True
    )
    assert closed
    assert rest == [(first, RecordResult("s", "5", 2, OK)), (second, RecordResult("s", "5", 5, OK))]
    assert [r.sub_sequence_number for r in batch.results() if r is not None] == [0, 1, 3, 4, 6]
    assert len(batch._pieces) == 3  # one per run, not one per record
