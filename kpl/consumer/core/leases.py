"""The lease decisions, with no IO: expiry, balancing, and every value a worker writes.

Theory of operation:

- A worker lists every lease now and then and hands the listing to
  :meth:`LeaseTaker.observe` with ``now`` read from *its own monotonic clock*. For each lease
  the taker remembers the counter and when it first saw that counter value. A lease is
  **expired** when it has no owner, or when its counter has not moved for ``failover_time``
  since then. No stored time and no other worker's clock is ever read, so workers whose
  wall clocks disagree by minutes agree on expiry to within one listing interval. A lease
  seen for the first time with an owner gets the full ``failover_time``: a worker that
  just started cannot tell a live owner from a dead one sooner.
- **Finished** leases (checkpoint ``SHARD_END``) are neither taken nor counted: nobody
  reads those shards any more; they stay only so children can see their parents are done.
- **Live workers** are the owners of unexpired leases, plus the observer itself.
  ``target = ceil(active leases / live workers)``, capped by ``max_leases_per_worker``.
- A worker below target takes **expired leases first** (in random order, so that workers
  taking at once rarely race for the same one). When none is expired it **steals** from
  the most loaded worker, at most ``max_leases_to_steal`` per cycle and only what that
  worker holds above the target; or one lease when the thief needs two or more and the
  most loaded worker sits exactly at the target. That exception ends the stalemate of
  4 leases over 3 workers (2, 2, 0) without letting two workers one apart trade a lease
  back and forth for ever.
- A lease listed as owned by the observer but not held by it (a restarted worker that
  kept its id) is taken at once, like an expired one.
- Every value written is ``lease.next(...)``: counter + 1, stored only if the counter is
  still the one read. A holder keeps a lease valid on its own clock until
  ``failover_time`` after the *start* of its last successful write: by then another
  worker may have seen the counter stand still that long and taken it over, so the
  holder must have stopped delivering first (:class:`Holdings`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kpl.consumer.leases.base import AT_TIMESTAMP, LATEST, SHARD_END, TRIM_HORIZON, Lease

__all__ = [
    "INITIAL_POSITIONS",
    "Holdings",
    "LeaseTaker",
    "ShardLike",
    "Take",
    "checkpoint_value",
    "finished_leases_to_delete",
    "new_leases",
    "prepare_checkpoint_value",
    "release_value",
    "renew_value",
    "take_value",
]

#: The checkpoints a lease created for a shard of a new application may start from.
INITIAL_POSITIONS = frozenset({TRIM_HORIZON, LATEST, AT_TIMESTAMP})


class ShardLike(Protocol):
    """What the lease decisions need of a shard (``kpl.consumer.core.lineage.ShardInfo``)."""

    @property
    def shard_id(self) -> str: ...

    @property
    def parent_shard_ids(self) -> tuple[str, ...]: ...

    @property
    def ending_sequence_number(self) -> str | None: ...


# -- the values written ---------------------------------------------------------------------


def take_value(lease: Lease, worker_id: str) -> Lease:
    """What ``worker_id`` writes to take ``lease`` (counting a change of owner)."""
    switches = lease.owner_switches_since_checkpoint
    if lease.lease_owner != worker_id:
        switches += 1
    return lease.next(lease_owner=worker_id, owner_switches_since_checkpoint=switches)


def renew_value(lease: Lease) -> Lease:
    """What the holder writes to show it is alive: only the counter moves."""
    return lease.next()


def checkpoint_value(lease: Lease, checkpoint: str, sub_sequence_number: int = 0) -> Lease:
    """What the holder writes to record progress through ``checkpoint``'s sub-record.

    A ``SHARD_END`` checkpoint also gives the lease up: a finished shard needs no owner.
    """
    if not checkpoint:
        raise ValueError("a checkpoint is a sequence number or a sentinel, not empty")
    if sub_sequence_number < 0:
        raise ValueError(f"sub_sequence_number must be >= 0, not {sub_sequence_number}")
    owner = None if checkpoint == SHARD_END else lease.lease_owner
    return lease.next(
        checkpoint=checkpoint,
        checkpoint_sub_sequence_number=sub_sequence_number,
        owner_switches_since_checkpoint=0,
        pending_checkpoint=None,
        pending_checkpoint_sub_sequence_number=0,
        pending_checkpoint_state=None,
        lease_owner=owner,
    )


def prepare_checkpoint_value(
    lease: Lease, checkpoint: str, sub_sequence_number: int = 0, state: bytes | None = None
) -> Lease:
    """What the holder writes to prepare a checkpoint (the first phase of two).

    The prepared checkpoint is stored beside the committed one, which it leaves as it is;
    a later checkpoint (this one committed, or any other) clears it.
    """
    if not checkpoint or checkpoint == SHARD_END:
        raise ValueError("a prepared checkpoint is a sequence number")
    if sub_sequence_number < 0:
        raise ValueError(f"sub_sequence_number must be >= 0, not {sub_sequence_number}")
    if state is not None and not isinstance(state, bytes):
        raise TypeError(f"state must be bytes, not {type(state).__name__}")
    return lease.next(
        pending_checkpoint=checkpoint,
        pending_checkpoint_sub_sequence_number=sub_sequence_number,
        pending_checkpoint_state=state,
    )


def release_value(lease: Lease) -> Lease:
    """What the holder writes to give the lease up: no owner, so others take it at once."""
    return lease.next(lease_owner=None)


# -- leases for shards ------------------------------------------------------------------------


def new_leases(
    shards: Sequence[ShardLike], existing: Collection[str], initial_checkpoint: str
) -> list[Lease]:
    """The leases to create so that every shard worth reading has one.

    ``existing`` holds the keys of the leases already stored. A shard whose parent has a
    lease starts at ``TRIM_HORIZON`` (its parent's records come first, then all of its
    own); any other shard starts at ``initial_checkpoint``. At ``AT_TIMESTAMP`` every new
    lease of a first start keeps the timestamp, which no shard's records predate wrongly.
    At ``LATEST`` a closed shard is skipped unless a parent of it is leased: reading it
    from its end would only release its children at their very first record.
    Parents come before their children in the result.
    """
    if initial_checkpoint not in INITIAL_POSITIONS:
        raise ValueError(
            f"initial_checkpoint must be one of {sorted(INITIAL_POSITIONS)}, "
            f"not {initial_checkpoint!r}"
        )
    by_id = {shard.shard_id: shard for shard in shards}
    leased: dict[str, bool] = {}
    created: list[Lease] = []

    def visit(shard: ShardLike) -> bool:
        # Whether the shard has, or gets, a lease. Lineages are shallow (one level per
        # reshard) and acyclic; the memo keeps shared parents (merges) visited once.
        known = leased.get(shard.shard_id)
        if known is not None:
            return known
        if shard.shard_id in existing:
            leased[shard.shard_id] = True
            return True
        leased[shard.shard_id] = False  # guards a malformed, cyclic listing
        parents = shard.parent_shard_ids
        parent_stored = any(parent in existing for parent in parents)
        parent_new = any(
            visit(by_id[parent]) for parent in parents if parent in by_id and parent not in existing
        )
        if (
            initial_checkpoint == LATEST
            and shard.ending_sequence_number is not None
            and not (parent_stored or parent_new)
        ):
            return False
        if parent_stored or (parent_new and initial_checkpoint != AT_TIMESTAMP):
            checkpoint = TRIM_HORIZON
        else:
            checkpoint = initial_checkpoint
        created.append(
            Lease(
                lease_key=shard.shard_id,
                checkpoint=checkpoint,
                parent_shard_ids=frozenset(parents),
            )
        )
        leased[shard.shard_id] = True
        return True

    for shard in shards:
        visit(shard)
    return created


def finished_leases_to_delete(shards: Sequence[ShardLike], leases: Iterable[Lease]) -> list[Lease]:
    """Finished leases whose shards the stream no longer lists (trimmed away).

    Their children treat a parent with no lease as done, so nothing waits on them.
    """
    listed = {shard.shard_id for shard in shards}
    return [
        lease for lease in leases if lease.checkpoint == SHARD_END and lease.lease_key not in listed
    ]


# -- taking -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Take:
    """One lease to take: write ``value`` if the stored counter is still ``expected_counter``."""

    value: Lease
    expected_counter: int
    #: Taken from a live owner (not expired, not free).
    stolen: bool
    #: The owner it was taken from, if any.
    previous_owner: str | None


@dataclass(slots=True)
class _Seen:
    counter: int
    since: float


class LeaseTaker:
    """One worker's view of the lease table and its decisions about what to take."""

    def __init__(
        self,
        worker_id: str,
        *,
        failover_time: float = 10.0,
        max_leases_per_worker: int | None = None,
        max_leases_to_steal: int = 1,
    ) -> None:
        if not worker_id:
            raise ValueError("worker_id must not be empty")
        if not failover_time > 0:
            raise ValueError(f"failover_time must be > 0, not {failover_time}")
        if max_leases_per_worker is not None and max_leases_per_worker < 1:
            raise ValueError(f"max_leases_per_worker must be >= 1, not {max_leases_per_worker}")
        if max_leases_to_steal < 0:
            raise ValueError(f"max_leases_to_steal must be >= 0, not {max_leases_to_steal}")
        self.worker_id = worker_id
        self.failover_time = failover_time
        self.max_leases_per_worker = max_leases_per_worker
        self.max_leases_to_steal = max_leases_to_steal
        self._leases: dict[str, Lease] = {}
        self._seen: dict[str, _Seen] = {}

    @property
    def leases(self) -> Mapping[str, Lease]:
        """The last listing observed, by lease key."""
        return self._leases

    def observe(self, leases: Iterable[Lease], now: float) -> None:
        """Record a complete listing of the table made at ``now`` (this worker's clock)."""
        listing = {lease.lease_key: lease for lease in leases}
        seen: dict[str, _Seen] = {}
        for key, lease in listing.items():
            before = self._seen.get(key)
            if before is not None and before.counter == lease.lease_counter:
                seen[key] = before
            else:
                seen[key] = _Seen(lease.lease_counter, now)
        self._leases = listing
        self._seen = seen

    def is_expired(self, lease_key: str, now: float) -> bool:
        """Whether the observed lease is free to take (no owner, or its counter stood still)."""
        lease = self._leases[lease_key]
        if lease.lease_owner is None:
            return True
        return now - self._seen[lease_key].since >= self.failover_time

    def live_workers(self, now: float) -> set[str]:
        """Owners of unexpired, unfinished leases, and this worker."""
        workers = {
            lease.lease_owner
            for key, lease in self._leases.items()
            if lease.lease_owner is not None
            and lease.checkpoint != SHARD_END
            and not self.is_expired(key, now)
        }
        workers.add(self.worker_id)
        return workers

    def target(self, now: float) -> int:
        """How many leases this worker should hold at ``now``."""
        active = sum(1 for lease in self._leases.values() if lease.checkpoint != SHARD_END)
        target = math.ceil(active / len(self.live_workers(now)))
        if self.max_leases_per_worker is not None:
            target = min(target, self.max_leases_per_worker)
        return target

    def plan(
        self, held: Collection[str], now: float, rng: random.Random | None = None
    ) -> list[Take]:
        """The leases to take at ``now`` given the keys this worker holds (its own record).

        ``rng`` shuffles the candidates; without it they are taken in key order.
        """
        available: list[Lease] = []
        counts: dict[str, list[Lease]] = {}
        for key, lease in self._leases.items():
            if lease.checkpoint == SHARD_END or key in held:
                continue
            if lease.lease_owner == self.worker_id or self.is_expired(key, now):
                available.append(lease)
            else:
                assert lease.lease_owner is not None
                counts.setdefault(lease.lease_owner, []).append(lease)
        target = self.target(now)
        # Held leases count even when the listing lags behind this worker's own take.
        listed = self._leases
        mine = sum(1 for key in held if key not in listed or listed[key].checkpoint != SHARD_END)
        needed = target - mine
        if needed <= 0:
            return []
        if available:
            self._order(available, rng)
            return [self._take(lease, stolen=False) for lease in available[:needed]]
        if not counts:
            return []
        _, theirs = max(counts.items(), key=lambda item: (len(item[1]), item[0]))
        over = len(theirs) - target
        steal = min(needed, over)
        if over == 0 and needed > 1:
            steal = 1
        steal = min(steal, self.max_leases_to_steal)
        if steal <= 0:
            return []
        self._order(theirs, rng)
        return [self._take(lease, stolen=True) for lease in theirs[:steal]]

    def _take(self, lease: Lease, *, stolen: bool) -> Take:
        return Take(
            value=take_value(lease, self.worker_id),
            expected_counter=lease.lease_counter,
            stolen=stolen,
            previous_owner=lease.lease_owner,
        )

    @staticmethod
    def _order(leases: list[Lease], rng: random.Random | None) -> None:
        leases.sort(key=lambda lease: lease.lease_key)
        if rng is not None:
            rng.shuffle(leases)


