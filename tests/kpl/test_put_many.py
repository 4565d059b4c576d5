"""Producer.put_many(): the bulk path keeps every guarantee of put(), end to end against
the bundled server (real aiohttp transport, SigV4, port 0)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kpl import (
    BatchResult,
    BufferFull,
    InvalidPartitionKey,
    KinesisClient,
    Producer,
    ProducerClosed,
    ProducerConfig,
    RecordResult,
    RecordTooLarge,
)
from kpl.producer import RECORD_OVERHEAD
from server import StreamServer
from tests.support import read_back

FAST: dict[str, Any] = {"record_max_buffered_time": 0.01, "min_backoff": 0.0,
                        "max_backoff": 0.05}


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    async with StreamServer(port=0, state_delay_seconds=0.0) as server:
        yield server.url


async def make_stream(url: str, name: str, shards: int) -> KinesisClient:
    client = KinesisClient(url, region="us-east-1", max_attempts=20, backoff=0.01)
    await client.create_stream(name, shards)
    async with asyncio.timeout(10):
        await client.wait_for_active(name, interval=0.01)
    return client


def where(record: dict[str, Any]) -> tuple[str, str, int]:
    """A stored user record's place: shard, sequence number, sub-sequence number."""
    return (record["shard_id"], record["sequence_number"], record["sub_sequence_number"])


def records(n: int, keys: int = 50, tag: bytes = b"r") -> list[tuple[bytes, str]]:
    return [(tag + b"%05d" % i, f"user-{i % keys}") for i in range(n)]


async def test_every_record_is_delivered_once_where_its_result_says(server_url: str) -> None:
    client = await make_stream(server_url, "bulk", 4)
    put: list[tuple[bytes, str]] = []
    try:
        async with Producer("bulk", endpoint_url=server_url,
                            config=ProducerConfig(**FAST)) as producer:
            batches = []
            for chunk in range(6):
                chunk_records = records(1000, tag=b"c%d-" % chunk)
                put += chunk_records
                batches.append(await producer.put_many(chunk_records))
            outcomes = await asyncio.gather(*batches)
        stored = await read_back(client, "bulk")
    finally:
        await client.close()
    assert all(type(o) is BatchResult and o.ok and o.count == 1000 for o in outcomes)
    assert all(o.failures == [] and o.failed == 0 for o in outcomes)
    assert sorted((r["data"], r["partition_key"]) for r in stored) == sorted(put)
    assert all(r["in_range"] for r in stored)
    stored_at = {where(r): (r["data"], r["partition_key"]) for r in stored}
    results = [result for o in outcomes for result in o.results()]
    for (data, key), result in zip(put, results, strict=True):
        assert type(result) is RecordResult
        assert stored_at[(result.shard_id, result.sequence_number,
                          result.sub_sequence_number)] == (data, key)
    stats = producer.metrics()
    assert stats["UserRecordsReceived"] == stats["UserRecordsPut"] == 6000
    assert stats["KinesisRecordsPut"] < 100  # aggregated, as put()'s records are


async def test_put_and_put_many_share_aggregates_and_each_gets_its_own_result(
    server_url: str,
) -> None:
    client = await make_stream(server_url, "mixed", 1)
    try:
        async with Producer("mixed", endpoint_url=server_url,
                            config=ProducerConfig(record_max_buffered_time=60.0,
                                                  record_ttl=120.0)) as producer:
            single = await producer.put(b"alone", partition_key="k")
            batch = await producer.put_many([(b"a", "k"), (b"b", "k2", None)])
            last = await producer.put(b"after", partition_key="k")
            await producer.flush()
        stored = await read_back(client, "mixed")
    finally:
        await client.close()
    outcome = batch.result()
    data_at = {where(r): r["data"] for r in stored}
    results = outcome.results()
    assert [data_at[(r.shard_id, r.sequence_number, r.sub_sequence_number)]
            for r in results if r is not None] == [b"a", b"b"]
    assert [r.sub_sequence_number for r in results if r is not None] == [1, 2]
    assert single.result().sub_sequence_number == 0
    assert last.result().sub_sequence_number == 3
    assert producer.metrics()["KinesisRecordsPut"] == 1


