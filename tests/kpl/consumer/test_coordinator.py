"""Several lease coordinators on one memory store, driven cycle by cycle on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from kpl.consumer.coordinator import LeaseAcquired, LeaseCoordinator, LeaseRevoked
from kpl.consumer.core.lineage import ShardInfo
from kpl.consumer.errors import LeaseLost, LeaseStoreError, LeaseStoreUnavailable
from kpl.consumer.leases.base import LATEST, SHARD_END, TRIM_HORIZON, Lease
from kpl.consumer.leases.memory import MemoryLeaseStore

FAILOVER = 10.0
_names = itertools.count()


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Stream:
    """The shards list_shards answers, changeable by a test."""

    def __init__(self, count: int) -> None:
        self.shards = [ShardInfo(f"shardId-{i:012d}") for i in range(count)]
        self.calls = 0

    async def list_shards(self) -> Sequence[ShardInfo]:
        self.calls += 1
        return list(self.shards)


class FlakyStore(MemoryLeaseStore):
    """A memory store that can fail calls the way an unreachable store does."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = False
        # The next replace lands in the table but its answer is lost.
        self.lose_next_answer = False

    async def list_leases(self) -> list[Lease]:
        if self.down:
            raise LeaseStoreUnavailable("the store does not answer")
        return await super().list_leases()

    async def replace_lease(self, lease: Lease, expected_counter: int) -> bool:
        if self.down:
            raise LeaseStoreUnavailable("the store does not answer")
        done = await super().replace_lease(lease, expected_counter)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise LeaseStoreUnavailable("the answer was lost")
        return done


def table() -> str:
    return f"coordinator-test-{next(_names)}"


