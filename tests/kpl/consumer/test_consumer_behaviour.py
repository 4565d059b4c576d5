"""Consumer behaviour in one process: fencing, failing handlers, settings, metrics."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from kpl.consumer import Batch, Consumer, ConsumerConfig, LeaseLost, UserRecord
from kpl.consumer.leases.memory import MemoryLeaseStore
from tests.kpl.consumer.conftest_reading import make_stream

FAST = {"idle_time_between_reads": 0.02, "initial_position": "TRIM_HORIZON"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"initial_position": "OLDEST"}, "initial_position"),
        ({"initial_position": "AT_TIMESTAMP"}, "initial_timestamp"),
        ({"max_records": 0}, "max_records"),
        ({"max_records": 10_001}, "max_records"),
        ({"failover_time": 0}, "failover_time"),
        ({"idle_time_between_reads": -1}, "idle_time_between_reads"),
        ({"max_leases_to_steal": -1}, "max_leases_to_steal"),
        ({"max_leases_per_worker": 0}, "max_leases_per_worker"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConsumerConfig(**changes)  # type: ignore[arg-type]


def test_worker_ids_are_unique_and_name_the_host() -> None:
    import socket

    first, second = ConsumerConfig(), ConsumerConfig()
    assert first.worker_id != second.worker_id
    assert first.worker_id.startswith(socket.gethostname() + ":")


async def test_a_record_not_delivered_by_a_consumer_cannot_be_checkpointed(
    server_url: str,
) -> None:
    client = await make_stream(server_url, "s", 1)
    store = MemoryLeaseStore()
    try:
        async with Consumer("s", application="a", endpoint_url=server_url, leases=store) as c:
            with pytest.raises(ValueError, match="delivered"):
                await c.checkpoint(UserRecord("k", b"d"))
            with pytest.raises(LeaseLost):
                await c.checkpoint(UserRecord("k", b"d", None, "1", 0, False, "shardId-9"))
    finally:
        await client.close()
        await store.close()


async def test_a_lost_lease_fences_checkpoints_and_stops_its_shard(server_url: str) -> None:
    client = await make_stream(server_url, "fence", 2)
    store = MemoryLeaseStore()
    config = ConsumerConfig(worker_id="me", failover_time=60.0, **FAST)  # type: ignore[arg-type]
    try:
        await client.put_record("fence", b"first", "k", str(0))
        async with Consumer(
            "fence", application="a", endpoint_url=server_url, leases=store, config=config
        ) as consumer:
            with anyio.fail_after(20):
                batch = await consumer.__anext__()
            assert batch.shard_id == "shardId-000000000000"
            # Another worker takes the lease over (as a steal or a failover would).
            lease = await store.get_lease("shardId-000000000000")
            assert lease is not None
            assert await store.replace_lease(lease.next(lease_owner="thief"), lease.lease_counter)
            with pytest.raises(LeaseLost):
                await batch.checkpoint()
            # Records of both shards: only the shard still held is delivered.
            await client.put_record("fence", b"lost", "k", str(0))
            await client.put_record("fence", b"kept", "k", str(2**127 + 1))
            with anyio.fail_after(20):
                nxt = await consumer.__anext__()
            assert [r.data for r in nxt.records] == [b"kept"]
            assert consumer.metrics()["leases"]["lost"] == 1
        assert (await store.get_lease("shardId-000000000000")).lease_owner == "thief"  # type: ignore[union-attr]
    finally:
        await client.close()
        await store.close()


async def test_a_failing_handler_stops_only_its_shard_which_resumes_from_its_checkpoint(
    server_url: str,
) -> None:
    client = await make_stream(server_url, "fail", 2)
    store = MemoryLeaseStore()
    config = ConsumerConfig(worker_id="me", failover_time=1.0, **FAST)  # type: ignore[arg-type]
    for i in range(3):
        await client.put_record("fail", f"low-{i}".encode(), "k", str(i))
        await client.put_record("fail", f"high-{i}".encode(), "k", str(2**127 + i))
    seen: Counter[bytes] = Counter()
    failed: list[str] = []
    everything = anyio.Event()

    async def handler(batch: Batch) -> None:
        if batch.shard_id == "shardId-000000000000" and not failed:
            failed.append(batch.shard_id)
            raise RuntimeError("the application failed")
        seen.update(r.data for r in batch.records)
        if len(seen) == 6:
            everything.set()

    try:
        async with (
            Consumer(
                "fail", application="a", endpoint_url=server_url, leases=store, config=config
            ) as consumer,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(consumer.run, handler)
            with anyio.fail_after(20):
                await everything.wait()
            consumer.shutdown()
            metrics = consumer.metrics()
    finally:
        await client.close()
        await store.close()
    # Nothing was checkpointed for the failed batch: its records came again, once.
    assert failed == ["shardId-000000000000"]
    assert set(seen.values()) == {1}
    assert metrics["readers_failed"] == 1
    assert metrics["leases"]["released"] >= 1