@pytest.mark.parametrize(("bad", "error"), [
    ((b"x", ""), InvalidPartitionKey),
    ((b"x", 5), InvalidPartitionKey),
    (("text", "k"), TypeError),
    ((b"x" * (1024 * 1024), "k"), RecordTooLarge),
    ((b"x", "k", "not a number"), ValueError),
    ((b"x",), TypeError),
    (b"xk", TypeError),
])
async def test_a_bad_record_refuses_the_whole_call(
    server_url: str, bad: Any, error: type[Exception]
) -> None:
    client = await make_stream(server_url, "refused", 1)
    try:
        async with Producer("refused", endpoint_url=server_url,
                            config=ProducerConfig(**FAST)) as producer:
            good = records(10)
            with pytest.raises(error):
                producer.put_many_nowait([*good, bad, *good])
            with pytest.raises(error):
                await producer.put_many([*good, bad, *good])
            assert producer.buffered_records == 0
            assert producer.metrics()["UserRecordsReceived"] == 0
        assert await read_back(client, "refused") == []
    finally:
        await client.close()


async def test_put_many_nowait_takes_all_or_raises_buffer_full(server_url: str) -> None:
    client = await make_stream(server_url, "budget", 1)
    try:
        config = ProducerConfig(max_buffered_records=100, **FAST)
        async with Producer("budget", endpoint_url=server_url, config=config) as producer:
            first = producer.put_many_nowait(records(60))
            with pytest.raises(BufferFull):
                producer.put_many_nowait(records(41))
            assert producer.buffered_records == 60
            second = producer.put_many_nowait(records(40, tag=b"s"))
            assert producer.buffered_records == 100
            assert (await first).ok
            assert (await second).ok
        assert len(await read_back(client, "budget")) == 100
    finally:
        await client.close()


@pytest.mark.parametrize("budget", [
    {"max_buffered_records": 200},
    {"max_buffered_bytes": 1024 * 1024},  # the smallest: about 670 such records
])
async def test_a_call_larger_than_the_budget_goes_in_as_room_frees(
    server_url: str, budget: dict[str, int]
) -> None:
    """Memory stays bounded: the budget holds at every record the call adds."""
    client = await make_stream(server_url, "bounded", 2)
    try:
        config = ProducerConfig(**budget, **FAST)
        async with Producer("bounded", endpoint_url=server_url, config=config) as producer:
            core = producer._core
            add = core.add
            highest = highest_bytes = 0

            def counting_add(*args: Any) -> None:
                nonlocal highest, highest_bytes
                add(*args)
                highest = max(highest, core.buffered_records)
                highest_bytes = max(
                    highest_bytes, core.buffered_bytes + RECORD_OVERHEAD * core.buffered_records
                )

            core.add = counting_add  # type: ignore[method-assign]
            waiting = asyncio.create_task(producer.put(b"before", partition_key="k"))
            batch = await producer.put_many(records(1500))
            outcome = await batch
            await waiting
        stored = await read_back(client, "bounded")
    finally:
        await client.close()
    assert outcome.ok
    assert outcome.count == 1500
    assert 0 < highest <= config.max_buffered_records
    assert highest_bytes <= config.max_buffered_bytes
    assert len(stored) == 1501


async def test_flush_waits_for_calls_put_before_it(server_url: str) -> None:
    client = await make_stream(server_url, "flushed", 2)
    try:
        config = ProducerConfig(record_max_buffered_time=60.0, record_ttl=120.0)
        async with Producer("flushed", endpoint_url=server_url, config=config) as producer:
            batch = await producer.put_many(records(300))
            assert not batch.done()
            await producer.flush()
            assert batch.done()
            assert batch.result().ok
            assert len(await read_back(client, "flushed")) == 300
    finally:
        await client.close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_dead_endpoint_fails_every_record_within_ttl_and_close_returns() -> None:
    config = ProducerConfig(record_ttl=0.5, request_timeout=1.0, connect_timeout=0.5, **FAST)
    async with Producer("s", endpoint_url=f"http://127.0.0.1:{unused_port()}",
                        config=config) as producer:
        batch = await producer.put_many(records(100, keys=100))
        outcome = await batch
    assert producer.closed
    assert outcome.failed == 100
    assert outcome.delivered == 0
    assert not outcome.ok
    assert sorted(index for index, _ in outcome.failures) == list(range(100))
    assert {failure.code for _, failure in outcome.failures} == {"Expired"}
    assert outcome.results() == [None] * 100
    assert producer.metrics()["UserRecordExpired"] == 100


