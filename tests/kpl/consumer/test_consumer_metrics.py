"""kpl.metrics on a Consumer reading from the real server: the scraped numbers are what
was delivered."""

from __future__ import annotations

from hashlib import md5
from typing import Literal

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kpl.consumer import Consumer, ConsumerConfig
from kpl.metrics import register_consumer
from kpl.protocol.aggregation import MAGIC
from tests.kpl.consumer.conftest_reading import (  # noqa: F401  (fixtures)
    lease_url,
    make_stream,
    server_url,
)

SHARDS = ("shardId-000000000000", "shardId-000000000001")


@pytest.mark.parametrize("retrieval", ["polling", "fanout"])
async def test_scraped_counters_equal_what_was_delivered(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
    retrieval: Literal["polling", "fanout"],
) -> None:
    client = await make_stream(server_url, "metered", 2)
    try:
        for i in range(30):
            await client.put_record("metered", b"x" * (i + 1), f"key-{i}")
        config = ConsumerConfig(
            worker_id="w1",
            failover_time=1.0,
            idle_time_between_reads=0.02,
            initial_position="TRIM_HORIZON",
            retrieval=retrieval,
        )
        registry = CollectorRegistry()
        async with Consumer(
            "metered", application="app", endpoint_url=server_url, leases=lease_url, config=config
        ) as consumer:
            register_consumer(consumer, registry)
            records: dict[str, int] = dict.fromkeys(SHARDS, 0)
            data: dict[str, int] = dict.fromkeys(SHARDS, 0)
            checkpoints = 0
            with anyio.fail_after(20):
                async for batch in consumer:
                    records[batch.shard_id] += len(batch.records)
                    data[batch.shard_id] += sum(len(r.data) for r in batch.records)
                    await batch.checkpoint()
                    checkpoints += 1
                    if sum(records.values()) >= 30:
                        break
            direct = consumer.metrics()
            get = registry.get_sample_value
            base = {"stream_name": "metered", "application": "app", "worker_id": "w1"}
            for shard_id in SHARDS:
                shard = {**base, "shard_id": shard_id}
                assert get("kpl_records_processed_total", shard) == records[shard_id]
                assert get("kpl_data_bytes_processed_total", shard) == data[shard_id]
                assert (
                    get("kpl_millis_behind_latest", shard)
                    == (direct["shards"][shard_id]["millis_behind_latest"])
                )
            assert sum(records.values()) == 30
            assert sum(data.values()) == sum(range(1, 31))
            assert get("kpl_current_leases", base) == 2
            assert get("kpl_taken_leases_total", base) == 2
            assert get("kpl_stolen_leases_total", base) == 0
            assert get("kpl_lost_leases_total", base) == 0
            assert get("kpl_checkpoints_total", base) == checkpoints
            text = generate_latest(registry)
    finally:
        await client.close()
    assert b"# TYPE kpl_records_processed_total counter" in text
    assert b"# TYPE kpl_millis_behind_latest gauge" in text


async def test_an_aggregate_that_does_not_decode_is_delivered_as_data_and_counted(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
) -> None:
    # The aggregation header and a valid checksum around a body that is no AggregatedRecord.
    body = b"\xff\xff"
    bad = MAGIC + body + md5(body).digest()
    client = await make_stream(server_url, "damaged", 1)
    try:
        await client.put_record("damaged", bad, "odd")
        await client.put_record("damaged", b"fine", "even")
        config = ConsumerConfig(
            worker_id="w1", idle_time_between_reads=0.02, initial_position="TRIM_HORIZON"
        )
        registry = CollectorRegistry()
        async with Consumer(
            "damaged", application="app", endpoint_url=server_url, leases=lease_url, config=config
        ) as consumer:
            register_consumer(consumer, registry)
            delivered: list[tuple[str, bytes, bool]] = []
            with anyio.fail_after(20):
                async for batch in consumer:
                    delivered += [(r.partition_key, r.data, r.aggregated) for r in batch.records]
                    await batch.checkpoint()
                    if len(delivered) >= 2:
                        break
            shard = consumer.metrics()["shards"][SHARDS[0]]
            scraped = registry.get_sample_value(
                "kpl_malformed_aggregates_total",
                {"stream_name": "damaged", "application": "app", "worker_id": "w1",
                 "shard_id": SHARDS[0]},
            )
    finally:
        await client.close()
    assert delivered == [("odd", bad, False), ("even", b"fine", False)]
    assert shard["malformed_aggregates"] == 1
    assert scraped == 1
