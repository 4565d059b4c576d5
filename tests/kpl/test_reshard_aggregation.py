"""Aggregation through a reshard, end to end: a split and a merge while records are put
(with put_many, so the bulk path is covered too), against the bundled server with the
service's per-shard limits. Records put while the producer's map is being refreshed wait
for the new map and are aggregated with it; a consumer that drops sub-records outside the
shard they are stored in (as the KCL does) still reads every record."""

from __future__ import annotations

import asyncio

from kpl import KinesisClient, Producer, ProducerConfig
from server import StreamServer
from tests.support import read_back

RECORDS = 8_000
CHUNK = 500


async def reshard(client: KinesisClient, name: str, step: str) -> None:
    shards = await client.shard_ranges(name)
    if step == "split":
        shard_id, start, end = shards[0]
        await client.split_shard(name, shard_id, (start + end) // 2)
    else:
        (left, _, _), (right, _, _) = shards[-2:]
        await client.merge_shards(name, left, right)
    async with asyncio.timeout(10):
        await client.wait_for_active(name, interval=0.01)


async def test_split_and_merge_under_load_keep_records_aggregated_and_none_missing() -> None:
    async with StreamServer(port=0, state_delay_seconds=0.0) as server:
        client = KinesisClient(server.url, region="us-east-1", max_attempts=50, backoff=0.02)
        try:
            await client.create_stream("resharded", 4)
            async with asyncio.timeout(10):
                await client.wait_for_active("resharded", interval=0.01)
            put = [(b"%06d" % i + b"x" * 90, f"user-{i % 2000}") for i in range(RECORDS)]
            async with Producer("resharded", endpoint_url=server.url,
                                config=ProducerConfig()) as producer:
                batches = []
                for n, start in enumerate(range(0, RECORDS, CHUNK)):
                    batches.append(await producer.put_many(put[start:start + CHUNK]))
                    if n == 4:
                        await reshard(client, "resharded", "split")
                    if n == 9:
                        await reshard(client, "resharded", "merge")
                    await asyncio.sleep(0.01)  # records keep coming while the map changes
                outcomes = await asyncio.gather(*batches)
            stats = producer.metrics()
            # As a KCL reads: sub-records outside the shard's range are dropped.
            found = {r["data"] for r in await read_back(client, "resharded") if r["in_range"]}
        finally:
            await client.close()
    assert all(outcome.ok for outcome in outcomes)
    assert stats["ShardMapMispredictions"] > 0  # the reshards happened under load
    assert {data for data, _ in put} <= found  # nothing missing for a range-checking reader
    # Without the hold, records put during each refresh went out plain (about 1.5 user
    # records per Kinesis record in the same scenario at 40,000 records).
    assert stats["UserRecordsPerKinesisRecord"] >= 50, stats


async def test_records_put_during_a_slow_refresh_are_still_aggregated() -> None:
    """Every call is answered 150 ms late (a loaded machine, a distant endpoint), so the
    ListShards after the split takes longer than record_max_buffered_time while records
    keep coming: they wait for the new map (shard_map_hold_time) and are aggregated."""
    async with StreamServer(port=0, state_delay_seconds=0.0,
                            latency_ms=(150.0, 150.0)) as server:
        client = KinesisClient(server.url, region="us-east-1", max_attempts=50, backoff=0.02)
        try:
            await client.create_stream("slow", 4)
            async with asyncio.timeout(10):
                await client.wait_for_active("slow", interval=0.01)
            count, chunk = 8_000, 250
            put = [(b"%06d" % i + b"x" * 90, f"user-{i % 2000}") for i in range(count)]
            async with Producer("slow", endpoint_url=server.url,
                                config=ProducerConfig()) as producer:
                batches = []
                for n, start in enumerate(range(0, count, chunk)):
                    batches.append(await producer.put_many(put[start:start + chunk]))
                    if n == 4:
                        await reshard(client, "slow", "split")
                    await asyncio.sleep(0.02)  # records keep coming during the refresh
                outcomes = await asyncio.gather(*batches)
            stats = producer.metrics()
            # As a KCL reads: sub-records outside the shard's range are dropped.
            found = {r["data"] for r in await read_back(client, "slow") if r["in_range"]}
        finally:
            await client.close()
    assert all(outcome.ok for outcome in outcomes)
    assert stats["ShardMapMispredictions"] > 0
    assert stats["ShardMapRefreshes"] == 2  # the first map and one after the split
    assert {data for data, _ in put} <= found
    assert stats["UserRecordsPerKinesisRecord"] >= 50, stats
