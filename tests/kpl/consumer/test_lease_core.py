"""The sans-IO lease decisions, driven by plain functions and fake clocks."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kpl.consumer.core.leases as core
from kpl.consumer.core.leases import (
    Holdings,
    LeaseTaker,
    Take,
    checkpoint_value,
    finished_leases_to_delete,
    new_leases,
    prepare_checkpoint_value,
    release_value,
    renew_value,
    take_value,
)
from kpl.consumer.core.lineage import ShardInfo
from kpl.consumer.leases.base import AT_TIMESTAMP, LATEST, SHARD_END, TRIM_HORIZON, Lease

FAILOVER = 10.0


def lease(key: str, owner: str | None = None, counter: int = 1, **fields: object) -> Lease:
    return Lease(lease_key=key, lease_owner=owner, lease_counter=counter, **fields)  # type: ignore[arg-type]


def shard(shard_id: str, *parents: str, closed: bool = False) -> ShardInfo:
    return ShardInfo(shard_id, parents, ending_sequence_number="9" if closed else None)


class Table:
    """A lease table with compare-and-set, the way every store behaves."""

    def __init__(self, leases: list[Lease]) -> None:
        self.rows = {item.lease_key: item for item in leases}

    def write(self, value: Lease, expected: int) -> bool:
        if self.rows[value.lease_key].lease_counter != expected:
            return False
        self.rows[value.lease_key] = value
        return True

    def listing(self) -> list[Lease]:
        return list(self.rows.values())

    def count(self, owner: str) -> int:
        return sum(1 for item in self.rows.values() if item.lease_owner == owner)


class Worker:
    """A worker reduced to its decisions: observe, plan, take, renew."""

    def __init__(self, name: str, table: Table, clock_offset: float = 0.0, **options: int) -> None:
        self.name = name
        self.table = table
        self.offset = clock_offset  # its monotonic clock's reading at "true" time 0
        self.taker = LeaseTaker(name, failover_time=FAILOVER, **options)
        self.held: dict[str, Lease] = {}

    def take(self, t: float) -> list[Take]:
        self.taker.observe(self.table.listing(), self.offset + t)
        done = []
        for take in self.taker.plan(self.held.keys(), self.offset + t, random.Random(7)):
            if self.table.write(take.value, take.expected_counter):
                self.held[take.value.lease_key] = take.value
                done.append(take)
        return done

    def renew(self) -> None:
        for key, held in list(self.held.items()):
            value = renew_value(held)
            if self.table.write(value, held.lease_counter):
                self.held[key] = value
            else:
                del self.held[key]


# -- the core reads no clock ------------------------------------------------------------------


def test_the_core_module_imports_no_clock_and_no_io() -> None:
    tree = ast.parse(Path(core.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"time", "asyncio", "socket", "datetime", "sqlite3", "anyio"}


# -- expiry -------------------------------------------------------------------------------------


def test_an_owned_lease_expires_after_failover_time_of_an_unmoving_counter() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe([lease("s0", "other", 5)], now=100.0)
    taker.observe([lease("s0", "other", 5)], now=109.9)
    assert not taker.is_expired("s0", 109.9)
    assert taker.is_expired("s0", 110.0)


def test_a_moving_counter_restarts_the_failover_time_from_when_it_was_seen() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe([lease("s0", "other", 5)], now=0.0)
    taker.observe([lease("s0", "other", 6)], now=8.0)
    assert not taker.is_expired("s0", 17.9)
    assert taker.is_expired("s0", 18.0)


def test_a_lease_without_owner_is_expired_at_once() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe([lease("s0", None, 5)], now=0.0)
    assert taker.is_expired("s0", 0.0)


def test_a_lease_that_left_the_listing_is_forgotten() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe([lease("s0", "other", 5)], now=0.0)
    taker.observe([], now=5.0)
    taker.observe([lease("s0", "other", 5)], now=12.0)
    # Seen afresh at 12: the full failover_time runs again.
    assert not taker.is_expired("s0", 21.0)


def test_workers_whose_clocks_differ_by_minutes_agree_on_expiry() -> None:
    table = Table([lease(f"s{i}", "holder", 1) for i in range(2)])
    holder = Worker("holder", table)
    holder.held = dict(table.rows)
    behind = Worker("behind", table, clock_offset=-300.0)  # five minutes behind
    ahead = Worker("ahead", table, clock_offset=+420.0)  # seven minutes ahead
    takes: list[Take] = []
    # Everyone renews every second for a minute: no lease expires, and the two
    # newcomers only steal their share (target ceil(2 / 3) = 1: one lease in all).
    t = 0.0
    while t < 60.0:
        for worker in (holder, behind, ahead):
            worker.renew()
        takes += behind.take(t) + ahead.take(t)
        t += 1.0
    assert [take.stolen for take in takes] == [True]
    assert len(holder.held) == 1
    # The holder dies; each survivor sees its counter stand still on its own clock.
    died = t
    while t < died + FAILOVER - 1.0:
        for worker in (behind, ahead):
            worker.renew()
            assert worker.take(t) == []
        t += 1.0
    assert table.count("holder") == 1
    while t < died + FAILOVER + 2.0:
        for worker in (behind, ahead):
            worker.renew()
            worker.take(t)
        t += 1.0
    assert table.count("holder") == 0
    assert table.count("behind") == 1
    assert table.count("ahead") == 1


# -- taking -------------------------------------------------------------------------------------


def test_expired_leases_are_taken_before_any_steal() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    listing = [lease("a", "w1"), lease("b", "w1"), lease("c", "w1"), lease("d", None)]
    taker.observe(listing, now=0.0)
    plan = taker.plan((), now=0.0)
    assert [(t.value.lease_key, t.stolen) for t in plan] == [("d", False)]
    assert plan[0].value.lease_owner == "me"
    assert plan[0].expected_counter == 1
    assert plan[0].value.lease_counter == 2


def test_a_worker_takes_up_to_the_target_of_expired_leases() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    # Six free leases, one other live worker holding two: target ceil(8 / 2) = 4.
    listing = [lease(f"f{i}") for i in range(6)] + [lease("x", "w1"), lease("y", "w1")]
    taker.observe(listing, now=0.0)
    assert len(taker.plan((), now=0.0)) == 4
    assert taker.target(0.0) == 4


def test_max_leases_per_worker_caps_the_target() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER, max_leases_per_worker=2)
    taker.observe([lease(f"f{i}") for i in range(6)], now=0.0)
    assert len(taker.plan((), now=0.0)) == 2
    assert taker.plan(("f0", "f1"), now=0.0) == []


def test_steal_from_the_most_loaded_worker_at_most_max_leases_to_steal() -> None:
    listing = [lease(f"a{i}", "w1") for i in range(5)] + [lease(f"b{i}", "w2") for i in range(3)]
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe(listing, now=0.0)
    plan = taker.plan((), now=0.0)
    assert len(plan) == 1
    assert plan[0].stolen
    assert plan[0].previous_owner == "w1"
    assert plan[0].value.owner_switches_since_checkpoint == 1

    greedy = LeaseTaker("me", failover_time=FAILOVER, max_leases_to_steal=5)
    greedy.observe(listing, now=0.0)
    # target ceil(8 / 3) = 3; w1 holds 2 above it, and that is all it gives up.
    assert [t.previous_owner for t in greedy.plan((), now=0.0)] == ["w1", "w1"]


def test_no_steal_between_workers_one_lease_apart() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe([lease("a", "w1"), lease("b", "w1"), lease("c", "me")], now=0.0)
    assert taker.plan({"c"}, now=0.0) == []


def test_the_two_two_zero_stalemate_is_broken_by_one_steal() -> None:
    listing = [lease("a", "w1"), lease("b", "w1"), lease("c", "w2"), lease("d", "w2")]
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe(listing, now=0.0)
    plan = taker.plan((), now=0.0)
    assert len(plan) == 1
    assert plan[0].stolen


def test_max_leases_to_steal_zero_never_steals() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER, max_leases_to_steal=0)
    taker.observe([lease(f"a{i}", "w1") for i in range(4)], now=0.0)
    assert taker.plan((), now=0.0) == []


def test_finished_leases_are_neither_taken_nor_counted() -> None:
    listing = [lease("done", None, checkpoint=SHARD_END), lease("a", "w1"), lease("b", "w1")]
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe(listing, now=0.0)
    assert taker.target(0.0) == 1
    plan = taker.plan((), now=0.0)
    assert [t.value.lease_key for t in plan] == ["a"] or [t.value.lease_key for t in plan] == ["b"]
    assert plan[0].stolen


def test_a_lease_listed_as_mine_but_not_held_is_taken_at_once() -> None:
    taker = LeaseTaker("me", failover_time=FAILOVER)
    taker.observe([lease("a", "me", 7)], now=0.0)
    (take,) = taker.plan((), now=0.0)
    assert not take.stolen
    assert take.value.owner_switches_since_checkpoint == 0
    assert take.value.lease_counter == 8


def test_a_joining_worker_gets_its_share_within_two_taker_cycles() -> None:
    table = Table([lease(f"shardId-{i:012d}") for i in range(8)])
    workers = [Worker(f"w{i}", table) for i in range(3)]
    t = 0.0
    for _ in range(6):
        for worker in workers:
            worker.take(t)
            worker.renew()
        t += 2.0
    assert sorted(table.count(w.name) for w in workers) == [2, 3, 3]
    joiner = Worker("w3", table)
    for _ in range(2):
        for worker in [*workers, joiner]:
            worker.renew()
        joiner.take(t)
        for worker in workers:
            worker.take(t)
        t += 2.0
    assert table.count("w3") == 2
    assert sorted(table.count(w.name) for w in [*workers, joiner]) == [2, 2, 2, 2]


def test_balance_is_stable_once_reached() -> None:
    table = Table([lease(f"s{i}") for i in range(7)])
    workers = [Worker(f"w{i}", table) for i in range(3)]
    t = 0.0
    for _ in range(5):
        for worker in workers:
            worker.take(t)
            worker.renew()
        t += 2.0
    before = dict(table.rows)
    for _ in range(20):
        for worker in workers:
            assert worker.take(t) == []
            worker.renew()
        t += 2.0
    assert {k: v.lease_owner for k, v in table.rows.items()} == {
        k: v.lease_owner for k, v in before.items()
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"failover_time": 0.0}, "failover_time"),
        ({"max_leases_per_worker": 0}, "max_leases_per_worker"),
        ({"max_leases_to_steal": -1}, "max_leases_to_steal"),
    ],
)
def test_bad_taker_options_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseTaker("me", **options)  # type: ignore[arg-type]


# -- values written -------------------------------------------------------------------------------


def test_values_move_the_counter_by_one() -> None:
    held = lease("a", "me", 4, checkpoint="100", owner_switches_since_checkpoint=2)
    assert renew_value(held) == lease(
        "a", "me", 5, checkpoint="100", owner_switches_since_checkpoint=2
    )
    assert take_value(held, "me").owner_switches_since_checkpoint == 2
    assert take_value(held, "you").owner_switches_since_checkpoint == 3
    assert release_value(held).lease_owner is None
    assert release_value(held).lease_counter == 5


def test_a_checkpoint_resets_owner_switches_and_the_pending_checkpoint() -> None:
    held = lease("a", "me", 4, owner_switches_since_checkpoint=2, pending_checkpoint="90")
    value = checkpoint_value(held, "120", 3)
    assert value == lease("a", "me", 5, checkpoint="120", checkpoint_sub_sequence_number=3)


def test_a_shard_end_checkpoint_frees_the_lease() -> None:
    value = checkpoint_value(lease("a", "me", 4), SHARD_END)
    assert value.lease_owner is None
    assert value.checkpoint == SHARD_END


@pytest.mark.parametrize(("checkpoint", "sub"), [("", 0), ("100", -1)])
def test_a_malformed_checkpoint_is_refused(checkpoint: str, sub: int) -> None:
    with pytest.raises(ValueError, match=r"checkpoint|sub_sequence_number"):
        checkpoint_value(lease("a", "me"), checkpoint, sub)


# -- leases for shards ----------------------------------------------------------------------------


def keys_and_checkpoints(leases: list[Lease]) -> list[tuple[str, str]]:
    return [(item.lease_key, item.checkpoint) for item in leases]


def test_new_leases_at_trim_horizon_cover_every_shard_parents_first() -> None:
    shards = [shard("c1", "p", closed=False), shard("p", closed=True), shard("c2", "p")]
    made = new_leases(shards, (), TRIM_HORIZON)
    assert keys_and_checkpoints(made) == [
        ("p", TRIM_HORIZON),
        ("c1", TRIM_HORIZON),
        ("c2", TRIM_HORIZON),
    ]
    assert made[1].parent_shard_ids == frozenset({"p"})
    assert made[0].lease_owner is None


def test_new_leases_at_latest_skip_closed_shards_without_leased_parents() -> None:
    shards = [shard("p", closed=True), shard("c1", "p"), shard("c2", "p"), shard("r")]
    made = new_leases(shards, (), LATEST)
    assert keys_and_checkpoints(made) == [("c1", LATEST), ("c2", LATEST), ("r", LATEST)]
    assert made[0].parent_shard_ids == frozenset({"p"})


def test_children_of_a_stored_parent_start_at_trim_horizon_whatever_the_position() -> None:
    shards = [shard("p", closed=True), shard("c1", "p"), shard("c2", "p")]
    for position in (LATEST, AT_TIMESTAMP, TRIM_HORIZON):
        assert keys_and_checkpoints(new_leases(shards, {"p"}, position)) == [
            ("c1", TRIM_HORIZON),
            ("c2", TRIM_HORIZON),
        ]


def test_a_first_start_at_a_timestamp_keeps_it_for_every_shard() -> None:
    shards = [shard("p", closed=True), shard("c", "p")]
    assert keys_and_checkpoints(new_leases(shards, (), AT_TIMESTAMP)) == [
        ("p", AT_TIMESTAMP),
        ("c", AT_TIMESTAMP),
    ]


def test_a_merge_child_keeps_both_parents_and_follows_any_leased_one() -> None:
    shards = [shard("a", closed=True), shard("b", closed=True), shard("m", "a", "b")]
    made = new_leases(shards, {"a"}, LATEST)
    assert keys_and_checkpoints(made) == [("m", TRIM_HORIZON)]
    assert made[0].parent_shard_ids == frozenset({"a", "b"})


def test_existing_leases_are_not_created_again_and_an_unknown_position_is_refused() -> None:
    assert new_leases([shard("a"), shard("b")], {"a", "b"}, TRIM_HORIZON) == []
    with pytest.raises(ValueError, match="initial_checkpoint"):
        new_leases([shard("a")], (), "SHARD_END")


def test_a_cyclic_listing_does_not_recurse_for_ever() -> None:
    made = new_leases([shard("a", "b"), shard("b", "a")], (), TRIM_HORIZON)
    assert sorted(item.lease_key for item in made) == ["a", "b"]


def test_finished_leases_of_trimmed_shards_are_deleted() -> None:
    leases = [
        lease("gone", checkpoint=SHARD_END),
        lease("gone-unfinished", "w1", checkpoint="5"),
        lease("here", checkpoint=SHARD_END),
    ]
    assert finished_leases_to_delete([shard("here")], leases) == [leases[0]]


# -- holding --------------------------------------------------------------------------------------


def test_a_held_lease_goes_stale_failover_time_after_its_last_write_started() -> None:
    holdings = Holdings(FAILOVER)
    holdings.written(lease("a", "me", 2), started_at=50.0)
    holdings.written(lease("b", "me", 2), started_at=53.0)
    assert holdings.next_deadline() == 60.0
    assert holdings.stale(59.9) == []
    assert holdings.stale(60.0) == ["a"]
    holdings.written(lease("a", "me", 3), started_at=58.0)
    assert holdings.stale(63.0) == ["b"]
    assert holdings.drop("b") == lease("b", "me", 2)
    assert holdings.drop("b") is None
    assert holdings.stale(100.0) == ["a"]
    assert set(holdings.leases) == {"a"}


@settings(max_examples=60, deadline=None)
@given(
    leases=st.integers(min_value=1, max_value=24),
    joins=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_fleet_converges_to_a_stable_balance(leases: int, joins: list[int], seed: int) -> None:
    # Workers join at the cycles in `joins`, take in a shuffled order each cycle and
    # renew every cycle (so nothing expires): one steal per worker and cycle at most.
    table = Table([lease(f"s{i:02d}") for i in range(leases)])
    rng = random.Random(seed)
    workers: list[Worker] = []
    t = 0.0
    cycles = max(joins) + 2 * leases + 4
    for cycle in range(cycles):
        workers += [Worker(f"w{len(workers) + n}", table) for n in range(joins.count(cycle))]
        order = workers[:]
        rng.shuffle(order)
        for worker in order:
            worker.renew()
            worker.take(t)
        t += 1.0
        # A worker learns of a steal at its next renewal; once all have renewed, every
        # lease's owner is the one worker that believes it holds it.
        for worker in workers:
            worker.renew()
        for key, stored in table.rows.items():
            holders = [w.name for w in workers if key in w.held]
            assert holders == ([] if stored.lease_owner is None else [stored.lease_owner])
    held = [len(worker.held) for worker in workers]
    assert sum(held) == leases
    assert max(held) - min(held) <= 1
    # Stable: nothing moves any more.
    for _ in range(5):
        for worker in workers:
            worker.renew()
            assert worker.take(t) == []
        t += 1.0


@settings(max_examples=40, deadline=None)
@given(
    leases=st.integers(min_value=1, max_value=16),
    workers_count=st.integers(min_value=2, max_value=5),
    deaths=st.lists(st.integers(min_value=5, max_value=30), min_size=1, max_size=4),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_survivors_take_over_every_lease_of_dead_workers(
    leases: int, workers_count: int, deaths: list[int], seed: int
) -> None:
    table = Table([lease(f"s{i:02d}") for i in range(leases)])
    rng = random.Random(seed)
    workers = [Worker(f"w{i}", table) for i in range(workers_count)]
    # The last worker never dies; each death cycle kills the next worker still alive.
    dying = iter(workers[:-1])
    alive = list(workers)
    last_death = max(deaths)
    t = 0.0
    for cycle in range(last_death + int(FAILOVER) + 2 * leases + 6):
        for _ in range(deaths.count(cycle)):
            dead = next(dying, None)
            if dead is not None:
                alive.remove(dead)
        order = alive[:]
        rng.shuffle(order)
        for worker in order:
            worker.renew()
            worker.take(t)
        t += 1.0
    for worker in alive:
        worker.renew()
    held = [len(worker.held) for worker in alive]
    assert sum(held) == leases
    assert max(held) - min(held) <= 1
    assert all(stored.lease_owner in {w.name for w in alive} for stored in table.rows.values())


def test_a_prepared_checkpoint_is_pending_beside_the_committed_one() -> None:
    held = lease("a", "me", 4, checkpoint="100")
    prepared = prepare_checkpoint_value(held, "200", 3, b"state")
    assert prepared == held.next(
        pending_checkpoint="200",
        pending_checkpoint_sub_sequence_number=3,
        pending_checkpoint_state=b"state",
    )
    assert prepared.checkpoint == "100"
    # Renewing and taking keep it; any checkpoint clears all of it.
    assert renew_value(prepared).pending_checkpoint == "200"
    assert take_value(prepared, "other").pending_checkpoint_state == b"state"
    committed = checkpoint_value(prepared, "200", 3)
    assert (committed.checkpoint, committed.checkpoint_sub_sequence_number) == ("200", 3)
    assert committed.pending_checkpoint is None
    assert committed.pending_checkpoint_sub_sequence_number == 0
    assert committed.pending_checkpoint_state is None


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (("",), ValueError, "sequence number"),
        ((SHARD_END,), ValueError, "sequence number"),
        (("5", -1), ValueError, "sub_sequence_number"),
        (("5", 0, "text"), TypeError, "bytes"),
    ],
)
def test_a_bad_prepared_checkpoint_is_refused(
    arguments: tuple[object, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        prepare_checkpoint_value(lease("a", "me", 1), *arguments)  # type: ignore[arg-type]
