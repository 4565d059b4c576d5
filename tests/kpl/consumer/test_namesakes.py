"""Two live workers with one worker id: noticed without IO, then by coordinators sharing a
memory, SQLite or DynamoDB lease table, cycle by cycle on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpl.consumer.coordinator import LeaseCoordinator, LeaseRevoked
from kpl.consumer.core.namesakes import NamesakeWatch
from kpl.consumer.errors import DuplicateWorkerId, LeaseLost, LeaseStoreUnavailable
from kpl.consumer.leases import open_lease_store
from kpl.consumer.leases.base import Lease, LeaseStore
from kpl.consumer.leases.memory import MemoryLeaseStore
from tests.kpl.consumer.test_coordinator import Clock, FlakyStore, Stream, coordinator

_names = itertools.count()
# Cycles of a few tens of milliseconds, for the loops run in real time.
FAST = {"failover_time": 0.5, "take_interval": 0.02, "renew_interval": 0.02}

# -- the core ---------------------------------------------------------------------------------


def test_this_workers_own_writes_are_never_foreign() -> None:
    watch = NamesakeWatch("w")
    lease = Lease("a", lease_owner="other", lease_counter=3)
    assert not watch.foreign(lease)  # another owner's lease says nothing about namesakes
    taken = lease.next(lease_owner="w")
    watch.writing(taken)
    assert not watch.foreign(taken)  # listed while the write is on its way
    watch.written(taken, landed=True)
    assert not watch.foreign(taken)
    renewed = taken.next()
    watch.writing(renewed)
    watch.written(renewed, landed=None)  # its answer was lost: it may have landed
    assert not watch.foreign(renewed)


def test_a_counter_beyond_this_workers_writes_under_its_id_is_foreign() -> None:
    watch = NamesakeWatch("w")
    mine = Lease("a", lease_owner="w", lease_counter=4)
    watch.writing(mine)
    watch.written(mine, landed=True)
    assert watch.foreign(mine.next())
    # A refused write never landed: the same counter written by someone else is foreign.
    attempt = mine.next()
    watch.writing(attempt)
    watch.written(attempt, landed=False)
    assert watch.foreign(attempt.next())


def test_a_predecessors_lease_is_foreign_only_once_it_moves() -> None:
    watch = NamesakeWatch("w")
    left = Lease("a", lease_owner="w", lease_counter=40)  # a restarted worker's, standing
    assert not watch.foreign(left)
    assert not watch.foreign(left)
    assert watch.foreign(left.next())  # the predecessor is alive after all
    # A lease moved by another worker and then written back to this id is foreign too.
    other = NamesakeWatch("w")
    mine = Lease("b", lease_owner="w", lease_counter=1)
    other.writing(mine)
    other.written(mine, landed=True)
    stolen = mine.next(lease_owner="x")
    assert not other.foreign(stolen)
    assert other.foreign(stolen.next(lease_owner="w"))


# -- coordinators on a shared table -----------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
def table_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        name = f"namesakes-{next(_names)}"
        keeper = MemoryLeaseStore(name)
        yield f"memory://{name}"
        del keeper
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/leases.db"
    else:
        yield request.getfixturevalue("dynamodb_url")


async def opened(url: str) -> LeaseStore:
    store = open_lease_store(url)
    await store.initialize()
    return store


async def test_two_live_workers_with_one_id_fail_with_an_error_naming_it(table_url: str) -> None:
    clock, stream = Clock(), Stream(4)
    stores = [await opened(table_url) for _ in range(2)]
    first, second = (coordinator("twin", store, stream, clock) for store in stores)  # type: ignore[arg-type]
    try:
        await first.take_leases()
        assert len(first.held()) == 4
        # The second sees leases owned by its own id and takes them, as a restarted
        # worker would; the first then finds its leases written by someone with its id.
        await second.take_leases()
        with pytest.raises(DuplicateWorkerId, match="'twin'") as raised:
            await first.renew_leases()
        assert raised.value.worker_id == "twin"
        # The worker that noticed holds nothing, stops delivering and writes no more.
        assert first.held() == {}
        revoked = [e for e in first.poll_events() if isinstance(e, LeaseRevoked)]
        assert len(revoked) == 4
        with pytest.raises(DuplicateWorkerId):
            await first.take_leases()
        with pytest.raises(DuplicateWorkerId):
            await first.checkpoint("shardId-000000000000", "1")
        await first.release_all()  # a graceful stop still completes
    finally:
        for store in stores:
            await store.close()


async def test_a_namesake_is_noticed_in_a_listing_before_any_write_is_refused(
    table_url: str,
) -> None:
    clock, stream = Clock(), Stream(2)
    stores = [await opened(table_url) for _ in range(2)]
    holder = coordinator("twin", stores[0], stream, clock)  # type: ignore[arg-type]
    other = coordinator("twin", stores[1], stream, clock, max_leases_per_worker=1)  # type: ignore[arg-type]
    try:
        await holder.take_leases()
        await other.take_leases()
        assert len(other.held()) == 1
        # The holder's next listing shows one of its leases moved under its own id.
        with pytest.raises(DuplicateWorkerId, match="'twin'"):
            await holder.take_leases()
        assert holder.held() == {}
    finally:
        for store in stores:
            await store.close()


async def test_a_restarted_worker_keeping_its_id_is_not_a_namesake(table_url: str) -> None:
    clock, stream = Clock(), Stream(3)
    store = await opened(table_url)
    try:
        dead = coordinator("kept-id", store, stream, clock)  # type: ignore[arg-type]
        await dead.take_leases()
        clock.now += 1.0
        # A new process with the same id: the old one is gone, its leases stand still.
        restarted = coordinator("kept-id", store, stream, clock)  # type: ignore[arg-type]
        for _ in range(5):
            await restarted.renew_leases()
            await restarted.take_leases()
            clock.now += 2.0
        assert len(restarted.held()) == 3
        await restarted.checkpoint("shardId-000000000001", "7")
    finally:
        await store.close()


async def test_a_lost_answer_that_landed_is_this_workers_own_write() -> None:
    clock, stream = Clock(), Stream(1)
    store = FlakyStore(f"namesakes-{next(_names)}")
    worker = coordinator("me", store, stream, clock)
    await worker.take_leases()
    store.lose_next_answer = True
    with pytest.raises(LeaseStoreUnavailable):
        await worker.checkpoint("shardId-000000000000", "5")
    # The listing shows the landed write under this id: it is this worker's, not a twin's.
    await worker.take_leases()
    await worker.renew_leases()
    assert list(worker.held()) == ["shardId-000000000000"]


async def test_a_lease_taken_by_another_worker_is_lost_not_a_namesake() -> None:
    clock, stream = Clock(), Stream(1)
    name = f"namesakes-{next(_names)}"
    worker = coordinator("me", MemoryLeaseStore(name), stream, clock)
    await worker.take_leases()
    store = MemoryLeaseStore(name)
    lease = await store.get_lease("shardId-000000000000")
    assert lease is not None
    assert await store.replace_lease(lease.next(lease_owner="thief"), lease.lease_counter)
    with pytest.raises(LeaseLost):
        await worker.checkpoint("shardId-000000000000", "5")
    await worker.take_leases()


async def test_run_stops_with_the_error_itself_once_a_namesake_is_noticed() -> None:
    name, stream = f"namesakes-{next(_names)}", Stream(2)
    workers = [
        LeaseCoordinator(
            MemoryLeaseStore(name), worker_id="twin", list_shards=stream.list_shards, **FAST
        )
        for _ in range(2)
    ]
    async with asyncio.timeout(10):
        tasks = [asyncio.create_task(worker.run()) for worker in workers]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    errors = [task.exception() for task in done]
    assert errors
    assert all(isinstance(error, DuplicateWorkerId) for error in errors)


def test_the_namesake_watch_imports_no_clock_and_no_io() -> None:
    import ast

    import kpl.consumer.core.namesakes as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not imported & {"time", "asyncio", "socket", "datetime", "sqlite3", "anyio"}
