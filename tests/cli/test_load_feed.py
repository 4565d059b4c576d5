"""The feed's bookkeeping: chunks settled in bulk, failures one by one, the sample, and
the bulk path, over a producer stand-in whose outcomes the test decides."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from kpl.cli.load_feed import Feed
from kpl.core.results import Attempt, RecordResult
from kpl.errors import RecordFailed
from kpl.histogram import LatencyHistogram
from kpl.loadgen import THROTTLE_CODE, LoadStats, RecordSource
from tests.support import virtual_time


def _ok(started: float, ended: float, throttled: int = 0) -> RecordResult:
    tries = [Attempt(started, ended, False, THROTTLE_CODE, "slow down")] * throttled
    return RecordResult("shardId-000000000000", "1", 0, (*tries, Attempt(started, ended, True,
                                                                          None, None)))


@dataclass
class _Batch:
    count: int
    failures: list[tuple[int, RecordFailed]]
    delivered: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.failed = len(self.failures)
        self.delivered = self.count - self.failed


@dataclass
class _Producer:
    """Hands out futures; the test resolves them."""

    bulk: bool = False
    puts: list[tuple[asyncio.Future[Any], bytes, str]] = field(default_factory=list)
    batches: list[tuple[asyncio.Future[Any], list[tuple[bytes, str]]]] = field(
        default_factory=list
    )

    async def put(self, data: bytes, partition_key: str) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.puts.append((future, data, partition_key))
        return future

    async def put_many(self, records: list[tuple[bytes, str]]) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.batches.append((future, list(records)))
        return future

    def metrics(self) -> dict[str, float]:
        return {"AllErrors": 0.0}


def _source() -> RecordSource:
    return RecordSource(random.Random(1), size_min=10, size_max=30, keys=5)


@virtual_time
async def test_a_chunk_is_settled_once_every_record_has_an_outcome() -> None:
    loop = asyncio.get_running_loop()
    producer = _Producer()
    stats = LoadStats(loop.time())
    feed = Feed(producer, _source(), stats, loop.time, every=1)
    await feed.put(5)
    t0 = loop.time()
    for i, (future, _, _) in enumerate(producer.puts[:4]):
        future.set_result(_ok(t0, t0 + 0.01 * (i + 1), throttled=1 if i == 0 else 0))
    feed.sweep()
    assert (stats.records_acked, feed.in_flight) == (0, 1)  # one record still out
    producer.puts[4][0].set_result(_ok(t0, t0 + 0.05))
    feed.sweep()
    assert (stats.records_acked, feed.in_flight, stats.in_flight) == (5, 0, 0)
    assert stats.bytes_acked == sum(len(data) for _, data, _ in producer.puts)
    assert (stats.retries, stats.throttles) == (1, 1)
    assert stats.latency.count == 5
    assert stats.latency.maximum == pytest.approx(0.05)
    assert stats.last_outcome == t0 + 0.05


@virtual_time
async def test_failed_and_cancelled_records_are_counted_one_by_one() -> None:
    loop = asyncio.get_running_loop()
    producer = _Producer()
    stats = LoadStats(loop.time())
    feed = Feed(producer, _source(), stats, loop.time, every=2)
    await feed.put(4)
    now = loop.time()
    futures = [f for f, _, _ in producer.puts]
    futures[0].set_result(_ok(now, now + 0.02))
    futures[1].set_exception(
        RecordFailed("InternalFailure", "boom", (Attempt(now, now, False, "InternalFailure",
                                                          "boom"),))
    )  # fmt: skip
    futures[2].cancel()
    futures[3].set_result(_ok(now, now + 0.03))
    feed.sweep()
    assert (stats.records_acked, stats.records_failed, stats.in_flight) == (2, 2, 0)
    assert stats.failures_by_code == {"InternalFailure": 1, "Cancelled": 1}
    assert stats.bytes_acked == len(producer.puts[0][1]) + len(producer.puts[3][1])
    # One in two measured: records 0 and 2 (2 was cancelled, so only record 0, which
    # stands for two in the percentiles).
    assert (stats.latency_samples, stats.latency.count) == (1, 2)
    assert stats.latency.maximum == pytest.approx(0.02)


@virtual_time
async def test_the_sample_stride_goes_on_across_chunks() -> None:
    loop = asyncio.get_running_loop()
    producer = _Producer()
    stats = LoadStats(loop.time())
    exact = LatencyHistogram()
    feed = Feed(producer, _source(), stats, loop.time, every=3, exact=exact)
    for n in (2, 2, 5):  # records 0..8: 0, 3 and 6 are the sample
        await feed.put(n)
    now = loop.time()
    for i, (future, _, _) in enumerate(producer.puts):
        future.set_result(_ok(now, now + 0.001 * (i + 1)))
    feed.sweep()
    assert exact.count == 9
    assert (stats.latency_samples, stats.latency.count) == (3, 9)
    assert stats.latency.maximum == pytest.approx(0.007)


@virtual_time
async def test_the_bulk_path_puts_only_the_sample_one_by_one() -> None:
    loop = asyncio.get_running_loop()
    producer = _Producer()
    stats = LoadStats(loop.time())
    feed = Feed(producer, _source(), stats, loop.time, every=4, bulk=True)
    assert feed.bulk
    await feed.put(10)
    # Records 0, 4 and 8 through put() (their latency measured), the rest in one call.
    assert len(producer.puts) == 3
    (batch_future, records), = producer.batches
    assert len(records) == 7
    now = loop.time()
    for future, _, _ in producer.puts:
        future.set_result(_ok(now, now + 0.004))
    failure = RecordFailed("InternalFailure", "boom", ())
    batch_future.set_result(_Batch(count=7, failures=[(2, failure)]))
    feed.sweep()
    assert (stats.records_acked, stats.records_failed, stats.in_flight) == (9, 1, 0)
    assert stats.bytes_sent - stats.bytes_acked == len(records[2][0])
    assert (stats.latency_samples, stats.latency.count) == (3, 12)
    assert stats.failures_by_code == {"InternalFailure": 1}


@virtual_time
async def test_without_put_many_the_bulk_option_falls_back_to_put() -> None:
    loop = asyncio.get_running_loop()

    class Plain:
        async def put(self, data: bytes, partition_key: str) -> asyncio.Future[Any]:
            future = loop.create_future()
            future.set_result(_ok(loop.time(), loop.time()))
            return future

    stats = LoadStats(loop.time())
    feed = Feed(Plain(), _source(), stats, loop.time, every=4, bulk=True)
    assert not feed.bulk
    await feed.put(8)
    feed.sweep()
    assert (stats.records_acked, stats.latency_samples) == (8, 2)


@virtual_time
async def test_a_sample_taken_at_another_stride_keeps_its_own_weight() -> None:
    loop = asyncio.get_running_loop()
    producer = _Producer()
    stats = LoadStats(loop.time())
    feed = Feed(producer, _source(), stats, loop.time, every=1)
    await feed.put(4)  # every record measured: each stands for itself
    feed.every = 4
    await feed.put(8)  # records 4 and 8 of the run... one in four, standing for four each
    now = loop.time()
    for i, (future, _, _) in enumerate(producer.puts):
        future.set_result(_ok(now, now + (0.001 if i < 4 else 0.1)))
    feed.sweep()
    assert stats.latency_samples == 6
    assert stats.latency.count == 12
    # Two records in three were slow though four samples in six were fast: weighted, the
    # median is a slow one.
    assert stats.latency.percentile(50) > 0.09
