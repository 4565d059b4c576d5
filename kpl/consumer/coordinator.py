"""The asyncio shell around the lease decisions: list, take, renew, checkpoint, release.

One :class:`LeaseCoordinator` per worker. Its :meth:`~LeaseCoordinator.run` keeps two
loops going: the *taker* (create leases for new shards, list the table, take what the
core says) and the *renewer* (move the counter of every held lease, so that others see
the holder alive). Every write goes through one compare-and-set on the lease counter,
serialized per lease inside this worker, so a renewal never races the same worker's
checkpoint.

A write whose outcome is unknown (the store failed mid-call) may have landed. The
coordinator remembers it; if a later write is refused, it reads the lease back, and if
the stored value is one it had tried to write, the lease is still its own.

A lease written under this worker's id by someone else (a refused write reads it back;
every listing is checked) means a second live worker has the same id
(:mod:`kpl.consumer.core.namesakes`): the coordinator gives up every lease and
:meth:`~LeaseCoordinator.run` raises :class:`~kpl.consumer.errors.DuplicateWorkerId`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from kpl.consumer.core.leases import (
    Holdings,
    LeaseTaker,
    ShardLike,
    checkpoint_value,
    finished_leases_to_delete,
    new_leases,
    prepare_checkpoint_value,
    release_value,
    renew_value,
)
from kpl.consumer.core.namesakes import NamesakeWatch
from kpl.consumer.errors import ConsumerError, DuplicateWorkerId, LeaseLost, LeaseStoreError
from kpl.consumer.leases.base import SHARD_END, TRIM_HORIZON, Lease, LeaseStore

__all__ = ["LeaseAcquired", "LeaseCoordinator", "LeaseEvent", "LeaseRevoked"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseAcquired:
    """This worker took a lease: it may read the shard from the lease's checkpoint."""

    lease: Lease
    #: Taken from a live worker rather than a free or expired lease.
    stolen: bool = False
    previous_owner: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseRevoked:
    """This worker no longer holds a lease: it must stop delivering the shard's records."""

    shard_id: str
    reason: str


LeaseEvent = LeaseAcquired | LeaseRevoked

_METRICS = (
    "taken",
    "stolen",
    "lost",
    "released",
    "renewals",
    "checkpoints",
    "prepared",
    "created",
)