def coordinator(
    name: str,
    store: MemoryLeaseStore,
    stream: Stream,
    clock: Clock,
    **options: object,
) -> LeaseCoordinator:
    return LeaseCoordinator(
        store,
        worker_id=name,
        list_shards=stream.list_shards,
        failover_time=FAILOVER,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


async def cycle(workers: Sequence[LeaseCoordinator], clock: Clock, step: float = 2.0) -> None:
    for worker in workers:
        await worker.renew_leases()
        await worker.take_leases()
    clock.now += step


def counts(workers: Sequence[LeaseCoordinator]) -> list[int]:
    return sorted(len(worker.held()) for worker in workers)


async def test_workers_share_the_shards_and_every_shard_has_one_owner() -> None:
    name, clock, stream = table(), Clock(), Stream(8)
    workers = [coordinator(f"w{i}", MemoryLeaseStore(name), stream, clock) for i in range(3)]
    for _ in range(4):
        await cycle(workers, clock)
    assert counts(workers) == [2, 3, 3]
    owners = [key for worker in workers for key in worker.held()]
    assert sorted(owners) == [shard.shard_id for shard in stream.shards]
    # The first worker took everything, the others stole their shares from it: the
    # events of each worker replay into exactly what it holds.
    for worker in workers:
        replayed: set[str] = set()
        for event in worker.poll_events():
            if isinstance(event, LeaseAcquired):
                replayed.add(event.lease.lease_key)
            else:
                replayed.remove(event.shard_id)
        assert replayed == set(worker.held())
    listing = await MemoryLeaseStore(name).list_leases()
    assert {lease.lease_key: lease.lease_owner for lease in listing} == {
        key: worker.worker_id for worker in workers for key in worker.held()
    }
    assert sum(worker.metrics()["created"] for worker in workers) == 8


async def test_a_joining_worker_gets_its_share_within_two_cycles_by_stealing() -> None:
    name, clock, stream = table(), Clock(), Stream(8)
    workers = [coordinator(f"w{i}", MemoryLeaseStore(name), stream, clock) for i in range(3)]
    for _ in range(4):
        await cycle(workers, clock)
    for worker in workers:
        worker.poll_events()
    joiner = coordinator("w3", MemoryLeaseStore(name), stream, clock)
    for _ in range(2):
        await cycle([joiner, *workers], clock)
    assert len(joiner.held()) == 2
    assert counts([*workers, joiner]) == [2, 2, 2, 2]
    assert joiner.metrics()["stolen"] == 2
    revoked = [e for worker in workers for e in worker.poll_events() if isinstance(e, LeaseRevoked)]
    assert sorted(event.shard_id for event in revoked) == sorted(joiner.held())


async def test_a_worker_that_lost_its_lease_cannot_checkpoint() -> None:
    name, clock, stream = table(), Clock(), Stream(2)
    first = coordinator("first", MemoryLeaseStore(name), stream, clock)
    await first.take_leases()
    assert len(first.held()) == 2
    thief = coordinator("thief", MemoryLeaseStore(name), stream, clock)
    (stolen,) = await thief.take_leases()
    with pytest.raises(LeaseLost) as lost:
        await first.checkpoint(stolen.lease_key, "12345")
    assert lost.value.shard_id == stolen.lease_key
    assert stolen.lease_key in str(lost.value)
    assert stolen.lease_key not in first.held()
    assert [type(e) for e in first.poll_events()][-1] is LeaseRevoked
    assert first.metrics()["lost"] == 1
    # The thief's checkpoint lands; the stored checkpoint is the thief's.
    await thief.checkpoint(stolen.lease_key, "777", 3)
    stored = await MemoryLeaseStore(name).get_lease(stolen.lease_key)
    assert stored is not None
    assert (stored.checkpoint, stored.checkpoint_sub_sequence_number) == ("777", 3)
    assert stored.lease_owner == "thief"
    # Nor can a worker checkpoint a lease it never held.
    with pytest.raises(LeaseLost):
        await thief.checkpoint("shardId-999999999999", "1")


async def test_a_dead_workers_leases_move_after_failover_time_and_not_before() -> None:
    name, clock, stream = table(), Clock(), Stream(4)
    dead = coordinator("dead", MemoryLeaseStore(name), stream, clock)
    alive = coordinator("alive", MemoryLeaseStore(name), stream, clock)
    for _ in range(3):
        await cycle([dead, alive], clock)
    assert counts([dead, alive]) == [2, 2]
    # `dead` stops renewing; `alive` renews and takes every 2 s.
    died = clock.now
    before = alive.metrics()
    while clock.now < died + FAILOVER - 2.0:
        await cycle([alive], clock)
        assert len(alive.held()) == 2
    while clock.now < died + FAILOVER + 4.0:
        await cycle([alive], clock)
    assert len(alive.held()) == 4
    assert alive.metrics()["stolen"] == before["stolen"]
    assert alive.metrics()["taken"] == before["taken"] + 2


async def test_released_leases_are_taken_at_the_next_cycle_without_waiting() -> None:
    name, clock, stream = table(), Clock(), Stream(4)
    leaving = coordinator("leaving", MemoryLeaseStore(name), stream, clock)
    staying = coordinator("staying", MemoryLeaseStore(name), stream, clock)
    for _ in range(3):
        await cycle([leaving, staying], clock)
    await leaving.checkpoint(next(iter(leaving.held())), "4242")
    await leaving.release_all()
    assert leaving.held() == {}
    assert leaving.metrics()["released"] == 2
    # No clock movement at all: the freed leases are free now.
    await staying.take_leases()
    assert len(staying.held()) == 4
    # A closing worker takes nothing any more.
    await staying.release(next(iter(staying.held())))
    assert await leaving.take_leases() == []
    stored = {lease.lease_key: lease for lease in await MemoryLeaseStore(name).list_leases()}
    assert "4242" in {lease.checkpoint for lease in stored.values()}


async def test_a_shard_end_checkpoint_frees_the_lease_and_creates_the_children() -> None:
    name, clock, stream = table(), Clock(), Stream(1)
    worker = coordinator("w", MemoryLeaseStore(name), stream, clock, initial_checkpoint=LATEST)
    await worker.take_leases()
    parent = "shardId-000000000000"
    assert worker.held()[parent].checkpoint == LATEST
    stream.shards = [
        ShardInfo(parent, ending_sequence_number="99"),
        ShardInfo("shardId-000000000001", (parent,)),
        ShardInfo("shardId-000000000002", (parent,)),
    ]
    await worker.checkpoint(parent, SHARD_END)
    assert parent not in worker.held()
    await worker.take_leases()
    assert sorted(worker.held()) == ["shardId-000000000001", "shardId-000000000002"]
    assert {lease.checkpoint for lease in worker.held().values()} == {TRIM_HORIZON}
    assert worker.observed()[parent].checkpoint == SHARD_END
    assert worker.observed()[parent].lease_owner is None
    # Once the stream stops listing the finished parent, its lease is deleted.
    stream.shards = stream.shards[1:]
    worker.request_shard_sync()
    await worker.take_leases()
    assert parent not in worker.observed()


async def test_an_unreachable_store_keeps_leases_until_failover_time_then_revokes_them() -> None:
    name, clock, stream = table(), Clock(), Stream(2)
    store = FlakyStore(name)
    worker = coordinator("w", store, stream, clock)
    await worker.take_leases()
    store.down = True
    with pytest.raises(LeaseStoreUnavailable):
        await worker.take_leases()
    with pytest.raises(LeaseStoreUnavailable) as failed:
        await worker.checkpoint("shardId-000000000000", "5")
    assert failed.value.retryable
    clock.now += FAILOVER - 0.5
    await worker.renew_leases()
    assert len(worker.held()) == 2
    clock.now += 0.5
    await worker.renew_leases()
    assert worker.held() == {}
    revoked = [e for e in worker.poll_events() if isinstance(e, LeaseRevoked)]
    assert len(revoked) == 2
    assert "failover_time" in revoked[0].reason
    # Back up: the listing shows the leases still as this worker's; it takes them back.
    store.down = False
    await worker.take_leases()
    assert len(worker.held()) == 2


async def test_a_write_whose_answer_was_lost_but_landed_keeps_the_lease() -> None:
    name, clock, stream = table(), Clock(), Stream(1)
    store = FlakyStore(name)
    worker = coordinator("w", store, stream, clock)
    await worker.take_leases()
    store.lose_next_answer = True
    with pytest.raises(LeaseStoreError):
        await worker.checkpoint("shardId-000000000000", "100")
    # The next write is refused (the counter moved by the landed one) and recovered.
    await worker.checkpoint("shardId-000000000000", "200")
    stored = await store.get_lease("shardId-000000000000")
    assert stored is not None
    assert (stored.checkpoint, stored.lease_owner) == ("200", "w")
    assert worker.metrics()["lost"] == 0


async def test_a_lost_answer_for_a_write_that_did_not_land_is_a_lost_lease_if_taken() -> None:
    name, clock, stream = table(), Clock(), Stream(1)
    store = FlakyStore(name)
    worker = coordinator("w", store, stream, clock)
    await worker.take_leases()
    store.down = True
    with pytest.raises(LeaseStoreUnavailable):
        await worker.checkpoint("shardId-000000000000", "100")
    store.down = False
    # Meanwhile another worker took the lease.
    stored = await store.get_lease("shardId-000000000000")
    assert stored is not None
    await store.replace_lease(stored.next(lease_owner="other"), stored.lease_counter)
    with pytest.raises(LeaseLost):
        await worker.checkpoint("shardId-000000000000", "100")


async def test_max_leases_per_worker_leaves_the_rest_to_others() -> None:
    name, clock, stream = table(), Clock(), Stream(5)
    worker = coordinator("w", MemoryLeaseStore(name), stream, clock, max_leases_per_worker=2)
    for _ in range(3):
        await cycle([worker], clock)
    assert len(worker.held()) == 2


async def test_run_takes_renews_and_reports_events_in_real_time() -> None:
    name, stream = table(), Stream(2)
    workers = [
        LeaseCoordinator(
            MemoryLeaseStore(name),
            worker_id=f"w{i}",
            list_shards=stream.list_shards,
            failover_time=0.6,
        )
        for i in range(2)
    ]
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        tasks = [group.create_task(worker.run()) for worker in workers]
        acquired: list[LeaseAcquired] = []
        events = workers[0].events()
        async for event in events:
            assert isinstance(event, LeaseAcquired)
            acquired.append(event)
            if len(acquired) == 2:
                break
        # The other worker steals one within a few cycles, and w0 hears of it.
        async for event in events:
            assert isinstance(event, LeaseRevoked)
            break
        await events.aclose()
        for task in tasks:
            task.cancel()
    assert sorted(len(worker.held()) for worker in workers) == [1, 1]
    assert workers[0].metrics()["renewals"] >= 1 or workers[1].metrics()["renewals"] >= 1


async def test_run_raises_when_the_store_cannot_be_initialized() -> None:
    class Broken(MemoryLeaseStore):
        async def initialize(self) -> None:
            raise LeaseStoreError("no such directory")

    worker = LeaseCoordinator(Broken(), worker_id="w", list_shards=Stream(1).list_shards)
    with pytest.raises(LeaseStoreError, match="no such directory"):
        await worker.run()


async def test_run_retries_an_unavailable_store_for_failover_time_then_raises() -> None:
    attempts = 0

    class Busy(MemoryLeaseStore):
        def __init__(self, failures: int) -> None:
            super().__init__()
            self.failures = failures

        async def initialize(self) -> None:
            nonlocal attempts
            attempts += 1
            if self.failures:
                self.failures -= 1
                raise LeaseStoreUnavailable("database is locked")

    stream = Stream(1)
    never = LeaseCoordinator(
        Busy(10**9), worker_id="w", list_shards=stream.list_shards, failover_time=0.3
    )
    with pytest.raises(LeaseStoreUnavailable, match="locked"):
        await never.run()
    assert attempts > 1
    soon = LeaseCoordinator(
        Busy(2), worker_id="w", list_shards=stream.list_shards, failover_time=5.0
    )
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        task = group.create_task(soon.run())
        async for event in soon.events():
            assert isinstance(event, LeaseAcquired)
            break
        task.cancel()


async def test_a_failing_shard_listing_is_retried_at_the_next_cycle() -> None:
    name, clock, stream = table(), Clock(), Stream(2)
    failures = [RuntimeError("ListShards failed")]

    async def list_shards() -> Sequence[ShardInfo]:
        if failures:
            raise failures.pop()
        return await stream.list_shards()

    worker = LeaseCoordinator(
        MemoryLeaseStore(name), worker_id="w", list_shards=list_shards, clock=clock
    )
    assert await worker.take_leases() == []
    assert len(await worker.take_leases()) == 2


def test_bad_coordinator_options_are_refused() -> None:
    store, stream = MemoryLeaseStore(), Stream(1)
    with pytest.raises(ValueError, match="initial_checkpoint"):
        LeaseCoordinator(
            store, worker_id="w", list_shards=stream.list_shards, initial_checkpoint="NOWHERE"
        )
    with pytest.raises(ValueError, match="interval"):
        LeaseCoordinator(store, worker_id="w", list_shards=stream.list_shards, take_interval=0)


async def test_a_failed_read_back_keeps_the_unknown_write_in_question() -> None:
    name, clock, stream = table(), Clock(), Stream(1)
    store = FlakyStore(name)
    worker = coordinator("w", store, stream, clock)
    await worker.take_leases()
    store.lose_next_answer = True
    with pytest.raises(LeaseStoreUnavailable):
        await worker.checkpoint("shardId-000000000000", "100")
    reads = store.get_lease

    async def unreachable(key: str) -> Lease | None:
        raise LeaseStoreUnavailable("the store does not answer")

    store.get_lease = unreachable  # type: ignore[method-assign]
    with pytest.raises(LeaseStoreUnavailable):
        await worker.checkpoint("shardId-000000000000", "200")
    store.get_lease = reads  # type: ignore[method-assign]
    await worker.checkpoint("shardId-000000000000", "300")
    stored = await store.get_lease("shardId-000000000000")
    assert stored is not None
    assert (stored.checkpoint, stored.lease_owner) == ("300", "w")


@pytest.mark.parametrize("skew", [0.0, 240.0, -600.0])
async def test_failover_holds_when_the_workers_clocks_differ_by_minutes(skew: float) -> None:
    name, stream = table(), Stream(4)
    clock, other_clock = Clock(1000.0), Clock(1000.0 + skew)
    dead = coordinator("dead", MemoryLeaseStore(name), stream, clock)
    alive = coordinator("alive", MemoryLeaseStore(name), stream, other_clock)

    async def step(workers: Sequence[LeaseCoordinator]) -> None:
        for worker in workers:
            await worker.renew_leases()
            await worker.take_leases()
        clock.now += 1.0
        other_clock.now += 1.0

    for _ in range(6):
        await step([dead, alive])
    assert counts([dead, alive]) == [2, 2]
    for _ in range(int(FAILOVER) - 2):
        await step([alive])
    assert len(alive.held()) == 2
    for _ in range(4):
        await step([alive])
    assert len(alive.held()) == 4


async def test_coordinators_share_steal_and_fence_on_every_store(store_url: str) -> None:
    from kpl.consumer.leases import open_lease_store

    clock, stream = Clock(), Stream(4)
    stores = [open_lease_store(store_url) for _ in range(3)]
    for store in stores:
        await store.initialize()
    try:
        first, second = (
            LeaseCoordinator(
                store,
                worker_id=f"w{i}",
                list_shards=stream.list_shards,
                failover_time=FAILOVER,
                clock=clock,
            )
            for i, store in enumerate(stores[:2])
        )
        await first.take_leases()
        assert len(first.held()) == 4
        # Target 2: one steal per cycle, two cycles.
        await second.take_leases()
        await second.take_leases()
        assert second.metrics()["stolen"] == 2
        stolen = next(iter(second.held()))
        with pytest.raises(LeaseLost):
            await first.checkpoint(stolen, "100")
        await second.checkpoint(stolen, "200", 4)
        await first.renew_leases()
        assert counts([first, second]) == [2, 2]
        assert first.metrics()["lost"] == 2
        await second.release_all()
        await first.take_leases()
        assert len(first.held()) == 4
        stored = await stores[2].get_lease(stolen)
        assert stored is not None
        assert (stored.lease_owner, stored.checkpoint, stored.checkpoint_sub_sequence_number) == (
            "w0",
            "200",
            4,
        )
    finally:
        for store in stores:
            await store.close()


async def test_a_prepared_checkpoint_is_fenced_kept_by_renewals_and_seen_by_the_next_owner() -> (
    None
):
    name, clock, stream = table(), Clock(), Stream(1)
    first = coordinator("w0", MemoryLeaseStore(name), stream, clock)
    await first.take_leases()
    key = "shardId-000000000000"
    await first.prepare_checkpoint(key, "300", 2, b"state")
    await first.renew_leases()
    stored = await MemoryLeaseStore(name).get_lease(key)
    assert stored is not None
    assert (stored.checkpoint, stored.pending_checkpoint) == (TRIM_HORIZON, "300")
    assert (stored.pending_checkpoint_sub_sequence_number, stored.pending_checkpoint_state) == (
        2,
        b"state",
    )
    assert first.metrics()["prepared"] == 1
    with pytest.raises(ValueError, match="sequence number"):
        await first.prepare_checkpoint(key, SHARD_END)
    # The first worker dies; the next owner takes the lease with the pending checkpoint.
    second = coordinator("w1", MemoryLeaseStore(name), stream, clock)
    for _ in range(7):
        await second.take_leases()
        clock.now += 2.0
    acquired = [e for e in second.poll_events() if isinstance(e, LeaseAcquired)]
    assert [(e.lease.pending_checkpoint, e.lease.pending_checkpoint_state) for e in acquired] == [
        ("300", b"state")
    ]
    with pytest.raises(LeaseLost):
        await first.prepare_checkpoint(key, "400")
    await second.checkpoint(key, "300", 2)
    assert second.held()[key].pending_checkpoint is None
