"""The producer end to end: real aiohttp transport, SigV4, the bundled server on port 0."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kpl import KinesisClient, Producer, ProducerConfig, RecordFailed
from server import StreamServer
from tests.support import read_back

FAST: dict[str, Any] = {"record_max_buffered_time": 0.01, "min_backoff": 0.0,
                        "max_backoff": 0.05}


@dataclass
class Stream:
    url: str
    name: str
    client: KinesisClient


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


@pytest.fixture
async def stream(server_url: str) -> AsyncIterator[Stream]:
    client = await make_stream(server_url, "e2e", 4)
    yield Stream(server_url, "e2e", client)
    await client.close()


async def test_records_delivered_and_read_back_through_reference(stream: Stream) -> None:
    config = ProducerConfig(**FAST)
    async with Producer(stream.name, endpoint_url=stream.url, region="us-east-1",
                        config=config) as producer:
        puts = []
        for i in range(5000):
            key, data = f"user-{i % 500}", b"payload-%05d" % i
            puts.append((key, data, await producer.put(data, partition_key=key)))
        results = await asyncio.gather(*(f for _, _, f in puts))
    stored = await read_back(stream.client, stream.name)
    assert sorted((r["partition_key"], r["data"]) for r in stored) == sorted(
        (k, d) for k, d, _ in puts)
    assert all(r["in_range"] for r in stored)
    where = {(r["partition_key"], r["data"]): r for r in stored}
    for (key, data, _), result in zip(puts, results, strict=True):
        found = where[(key, data)]
        assert result.shard_id == found["shard_id"]
        assert result.sequence_number == found["sequence_number"]
        assert result.sub_sequence_number == found["sub_sequence_number"]
    stats = producer.metrics()
    assert stats["UserRecordsPut"] == 5000
    assert stats["UserRecordsPerKinesisRecord"] > 10  # aggregated per shard


@pytest.mark.parametrize("started_by", ["first put", "async with"])
async def test_a_fresh_producer_aggregates_its_first_records(
    stream: Stream, started_by: str
) -> None:
    """Records put before the shard map arrives wait for it instead of going out plain."""
    producer = Producer(stream.name, endpoint_url=stream.url, region="us-east-1",
                        config=ProducerConfig(**FAST))
    try:
        if started_by == "async with":
            await producer.__aenter__()
        futures = [await producer.put(b"r%04d" % i, partition_key=f"user-{i % 50}")
                   for i in range(3000)]
        await producer.flush()
        assert all(f.result().shard_id for f in futures)
    finally:
        await producer.close()
    stats = producer.metrics()
    assert stats["UserRecordsPut"] == 3000
    # 3000 small records fit in one aggregated record per shard and per buffered-time
    # window: far fewer Kinesis records than user records (3000 if sent plain).
    assert stats["KinesisRecordsPut"] <= 40, stats
    stored = await read_back(stream.client, stream.name)
    assert len(stored) == 3000
    assert all(r["in_range"] for r in stored)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_dead_endpoint_fails_records_within_ttl_and_close_returns() -> None:
    # How soon close returns is checked exactly, on virtual time, in test_producer.py.
    config = ProducerConfig(record_ttl=0.5, request_timeout=1.0, connect_timeout=0.5, **FAST)
    async with Producer("s", endpoint_url=f"http://127.0.0.1:{unused_port()}",
                        config=config) as producer:
        futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(100)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert producer.closed
    for outcome in outcomes:  # retried (refused connections are transient) until the TTL
        assert isinstance(outcome, RecordFailed)
        assert outcome.code == "Expired"
        # The detail names the last error when a send was still pending at the deadline,
        # or the failed ListShards when the record expired in the unrouted queue (which
        # of the two depends on where the deadline caught it: both are expected here).
        assert re.fullmatch(r"not delivered within record_ttl of 0\.5s"
                            r"( \((last error|no shard map: ListShards failed:) NetworkError: "
                            r"network error .*\))?", outcome.message), outcome.message
        assert outcome.attempts
        assert all(a.error_code == "NetworkError" for a in outcome.attempts)


async def test_unknown_stream_fails_at_once(server_url: str) -> None:
    async with Producer("no-such-stream", endpoint_url=server_url,
                        config=ProducerConfig(**FAST)) as producer:
        future = await producer.put(b"x", partition_key="k")
        with pytest.raises(RecordFailed) as caught:
            await future
    # Failed by the stream's refusal of its first send, not expired at the 30 s TTL.
    assert caught.value.code == "ResourceNotFoundException"
    assert [a.error_code for a in caught.value.attempts] == ["ResourceNotFoundException"]


async def test_backpressure_blocks_put_until_acks_free_the_budget(stream: Stream) -> None:
    config = ProducerConfig(max_buffered_records=200, **FAST)
    async with Producer(stream.name, endpoint_url=stream.url, config=config) as producer:
        # put_nowait never yields: the budget fills before anything is sent.
        futures = [producer.put_nowait(b"r%d" % i, partition_key=f"k{i}") for i in range(200)]
        assert producer.buffered_records == 200
        blocked = asyncio.create_task(producer.put(b"late", partition_key="k"))
        await asyncio.sleep(0)
        assert not blocked.done()
        late = await blocked  # returns once acknowledgements made room
        assert producer.buffered_records <= 200
        await asyncio.gather(*futures, late)
    assert len(await read_back(stream.client, stream.name)) == 201


async def test_flush_sends_and_waits_for_everything_put_before(stream: Stream) -> None:
    config = ProducerConfig(record_max_buffered_time=60.0, record_ttl=120.0)  # only flush() sends
    async with Producer(stream.name, endpoint_url=stream.url, config=config) as producer:
        futures = [await producer.put(b"f%d" % i, partition_key=f"k{i}") for i in range(300)]
        assert not any(f.done() for f in futures)
        await producer.flush()
        assert all(f.done() and f.exception() is None for f in futures)
        assert len(await read_back(stream.client, stream.name)) == 300


async def test_reshard_under_load(server_url: str) -> None:
    client = await make_stream(server_url, "resharded", 2)
    config = ProducerConfig(shard_map_refresh_min_interval=0.0, **FAST)
    try:
        async with Producer("resharded", endpoint_url=server_url, config=config) as producer:
            puts = []
            for i in range(3000):
                key, data = f"user-{i % 300}", b"%05d" % i
                puts.append((key, data, await producer.put(data, partition_key=key)))
                if i == 1000:
                    shard_id, start, end = (await client.shard_ranges("resharded"))[0]
                    await client.split_shard("resharded", shard_id, (start + end) // 2)
                if i % 100 == 0:
                    await asyncio.sleep(0)  # let the sender work while we produce
            results = await asyncio.gather(*(f for _, _, f in puts))
        stored = await read_back(client, "resharded")
        children = {s for s, _, _ in await client.shard_ranges("resharded")} - {
            "shardId-000000000001"}
    finally:
        await client.close()
    assert len(children) == 2
    # Each result names where its record is stored, in a shard whose range holds its key
    # (a record that landed out of range was retried, so there may be extra copies).
    stored_at = {(r["shard_id"], r["sequence_number"], r["sub_sequence_number"]):
                 (r["partition_key"], r["data"], r["in_range"]) for r in stored}
    for (key, data, _), result in zip(puts, results, strict=True):
        where = (result.shard_id, result.sequence_number, result.sub_sequence_number)
        assert stored_at[where] == (key, data, True)
    assert children <= {r.shard_id for r in results}  # records reached the children


async def test_injected_failures_are_retried_to_success() -> None:
    # Per-entry throttles and internal failures, and whole-request 500s, from the server.
    async with StreamServer(port=0, state_delay_seconds=0.0, throttle_rate=0.3,
                            internal_failure_rate=0.1, error_rate=0.2, seed=5) as server:
        client = await make_stream(server.url, "faulty", 4)
        try:
            config = ProducerConfig(aggregation_enabled=False, **FAST)
            async with Producer("faulty", endpoint_url=server.url, config=config) as producer:
                puts = []
                for i in range(600):
                    key, data = f"k{i % 60}", b"%04d" % i
                    puts.append((key, data, await producer.put(data, partition_key=key)))
                results = await asyncio.gather(*(f for _, _, f in puts))
            stored = await read_back(client, "faulty")
        finally:
            await client.close()
    # Failed entries were not stored, so every record is there exactly once.
    assert sorted((r["partition_key"], r["data"]) for r in stored) == sorted(
        (k, d) for k, d, _ in puts)
    codes = {a.error_code for r in results for a in r.attempts if not a.success}
    assert "ProvisionedThroughputExceededException" in codes
    assert "InternalFailure" in codes
    stats = producer.metrics()
    assert stats["RetriesPerRecord"] > 0
    assert stats["UserRecordsPut"] == 600


async def test_preserve_order_under_injected_failures() -> None:
    async with StreamServer(port=0, state_delay_seconds=0.0, throttle_rate=0.3,
                            error_rate=0.1, latency_ms=(0.0, 5.0), seed=11) as server:
        client = await make_stream(server.url, "ordered", 2)
        try:
            config = ProducerConfig(preserve_order=True, aggregation_enabled=False,
                                    collection_max_count=20, **FAST)
            async with Producer("ordered", endpoint_url=server.url, config=config) as producer:
                puts = []
                for i in range(600):
                    key, data = f"k{i % 12}", b"%05d" % i
                    puts.append((key, data, await producer.put(data, partition_key=key)))
                    if i % 50 == 0:
                        await asyncio.sleep(0)  # interleave sending with producing
                await asyncio.gather(*(f for _, _, f in puts))
            stored = await read_back(client, "ordered")  # in shard order, sub-records in order
        finally:
            await client.close()
    arrived: dict[str, list[bytes]] = {}
    for r in stored:
        arrived.setdefault(r["partition_key"], []).append(r["data"])
    expected: dict[str, list[bytes]] = {}
    for key, data, _ in puts:
        expected.setdefault(key, []).append(data)
    assert arrived == expected


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "produce.py"


async def test_example_produce_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("example_produce", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    await module.main()
    out = capsys.readouterr().out
    assert "delivered 10000, failed 0" in out


@pytest.fixture
async def unlimited_url() -> AsyncIterator[str]:
    """A server with its throughput limits off: these tests are about sizes, not rates."""
    async with StreamServer(port=0, state_delay_seconds=0.0, limits="off") as server:
        yield server.url


async def test_a_large_record_stream_takes_large_records_with_the_default_config(
    unlimited_url: str,
) -> None:
    """The producer asks the stream its maximum record size (DescribeStreamSummary): on a
    stream of 10 MiB records the default config takes a 3 MiB record, even as the very
    first put() of a producer that was not started yet."""
    server_url = unlimited_url
    client = KinesisClient(server_url, region="us-east-1")
    try:
        await client.call("CreateStream", {"StreamName": "big", "ShardCount": 1,
                                           "MaxRecordSizeInKiB": 10240})
        async with asyncio.timeout(10):
            await client.wait_for_active("big", interval=0.01)
        producer = Producer("big", endpoint_url=server_url, region="us-east-1",
                            config=ProducerConfig(**FAST, rate_limit=10_000.0))
        try:
            large = bytes(range(256)) * (3 * 4096)  # 3 MiB
            future = await producer.put(large, partition_key="big-one")
            small = [await producer.put(b"s%d" % i, partition_key=f"k{i}") for i in range(50)]
            await producer.flush()
        finally:
            await producer.close()
        assert future.result().sub_sequence_number == 0
        assert all(f.result() for f in small)
        assert producer.metrics()["UserRecordsPut"] == 51
        read = await read_back(client, "big")
        assert [r["data"] for r in read if r["partition_key"] == "big-one"] == [large]
    finally:
        await client.close()


async def test_requests_stay_within_a_standard_streams_limit_whatever_the_config(
    unlimited_url: str,
) -> None:
    """collection_max_size=10 MiB is for large-record streams; on a standard stream a
    10 MiB PutRecords would be refused whole, so requests keep to its 5 MiB."""
    client = await make_stream(unlimited_url, "standard", 2)
    config = ProducerConfig(**FAST, collection_max_size=10 * 1024 * 1024, rate_limit=10_000.0)
    payload = b"p" * (900 * 1024)
    try:
        async with Producer("standard", endpoint_url=unlimited_url, region="us-east-1",
                            config=config) as producer:
            futures = [await producer.put(payload, partition_key=f"k{i}") for i in range(12)]
            await producer.flush()
        failures = [f.exception() for f in futures if f.exception() is not None]
        assert failures == []
        assert producer.metrics()["PutRecordsRequests"] >= 3  # 10.8 MB in <= 5 MiB requests
        assert len(await read_back(client, "standard")) == 12
    finally:
        await client.close()
