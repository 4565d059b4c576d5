"""Noticing a second live worker that uses this worker's id, with no IO.

Two workers configured with the same ``worker_id`` would each take the other's leases as
their own (a lease owned by one's own id is a restarted worker's, taken at once), and both
would deliver the same shards. Fencing keeps their checkpoints from corrupting each other,
but the application would see every shard flap between two processes. The worker that
notices stops with :class:`~kpl.consumer.errors.DuplicateWorkerId` instead.

Theory of operation: only a worker with this id writes this id as a lease's owner, and
every write moves the lease counter. So a lease owned by this id whose counter is beyond
every value this worker wrote, may have written (a write whose answer was lost), or is
writing now, was written by another process with the same id. A lease first seen owned by
this id without this worker having written it (a predecessor's, after a restart) sets the
baseline: if its counter moves past it without this worker's write, the predecessor is
alive. Nothing here reads a clock.
"""

from __future__ import annotations

from collections import Counter

from kpl.consumer.leases.base import Lease

__all__ = ["NamesakeWatch"]


class NamesakeWatch:
    """One worker's account of the lease counters it moved, to tell its writes from others'."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        # Per lease: the highest counter this worker wrote or may have written (or, for a
        # lease first seen owned by this id, the counter it had then).
        self._known: dict[str, int] = {}
        self._in_flight: dict[str, Counter[int]] = {}

    def writing(self, lease: Lease) -> None:
        """A write of ``lease`` is about to start."""
        self._in_flight.setdefault(lease.lease_key, Counter())[lease.lease_counter] += 1

    def written(self, lease: Lease, *, landed: bool | None) -> None:
        """The write of ``lease`` ended: landed, refused (``False``) or unknown (``None``)."""
        key = lease.lease_key
        flights = self._in_flight.get(key)
        if flights is not None:
            flights[lease.lease_counter] -= 1
            if flights[lease.lease_counter] <= 0:
                del flights[lease.lease_counter]
            if not flights:
                del self._in_flight[key]
        if landed is not False:
            self._known[key] = max(self._known.get(key, lease.lease_counter), lease.lease_counter)

    def foreign(self, stored: Lease) -> bool:
        """Whether ``stored`` (as listed or read) was written by another worker with this id."""
        if stored.lease_owner != self.worker_id:
            return False
        key = stored.lease_key
        limits: list[int] = list(self._in_flight.get(key, Counter()))
        if key in self._known:
            limits.append(self._known[key])
        if not limits:
            self._known[key] = stored.lease_counter
            return False
        return stored.lease_counter > max(limits)
