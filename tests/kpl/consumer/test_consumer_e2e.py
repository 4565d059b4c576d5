"""The Consumer against the real stream server: delivery, checkpoints, reshards, handover."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from kpl.client import KinesisClient
from kpl.consumer import Batch, Consumer, ConsumerConfig, UserRecord
from kpl.protocol.hashing import partition_key_hash
from tests.kpl.consumer.conftest_reading import (  # noqa: F401  (fixtures)
    lease_url,
    make_stream,
    put_aggregate,
    server_url,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "consume.py"
FAST = {"failover_time": 1.0, "idle_time_between_reads": 0.02, "initial_position": "TRIM_HORIZON"}


def _config(worker: str, retrieval: str, **overrides: object) -> ConsumerConfig:
    options = {**FAST, "retrieval": retrieval, **overrides}
    return ConsumerConfig(worker_id=worker, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["polling", "fanout"])
def retrieval(request: pytest.FixtureRequest) -> str:
    """Each end-to-end test runs with GetRecords polling and with enhanced fan-out."""
    mode: str = request.param
    return mode


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[KinesisClient]:  # noqa: F811
    async with KinesisClient(server_url, region="us-east-1") as c:
        yield c


async def _collect(consumer: Consumer, count: int, *, checkpoint: bool = True) -> list[UserRecord]:
    got: list[UserRecord] = []
    with anyio.fail_after(20):
        async for batch in consumer:
            got.extend(batch.records)
            if checkpoint:
                await batch.checkpoint()
            if len(got) >= count:
                break
    return got


def _in_order(records: list[UserRecord]) -> None:
    by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        assert r.shard_id is not None
        assert r.sequence_number is not None
        by_shard[r.shard_id].append((int(r.sequence_number), r.sub_sequence_number))
    for positions in by_shard.values():
        assert positions == sorted(positions)


async def test_delivers_plain_and_aggregated_records_tagged_with_their_shard(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
    retrieval: str,
) -> None:
    client = await make_stream(server_url, "two", 2)
    try:
        for i in range(20):
            await client.put_record("two", f"plain-{i}".encode(), f"key-{i}")
        # Sub-records that all hash into the first shard, as the KPL aggregates them.
        low = [k for k in (f"sub-{i}" for i in range(50)) if partition_key_hash(k) < 2**127][:3]
        await put_aggregate(client, "two", low, [b"A", b"B", b"C"], partition_key_hash(low[0]))
        async with Consumer(
            "two",
            application="app",
            endpoint_url=server_url,
            leases=lease_url,
            config=_config("w1", retrieval),
        ) as consumer:
            got = await _collect(consumer, 23)
            metrics = consumer.metrics()
    finally:
        await client.close()
    assert sorted(r.data for r in got) == sorted(
        [f"plain-{i}".encode() for i in range(20)] + [b"A", b"B", b"C"]
    )
    _in_order(got)
    assert {r.shard_id for r in got} == {"shardId-000000000000", "shardId-000000000001"}
    assert all(r.approximate_arrival_timestamp for r in got)
    assert [r.sub_sequence_number for r in got if r.aggregated] == [0, 1, 2]
    assert metrics["records"] == 23
    assert metrics["leases"]["taken"] == 2


async def test_a_restart_resumes_after_the_checkpointed_sub_record(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
    retrieval: str,
) -> None:
    client = await make_stream(server_url, "one", 1)
    keys = [f"k{i}" for i in range(6)]
    try:
        await put_aggregate(client, "one", keys, [k.encode() for k in keys], 1)
        await client.put_record("one", b"after", "z")
        args = {"application": "app", "endpoint_url": server_url, "leases": lease_url}
        async with Consumer("one", config=_config("w1", retrieval), **args) as consumer:  # type: ignore[arg-type]
            first = await _collect(consumer, 1, checkpoint=False)
            # Processed up to the third sub-record only.
            await consumer.checkpoint(first[2])
        async with Consumer("one", config=_config("w2", retrieval), **args) as consumer:  # type: ignore[arg-type]
            second = await _collect(consumer, 4)
    finally:
        await client.close()
    assert [r.data for r in second] == [b"k3", b"k4", b"k5", b"after"]


async def test_children_follow_their_parent_and_keys_stay_in_order(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
    retrieval: str,
) -> None:
    client = await make_stream(server_url, "split", 1)
    keys = [f"key-{i}" for i in range(30)]
    try:
        for k in keys:
            await client.put_record("split", f"{k}:0".encode(), k)
        await client.split_shard("split", "shardId-000000000000", 2**127)
        with anyio.fail_after(10):
            await client.wait_for_active("split", interval=0.01)
        for k in keys:
            await client.put_record("split", f"{k}:1".encode(), k)
        ended: list[str] = []
        async with Consumer(
            "split",
            application="app",
            endpoint_url=server_url,
            leases=lease_url,
            config=_config("w1", retrieval),
        ) as consumer:
            got: list[UserRecord] = []
            seen = anyio.Event()

            async def handle(batch: Batch) -> None:
                got.extend(batch.records)
                if len(got) >= 60:
                    seen.set()

            async def on_end(shard_id: str) -> None:
                ended.append(shard_id)

            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: consumer.run(handle, on_shard_ended=on_end))
                with anyio.fail_after(20):
                    await seen.wait()
                consumer.shutdown()
    finally:
        await client.close()
    assert ended == ["shardId-000000000000"]
    per_key: dict[str, list[str]] = defaultdict(list)
    for r in got:
        per_key[r.partition_key].append(r.data.decode().split(":")[1])
        if r.shard_id != "shardId-000000000000":
            expected = (
                "shardId-000000000001"
                if partition_key_hash(r.partition_key) < 2**127
                else "shardId-000000000002"
            )
            assert r.shard_id == expected
    assert per_key == {k: ["0", "1"] for k in keys}


async def test_a_merge_child_waits_for_both_parents_across_workers(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
    retrieval: str,
) -> None:
    client = await make_stream(server_url, "merge", 2)
    keys = [f"key-{i}" for i in range(30)]
    try:
        for k in keys:
            await client.put_record("merge", f"{k}:0".encode(), k)
        await client.merge_shards("merge", "shardId-000000000000", "shardId-000000000001")
        with anyio.fail_after(10):
            await client.wait_for_active("merge", interval=0.01)
        for k in keys:
            await client.put_record("merge", f"{k}:1".encode(), k)
        got: list[UserRecord] = []
        seen = anyio.Event()

        async def handle(batch: Batch) -> None:
            got.extend(batch.records)
            if len(got) >= 60:
                seen.set()

        # Two workers: the parents may be read by different ones; the child by either,
        # only once both parents reached SHARD_END.
        args = {"application": "app", "endpoint_url": server_url, "leases": lease_url}
        async with (
            Consumer("merge", config=_config("w1", retrieval), **args) as one,  # type: ignore[arg-type]
            Consumer("merge", config=_config("w2", retrieval), **args) as two,  # type: ignore[arg-type]
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(one.run, handle)
            tg.start_soon(two.run, handle)
            with anyio.fail_after(20):
                await seen.wait()
            one.shutdown()
            two.shutdown()
    finally:
        await client.close()
    # At least once (a lease stolen while the two workers balance may repeat a batch):
    # the first deliveries are in order per key, and the parents' all come first.
    first = list(dict.fromkeys(r.data for r in got))
    per_key: dict[str, list[str]] = defaultdict(list)
    for data in first:
        key, n = data.decode().split(":")
        per_key[key].append(n)
    assert per_key == {k: ["0", "1"] for k in keys}
    assert [d.decode().split(":")[1] for d in first] == ["0"] * 30 + ["1"] * 30


async def test_graceful_exit_hands_the_shards_over_at_once(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
    retrieval: str,
) -> None:
    client = await make_stream(server_url, "hand", 2)
    try:
        for i in range(10):
            await client.put_record("hand", f"r{i}".encode(), f"key-{i}")
        # A failover time far beyond the test's deadline: only a release can hand over.
        slow = {"failover_time": 600.0}
        args = {"application": "app", "endpoint_url": server_url, "leases": lease_url}
        async with Consumer("hand", config=_config("w1", retrieval, **slow), **args) as first:  # type: ignore[arg-type]
            got = await _collect(first, 10)
        for i in range(10, 15):
            await client.put_record("hand", f"r{i}".encode(), f"key-{i}")
        async with Consumer("hand", config=_config("w2", retrieval, **slow), **args) as second:  # type: ignore[arg-type]
            rest = await _collect(second, 5)
    finally:
        await client.close()
    assert sorted(r.data for r in got) == sorted(f"r{i}".encode() for i in range(10))
    # Nothing checkpointed is delivered again.
    assert sorted(r.data for r in rest) == sorted(f"r{i}".encode() for i in range(10, 15))


async def test_example_consume(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("example_consume", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    await module.main()
    out = capsys.readouterr().out
    handled = int(out.split()[1])
    assert handled >= 2_000  # at least once: a lease stolen mid-batch may repeat some
    assert out.strip().endswith("records from 4 shards")