async def test_close_settles_calls_and_refuses_new_ones(server_url: str) -> None:
    client = await make_stream(server_url, "closing", 1)
    try:
        producer = Producer("closing", endpoint_url=server_url,
                            config=ProducerConfig(record_max_buffered_time=60.0, record_ttl=120.0))
        batch = await producer.put_many(records(50))
        await producer.close()
        assert batch.done()
        assert batch.result().ok
        with pytest.raises(ProducerClosed):
            await producer.put_many(records(1))
        with pytest.raises(ProducerClosed):
            producer.put_many_nowait(records(1))
    finally:
        await client.close()


async def test_an_empty_call_resolves_at_once(server_url: str) -> None:
    client = await make_stream(server_url, "empty", 1)
    try:
        async with Producer("empty", endpoint_url=server_url) as producer:
            outcome = await (await producer.put_many([]))
            assert outcome.count == 0
            assert outcome.ok
            assert outcome.results() == []
    finally:
        await client.close()


async def test_failures_are_reported_by_index_and_retries_succeed() -> None:
    async with StreamServer(port=0, state_delay_seconds=0.0, throttle_rate=0.3,
                            internal_failure_rate=0.1, error_rate=0.2, seed=5) as server:
        client = await make_stream(server.url, "faulty", 4)
        try:
            config = ProducerConfig(aggregation_enabled=False, **FAST)
            async with Producer("faulty", endpoint_url=server.url, config=config) as producer:
                put = records(600, keys=60)
                outcome = await (await producer.put_many(put))
            stored = await read_back(client, "faulty")
        finally:
            await client.close()
    assert outcome.ok
    # Failed entries were not stored, so every record is there exactly once.
    assert sorted((r["data"], r["partition_key"]) for r in stored) == sorted(put)
    results = outcome.results()
    retried = [r for r in results if r is not None and len(r.attempts) > 1]
    assert retried
    assert all(not r.attempts[0].success for r in retried)
    data_at = {where(r): r["data"] for r in stored}
    for (data, _), result in zip(put, results, strict=True):
        assert result is not None
        assert data_at[(result.shard_id, result.sequence_number,
                      result.sub_sequence_number)] == data


async def test_preserve_order_under_injected_failures() -> None:
    async with StreamServer(port=0, state_delay_seconds=0.0, throttle_rate=0.3,
                            error_rate=0.1, latency_ms=(0.0, 5.0), seed=11) as server:
        client = await make_stream(server.url, "ordered", 2)
        try:
            config = ProducerConfig(preserve_order=True, aggregation_enabled=False,
                                    collection_max_count=20, **FAST)
            async with Producer("ordered", endpoint_url=server.url, config=config) as producer:
                put: list[tuple[bytes, str]] = []
                batches = []
                for chunk in range(6):
                    chunk_records = [(b"%05d" % (chunk * 100 + i), f"k{i % 12}")
                                     for i in range(100)]
                    put += chunk_records
                    batches.append(await producer.put_many(chunk_records))
                assert all(o.ok for o in await asyncio.gather(*batches))
            stored = await read_back(client, "ordered")
        finally:
            await client.close()
    arrived: dict[str, list[bytes]] = {}
    for r in stored:
        arrived.setdefault(r["partition_key"], []).append(r["data"])
    expected: dict[str, list[bytes]] = {}
    for data, key in put:
        expected.setdefault(key, []).append(data)
    assert arrived == expected


async def test_close_while_a_call_waits_for_room_ends_it_without_hanging(
    server_url: str,
) -> None:
    client = await make_stream(server_url, "waiting", 1)
    try:
        config = ProducerConfig(max_buffered_records=100, record_max_buffered_time=60.0,
                                record_ttl=120.0)
        producer = Producer("waiting", endpoint_url=server_url, config=config)
        await producer.__aenter__()
        call = asyncio.create_task(producer.put_many(records(300)))
        await asyncio.sleep(0)  # the call runs until it waits for room
        assert producer.buffered_records == 100
        assert not call.done()  # 100 records in, waiting for room for the rest
        await producer.close()
        with pytest.raises(ProducerClosed):
            await call
        assert producer.buffered_records == 0
        stored = await read_back(client, "waiting")
    finally:
        await client.close()
    assert len(stored) == 100  # what it had put was delivered