# -- holding ----------------------------------------------------------------------------------


class Holdings:
    """The leases one worker holds, each valid on its own clock until it must let go.

    A holder's write that started at ``t`` and succeeded keeps the lease valid until
    ``t + failover_time``; with no successful write since, the holder must consider the
    lease lost (:meth:`stale`), because others are about to take it.
    """

    def __init__(self, failover_time: float) -> None:
        if not failover_time > 0:
            raise ValueError(f"failover_time must be > 0, not {failover_time}")
        self.failover_time = failover_time
        self._leases: dict[str, Lease] = {}
        self._valid_until: dict[str, float] = {}

    @property
    def leases(self) -> Mapping[str, Lease]:
        """The held leases as last written, by key."""
        return self._leases

    def written(self, lease: Lease, started_at: float) -> None:
        """Record a successful write of ``lease`` (a take, renewal or checkpoint)."""
        self._leases[lease.lease_key] = lease
        self._valid_until[lease.lease_key] = started_at + self.failover_time

    def drop(self, lease_key: str) -> Lease | None:
        """Forget a lease (released, finished or lost); the last value written, if held."""
        self._valid_until.pop(lease_key, None)
        return self._leases.pop(lease_key, None)

    def stale(self, now: float) -> list[str]:
        """Held leases whose last successful write is too old to trust at ``now``."""
        return sorted(key for key, until in self._valid_until.items() if now >= until)

    def next_deadline(self) -> float | None:
        """When the first held lease goes stale without another successful write."""
        return min(self._valid_until.values(), default=None)
