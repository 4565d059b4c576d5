"""Two-phase checkpoints, lifecycle hooks for both ways of consuming, a Consumer left open,
and two live workers with one id — each against the real stream server."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator

import anyio
import pytest

from kpl.client import KinesisClient
from kpl.consumer import (
    Batch,
    Consumer,
    ConsumerConfig,
    ConsumerHooks,
    DuplicateWorkerId,
    LeaseLost,
    PendingCheckpoint,
    ShardStarted,
    UserRecord,
)
from kpl.consumer.leases.base import TRIM_HORIZON
from kpl.consumer.leases.memory import MemoryLeaseStore
from server import StreamServer
from tests.kpl.consumer.conftest_reading import make_stream

FAST = {"failover_time": 1.0, "idle_time_between_reads": 0.02, "initial_position": "TRIM_HORIZON"}
SHARD = "shardId-000000000000"


def _config(worker: str) -> ConsumerConfig:
    return ConsumerConfig(worker_id=worker, **FAST)  # type: ignore[arg-type]


@pytest.fixture
async def stream(server_url: str) -> AsyncIterator[KinesisClient]:
    """A one-shard stream named "s" holding three records."""
    client = await make_stream(server_url, "s", 1)
    for i in range(3):
        await client.put_record("s", f"r{i}".encode(), "k")
    yield client
    await client.close()


def _consumer(url: str, store: MemoryLeaseStore, worker: str, **options: object) -> Consumer:
    return Consumer(
        "s", application="a", endpoint_url=url, leases=store, config=_config(worker), **options  # type: ignore[arg-type]
    )


async def _next(consumer: Consumer) -> Batch:
    with anyio.fail_after(20):
        return await consumer.__anext__()


async def _steal(store: MemoryLeaseStore, shard_id: str = SHARD) -> None:
    lease = await store.get_lease(shard_id)
    assert lease is not None
    assert await store.replace_lease(lease.next(lease_owner="thief"), lease.lease_counter)


# -- two-phase checkpoints --------------------------------------------------------------------


async def test_a_prepared_checkpoint_is_pending_until_committed(
    server_url: str, stream: KinesisClient
) -> None:
    store = MemoryLeaseStore()
    async with _consumer(server_url, store, "w") as consumer:
        batch = await _next(consumer)
        last = batch.records[-1]
        prepared = await batch.prepare_checkpoint(b"tx-17")
        assert (prepared.shard_id, prepared.sequence_number, prepared.state) == (
            SHARD,
            last.sequence_number,
            b"tx-17",
        )
        lease = await store.get_lease(SHARD)
        assert lease is not None
        assert lease.checkpoint == TRIM_HORIZON  # the committed one has not moved
        assert lease.pending_checkpoint == last.sequence_number
        assert lease.pending_checkpoint_state == b"tx-17"
        await prepared.checkpoint()
        lease = await store.get_lease(SHARD)
        assert lease is not None
        assert (lease.checkpoint, lease.pending_checkpoint) == (last.sequence_number, None)
        assert lease.pending_checkpoint_state is None
        # Prepared through one record, by the consumer: a plain checkpoint clears it.
        assert consumer.metrics()["leases"]["prepared"] == 1
    await store.close()


async def test_a_plain_checkpoint_clears_a_pending_one_and_bad_state_is_refused(
    server_url: str, stream: KinesisClient
) -> None:
    store = MemoryLeaseStore()
    async with _consumer(server_url, store, "w") as consumer:
        batch = await _next(consumer)
        with pytest.raises(TypeError, match="bytes"):
            await consumer.prepare_checkpoint(batch.records[0], "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="delivered"):
            await consumer.prepare_checkpoint(UserRecord("k", b"d"))
        await consumer.prepare_checkpoint(batch.records[-1])
        lease = await store.get_lease(SHARD)
        assert lease is not None
        assert lease.pending_checkpoint == batch.records[-1].sequence_number
        await consumer.checkpoint(batch.records[0])
        lease = await store.get_lease(SHARD)
        assert lease is not None
        assert lease.pending_checkpoint is None
        assert lease.checkpoint == batch.records[0].sequence_number
        # At or below the checkpoint there is nothing to prepare: nothing is written.
        counter = lease.lease_counter
        stale = await consumer.prepare_checkpoint(batch.records[0])
        after = await store.get_lease(SHARD)
        assert after is not None
        assert after.pending_checkpoint is None
        assert after.lease_counter in (counter, counter + 1)  # a renewal may land meanwhile
        await stale.checkpoint()
        final = await store.get_lease(SHARD)
        assert final is not None
        assert final.checkpoint == batch.records[0].sequence_number
    await store.close()


async def test_prepare_and_commit_are_fenced_by_the_lease(
    server_url: str, stream: KinesisClient
) -> None:
    store = MemoryLeaseStore()
    async with _consumer(server_url, store, "w") as consumer:
        batch = await _next(consumer)
        prepared = await batch.prepare_checkpoint()
        await _steal(store)
        with pytest.raises(LeaseLost):
            await prepared.checkpoint()
        with pytest.raises(LeaseLost):
            await batch.prepare_checkpoint()
    lease = await store.get_lease(SHARD)
    assert lease is not None
    assert lease.lease_owner == "thief"
    assert lease.checkpoint == TRIM_HORIZON
    await store.close()


async def test_a_worker_taking_over_learns_the_pending_checkpoint(
    server_url: str, stream: KinesisClient
) -> None:
    store = MemoryLeaseStore()
    async with _consumer(server_url, store, "first") as first:
        batch = await _next(first)
        prepared = await batch.prepare_checkpoint(b"upload-3")
        # The first worker stops before committing (and before asking for more).
    started: list[ShardStarted] = []

    async def on_shard_started(info: ShardStarted) -> None:
        started.append(info)

    hooks = ConsumerHooks(on_shard_started=on_shard_started)
    async with _consumer(server_url, store, "second", hooks=hooks) as second:
        again = await _next(second)
        expected = PendingCheckpoint(prepared.sequence_number, 0, b"upload-3")
        assert again.pending_checkpoint == expected
        assert started == [ShardStarted(SHARD, TRIM_HORIZON, 0, expected)]
        # Nothing was committed: the records come again, and a checkpoint clears it.
        assert [r.data for r in again.records] == [r.data for r in batch.records]
        await again.checkpoint()
    lease = await store.get_lease(SHARD)
    assert lease is not None
    assert lease.pending_checkpoint is None
    await store.close()


# -- hooks for both forms ---------------------------------------------------------------------


class Recorder:
    """Hooks that record their calls, and a way to await one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._changed = anyio.Event()

    def _record(self, kind: str, shard_id: str) -> None:
        self.calls.append((kind, shard_id))
        self._changed.set()
        self._changed = anyio.Event()

    async def called(self, kind: str, shard_id: str) -> None:
        with anyio.fail_after(20):
            while (kind, shard_id) not in self.calls:
                await self._changed.wait()

    def hooks(self) -> ConsumerHooks:
        async def started(info: ShardStarted) -> None:
            self._record("started", info.shard_id)

        async def lost(shard_id: str) -> None:
            self._record("lost", shard_id)

        async def ended(shard_id: str) -> None:
            self._record("ended", shard_id)

        async def shutdown(shard_id: str) -> None:
            self._record("shutdown", shard_id)

        return ConsumerHooks(started, lost, ended, shutdown)