class LeaseCoordinator:
    """One worker's leases: takes its share, keeps it alive, and fences its writes.

    ``store`` is the application's lease table and ``worker_id`` this worker's name in it
    (unique per process). ``list_shards`` answers the stream's shards; leases are created
    for new ones starting at ``initial_checkpoint`` (TRIM_HORIZON, LATEST or
    AT_TIMESTAMP). ``failover_time``, ``max_leases_per_worker`` and
    ``max_leases_to_steal`` are the KCL's settings of the same names. ``take_interval``
    (default ``failover_time / 10``) paces the taker, ``renew_interval`` (default
    ``failover_time / 3``) the renewer. ``clock`` is a monotonic clock, never a wall
    clock; ``rng`` orders the candidates of a take.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        worker_id: str,
        list_shards: Callable[[], Awaitable[Sequence[ShardLike]]],
        failover_time: float = 10.0,
        max_leases_per_worker: int | None = None,
        max_leases_to_steal: int = 1,
        initial_checkpoint: str = TRIM_HORIZON,
        take_interval: float | None = None,
        renew_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self._list_shards = list_shards
        self._taker = LeaseTaker(
            worker_id,
            failover_time=failover_time,
            max_leases_per_worker=max_leases_per_worker,
            max_leases_to_steal=max_leases_to_steal,
        )
        # Validated once here, so a bad value fails at construction, not in a loop.
        new_leases([], (), initial_checkpoint)
        self.initial_checkpoint = initial_checkpoint
        self.failover_time = failover_time
        # A dead worker's counter is first seen standing at most one cycle after it
        # stopped and found expired at most one cycle after failover_time: its leases
        # move within failover_time + 2 cycles; a released lease within one cycle.
        # A cycle is one listing of the table (a consistent scan on DynamoDB).
        self.take_interval = failover_time / 10 if take_interval is None else take_interval
        self.renew_interval = failover_time / 3 if renew_interval is None else renew_interval
        if not (self.take_interval > 0 and self.renew_interval > 0):
            raise ValueError("take_interval and renew_interval must be > 0")
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._holdings = Holdings(failover_time)
        self._locks: dict[str, asyncio.Lock] = {}
        # Writes whose outcome is unknown, by lease key: (value, when the write started).
        self._uncertain: dict[str, list[tuple[Lease, float]]] = {}
        self._namesakes = NamesakeWatch(worker_id)
        self._fatal: DuplicateWorkerId | None = None
        self._events: asyncio.Queue[LeaseEvent] = asyncio.Queue()
        self._sync_requested = True
        self._wake_taker = asyncio.Event()
        self._closing = False
        self._counts = dict.fromkeys(_METRICS, 0)

    # -- what the reading side asks ------------------------------------------------------------

    def held(self) -> Mapping[str, Lease]:
        """The leases this worker holds now, each as this worker last wrote it."""
        return dict(self._holdings.leases)

    def observed(self) -> Mapping[str, Lease]:
        """Every lease in the last listing (a parent with no lease has been cleaned up)."""
        return self._taker.leases

    async def events(self) -> AsyncIterator[LeaseEvent]:
        """Leases acquired and revoked, in order, for one consumer, until cancelled."""
        while True:
            yield await self._events.get()

    def poll_events(self) -> list[LeaseEvent]:
        """The events queued so far, without waiting."""
        drained: list[LeaseEvent] = []
        while not self._events.empty():
            drained.append(self._events.get_nowait())
        return drained

    def metrics(self) -> dict[str, int]:
        """Leases held now, and counts of takes, steals, losses and writes since the start."""
        return {"held": len(self._holdings.leases), **self._counts}

    def request_shard_sync(self) -> None:
        """List the stream's shards at the next taker cycle (after a shard ended), and soon."""
        self._sync_requested = True
        self._wake_taker.set()

    # -- the loops ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Create the lease table if needed, then take and renew leases until cancelled.

        A store that cannot be initialized raises here: at once for a lasting reason (a
        bad path, no credentials), after ``failover_time`` of retries if it is only
        unavailable (workers starting together may briefly lock a SQLite file). Later
        store failures are logged and retried at the next cycle; leases not renewed for
        ``failover_time`` meanwhile are revoked.
        """
        await self._initialize()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._taker_loop(), name=f"lease-taker-{self.worker_id}")
                group.create_task(self._renewer_loop(), name=f"lease-renewer-{self.worker_id}")
        except BaseExceptionGroup:
            if self._fatal is not None:
                raise self._fatal from None
            raise

    async def _initialize(self) -> None:
        give_up = self._clock() + self.failover_time
        delay = min(0.05, self.take_interval)
        while True:
            try:
                await self._store.initialize()
                return
            except ConsumerError as error:
                if not error.retryable or self._clock() + delay >= give_up:
                    raise
                logger.warning("%s: lease store unavailable, retrying: %s", self.worker_id, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.take_interval * 5)

    async def _taker_loop(self) -> None:
        while True:
            self._wake_taker.clear()
            try:
                await self.take_leases()
            except DuplicateWorkerId:
                raise
            except ConsumerError as error:
                logger.warning("%s: taking leases failed: %s", self.worker_id, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_taker.wait(), self.take_interval)

    async def _renewer_loop(self) -> None:
        while True:
            await self.renew_leases()
            delay = self.renew_interval
            deadline = self._holdings.next_deadline()
            if deadline is not None:
                # Wake in time to stop delivering a lease that could not be renewed.
                delay = max(0.0, min(delay, deadline - self._clock()))
            await asyncio.sleep(delay)

    async def take_leases(self) -> list[Lease]:
        """One taker cycle: sync shards if asked, list the table, take this worker's share.

        Returns the leases taken. Raises :class:`LeaseStoreError` if the table cannot be
        listed; a refused take is not an error (another worker was quicker).
        """
        if self._sync_requested and not self._closing:
            await self.sync_shards()
        if self._fatal is not None:
            raise self._fatal
        listing = await self._store.list_leases()
        now = self._clock()
        for lease in listing:
            if self._namesakes.foreign(lease):
                self._fail(lease.lease_key)
        self._taker.observe(listing, now)
        if self._closing:
            return []
        taken: list[Lease] = []
        for take in self._taker.plan(self._holdings.leases.keys(), now, self._rng):
            key = take.value.lease_key
            async with self._lock(key):
                if self._closing or key in self._holdings.leases:
                    continue
                started = self._clock()
                if not await self._replace(take.value, take.expected_counter, started):
                    continue
                self._holdings.written(take.value, started)
            self._counts["taken"] += 1
            if take.stolen:
                self._counts["stolen"] += 1
            logger.info(
                "%s took %s%s",
                self.worker_id,
                key,
                f" from {take.previous_owner}" if take.stolen else "",
            )
            self._events.put_nowait(LeaseAcquired(take.value, take.stolen, take.previous_owner))
            taken.append(take.value)
        return taken

    async def sync_shards(self) -> None:
        """Create the leases of shards that have none; delete finished ones trimmed away."""
        try:
            shards = await self._list_shards()
        except Exception as error:  # the reading side's client: any of its errors
            logger.warning("%s: listing shards failed: %s", self.worker_id, error)
            return
        existing = await self._store.list_leases()
        keys = {lease.lease_key for lease in existing}
        for lease in new_leases(shards, keys, self.initial_checkpoint):
            if await self._store.create_lease(lease):
                self._counts["created"] += 1
        for lease in finished_leases_to_delete(shards, existing):
            await self._store.delete_lease(lease.lease_key, lease.lease_counter)
        self._sync_requested = False

    async def renew_leases(self) -> None:
        """One renewer cycle: revoke leases gone stale, then renew every other held lease."""
        for key in self._holdings.stale(self._clock()):
            self._revoke(key, f"not renewed within failover_time ({self.failover_time:g} s)")
        await asyncio.gather(*(self._renew(key) for key in list(self._holdings.leases)))

    async def _renew(self, key: str) -> None:
        try:
            await self._write(key, renew_value)
        except LeaseLost:
            pass  # already revoked and logged
        except LeaseStoreError as error:
            logger.warning("%s: renewing %s failed: %s", self.worker_id, key, error)
        else:
            self._counts["renewals"] += 1

    # -- writes the reading side asks for --------------------------------------------------------

    async def checkpoint(
        self, shard_id: str, checkpoint: str, sub_sequence_number: int = 0
    ) -> None:
        """Record that the shard was processed through ``checkpoint``'s sub-record.

        Raises :class:`LeaseLost` if another worker holds the lease (the shard's records
        must no longer be delivered), :class:`LeaseStoreError` if the store failed (the
        lease is still held; the call may be retried). ``SHARD_END`` also gives the lease
        up, since a finished shard needs no reader, and asks for a shard sync.
        """

        def change(lease: Lease) -> Lease:
            return checkpoint_value(lease, checkpoint, sub_sequence_number)

        checkpoint_value(Lease(shard_id), checkpoint, sub_sequence_number)  # validate first
        await self._write(shard_id, change)
        self._counts["checkpoints"] += 1
        if checkpoint == SHARD_END:
            self._holdings.drop(shard_id)
            self.request_shard_sync()

    async def prepare_checkpoint(
        self,
        shard_id: str,
        checkpoint: str,
        sub_sequence_number: int = 0,
        state: bytes | None = None,
    ) -> None:
        """Record ``checkpoint`` as prepared (pending), with optional application ``state``.

        The committed checkpoint stays as it is until :meth:`checkpoint` writes one, which
        clears the pending one. A worker that takes the lease over sees both. Raises as
        :meth:`checkpoint` does.
        """

        def change(lease: Lease) -> Lease:
            return prepare_checkpoint_value(lease, checkpoint, sub_sequence_number, state)

        prepare_checkpoint_value(Lease(shard_id), checkpoint, sub_sequence_number, state)
        await self._write(shard_id, change)
        self._counts["prepared"] += 1

    async def release(self, shard_id: str) -> None:
        """Give a held lease up so that another worker takes it at its next cycle.

        The lease is no longer held afterwards whatever happens; if the store failed
        (:class:`LeaseStoreError` is raised) others take it after ``failover_time``.
        """
        try:
            await self._write(shard_id, release_value)
        except LeaseLost:
            return
        except DuplicateWorkerId:
            return
        finally:
            self._holdings.drop(shard_id)
            self._uncertain.pop(shard_id, None)
        self._counts["released"] += 1

    async def release_all(self) -> None:
        """Stop taking leases and release every held one (a graceful shutdown).

        Never raises a store error: a lease that could not be released expires.
        """
        self._closing = True
        keys = list(self._holdings.leases)
        results = await asyncio.gather(*(self.release(key) for key in keys), return_exceptions=True)
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, LeaseStoreError):
                logger.warning("%s: releasing %s failed: %s", self.worker_id, key, result)
            elif isinstance(result, BaseException):
                raise result

    # -- the one write path --------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _replace(self, value: Lease, expected_counter: int, started: float) -> bool:
        # Every compare-and-set of this worker, so that the namesake watch knows its writes.
        self._namesakes.writing(value)
        try:
            written = await self._store.replace_lease(value, expected_counter)
        except LeaseStoreError:
            self._namesakes.written(value, landed=None)
            self._uncertain.setdefault(value.lease_key, []).append((value, started))
            raise
        self._namesakes.written(value, landed=written)
        return written

    async def _write(self, key: str, change: Callable[[Lease], Lease]) -> Lease:
        async with self._lock(key):
            if self._fatal is not None:
                raise self._fatal
            held = self._holdings.leases.get(key)
            if held is None:
                raise LeaseLost(key, "this worker does not hold it")
            for _ in range(2):
                value = change(held)
                started = self._clock()
                if await self._replace(value, held.lease_counter, started):
                    self._uncertain.pop(key, None)
                    self._holdings.written(value, started)
                    return value
                landed = await self._landed(key)
                if landed is None:
                    break
                held = landed
            reason = "its counter moved: another worker took it"
            self._revoke(key, reason)
            raise LeaseLost(key, reason)

    async def _landed(self, key: str) -> Lease | None:
        # After a refused write: an earlier write of unknown outcome, if one did land.
        # The uncertain writes are kept until the read succeeds, so a failed read leaves
        # the question open.
        stored = await self._store.get_lease(key)
        uncertain = self._uncertain.pop(key, [])
        for value, started in reversed(uncertain):
            if stored == value:
                self._holdings.written(value, started)
                return value
        if stored is not None and self._namesakes.foreign(stored):
            self._fail(key)
        return None

    def _fail(self, key: str) -> None:
        # Another live worker writes under this id: give every lease up and stop.
        error = DuplicateWorkerId(self.worker_id, key)
        if self._fatal is None:
            self._fatal = error
            logger.error("%s", error)
            for held in list(self._holdings.leases):
                self._revoke(held, "another live worker uses this worker id")
            self._closing = True
        raise self._fatal

    def _revoke(self, key: str, reason: str) -> None:
        if self._holdings.drop(key) is None:
            return
        self._uncertain.pop(key, None)
        self._counts["lost"] += 1
        logger.warning("%s lost %s: %s", self.worker_id, key, reason)
        self._events.put_nowait(LeaseRevoked(key, reason))