async def test_the_iterator_form_gets_the_lifecycle_hooks(server_url: str) -> None:
    client = await make_stream(server_url, "s", 2)
    store = MemoryLeaseStore()
    recorder = Recorder()
    other = "shardId-000000000001"
    try:
        await client.put_record("s", b"low", "k", "0")
        await client.put_record("s", b"high", "k", str(2**127 + 1))
        async with _consumer(server_url, store, "w", hooks=recorder.hooks()) as consumer:
            seen: set[str] = set()
            while len(seen) < 2:
                batch = await _next(consumer)
                seen.add(batch.shard_id)
            await _steal(store, other)
            await recorder.called("lost", other)
    finally:
        await client.close()
        await store.close()
    assert sorted(recorder.calls) == sorted(
        [("started", SHARD), ("started", other), ("lost", other), ("shutdown", SHARD)]
    )


async def test_the_iterator_form_hears_of_a_shard_ended_by_a_split(server_url: str) -> None:
    client = await make_stream(server_url, "s", 1)
    store = MemoryLeaseStore()
    recorder = Recorder()
    try:
        await client.put_record("s", b"before", "k")
        await client.split_shard("s", SHARD, 2**127)
        with anyio.fail_after(10):
            await client.wait_for_active("s", interval=0.01)
        await client.put_record("s", b"after", "k")
        async with _consumer(server_url, store, "w", hooks=recorder.hooks()) as consumer:
            data: list[bytes] = []
            while b"after" not in data:
                batch = await _next(consumer)
                data.extend(r.data for r in batch.records)
                await batch.checkpoint()
            await recorder.called("ended", SHARD)
    finally:
        await client.close()
        await store.close()
    assert data == [b"before", b"after"]
    kinds = [kind for kind, shard_id in recorder.calls if shard_id == SHARD]
    assert kinds == ["started", "ended"]
    children = {shard_id for kind, shard_id in recorder.calls if kind == "started"} - {SHARD}
    assert children == {"shardId-000000000001", "shardId-000000000002"}


async def test_run_combines_its_hooks_with_the_consumers_and_refuses_one_given_twice(
    server_url: str, stream: KinesisClient
) -> None:
    store = MemoryLeaseStore()
    recorder = Recorder()
    hooks = recorder.hooks()
    only_started = ConsumerHooks(on_shard_started=hooks.on_shard_started)
    handled = anyio.Event()

    async def handler(batch: Batch) -> None:
        handled.set()

    async with _consumer(server_url, store, "w", hooks=only_started) as consumer:
        with pytest.raises(ValueError, match="on_shard_started"):
            only_started.with_hooks(on_shard_started=hooks.on_shard_started)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="on_lease_lost is given both"):
            await _consumer(server_url, store, "x", hooks=hooks).run(
                handler, on_lease_lost=hooks.on_lease_lost
            )
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: consumer.run(handler, on_shutdown_requested=hooks.on_shutdown_requested)
            )
            with anyio.fail_after(20):
                await handled.wait()
            consumer.shutdown()
    await store.close()
    assert recorder.calls == [("started", SHARD), ("shutdown", SHARD)]


# -- a consumer left open ---------------------------------------------------------------------


def test_a_consumer_started_and_never_closed_warns() -> None:
    server = StreamServer(port=0, state_delay_seconds=0.0)
    store = MemoryLeaseStore()
    held: list[KinesisClient] = []

    async def start() -> None:
        await server.__aenter__()
        client = await make_stream(server.url, "s", 1)
        held.append(client)
        consumer = Consumer(
            "s", application="a", leases=store, client=client, config=_config("open")
        )
        await consumer.__aenter__()  # and never closed: the consumer is dropped here

    async def end_its_tasks() -> None:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await held[0].close()
        await store.close()
        await server.__aexit__(None, None, None)

    gc.disable()  # the consumer is collected below, not at some allocation before
    try:
        with asyncio.Runner() as runner:
            runner.run(start())
            runner.run(end_its_tasks())
        with warnings.catch_warnings():
            # Its memory streams, never closed either, say so too.
            warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
            with pytest.warns(ResourceWarning, match=r"Consumer\('s'.*'open'\) was started"):
                gc.collect()
    finally:
        gc.enable()


async def test_a_closed_or_never_started_consumer_does_not_warn(
    server_url: str, stream: KinesisClient
) -> None:
    store = MemoryLeaseStore()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with _consumer(server_url, store, "closed"):
            pass
        unstarted = _consumer(server_url, store, "never-started")
        del unstarted
        gc.collect()
    await store.close()
    assert [str(w.message) for w in caught if "Consumer(" in str(w.message)] == []


# -- two live workers with one id -------------------------------------------------------------


async def test_two_consumers_with_one_worker_id_stop_with_an_error_naming_it(
    server_url: str, stream: KinesisClient
) -> None:
    store = MemoryLeaseStore()

    async def twins() -> None:
        async with _consumer(server_url, store, "twin") as first:
            await _next(first)
            async with _consumer(server_url, store, "twin") as second:
                async for _ in second:
                    pass

    with anyio.fail_after(20), pytest.raises(DuplicateWorkerId, match="'twin'"):
        await twins()
    await store.close()
