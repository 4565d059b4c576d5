"""What a lease is and the one operation every lease store offers: compare-and-set.

A lease gives one worker the right to read one shard for an application. Leases live in
a shared table (SQLite on one host, DynamoDB across hosts, memory in tests) whose items
follow the KCL's schema, so an application can move between the Java KCL and this
consumer keeping its checkpoints.

Theory of operation:

- Every write is conditional on ``lease_counter`` being the value the writer last read,
  and stores the counter plus one. Renewing, taking, releasing and checkpointing are all
  such writes; a worker that lost a lease learns it from a refused write (``False``), and
  nothing it writes afterwards lands. The stores are therefore dumb: they only compare
  and set. Every decision (which lease to take, when one has expired) is made by the
  sans-IO core in ``kpl.consumer.core`` from what :meth:`LeaseStore.list_leases` shows.
- Creation is conditional on the key not existing, so two workers that discover the
  same new shard create its lease once.
- Nothing here reads a clock: expiry is judged by each observer on its own monotonic
  clock from when it last saw a lease's counter move, never from a stored time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "AT_TIMESTAMP",
    "LATEST",
    "SHARD_END",
    "TRIM_HORIZON",
    "Lease",
    "LeaseStore",
]

#: Checkpoint values that are not sequence numbers (the KCL's sentinels).
TRIM_HORIZON: Final = "TRIM_HORIZON"
LATEST: Final = "LATEST"
AT_TIMESTAMP: Final = "AT_TIMESTAMP"
SHARD_END: Final = "SHARD_END"


@dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease as stored (the KCL's item attributes, in snake case)."""

    #: The shard id (``leaseKey``).
    lease_key: str
    #: The worker holding it (``leaseOwner``); ``None`` when free.
    lease_owner: str | None = None
    #: Incremented by every write (``leaseCounter``); the fence.
    lease_counter: int = 0
    #: A sequence number or one of the sentinels above (``checkpoint``).
    checkpoint: str = TRIM_HORIZON
    #: Sub-records at or below this one of the checkpointed record are done
    #: (``checkpointSubSequenceNumber``).
    checkpoint_sub_sequence_number: int = 0
    #: ``ownerSwitchesSinceCheckpoint``.
    owner_switches_since_checkpoint: int = 0
    #: The shard's parents (``parentShardId``, a string set): read to SHARD_END first.
    parent_shard_ids: frozenset[str] = frozenset()
    #: A prepared, not yet committed checkpoint (``pendingCheckpoint``); ``None`` when none.
    pending_checkpoint: str | None = None
    #: Its sub-record (``pendingCheckpointSubSequenceNumber``).
    pending_checkpoint_sub_sequence_number: int = 0
    #: Application state stored with it (``pendingCheckpointState``, binary).
    pending_checkpoint_state: bytes | None = None

    def __post_init__(self) -> None:
        if self.pending_checkpoint is None and (
            self.pending_checkpoint_sub_sequence_number or self.pending_checkpoint_state is not None
        ):
            raise ValueError("a pending sub-record or state need a pending checkpoint")

    def next(self, **changes: object) -> Lease:
        """This lease with ``changes`` and the counter moved on: the value to write."""
        return dataclasses.replace(self, lease_counter=self.lease_counter + 1, **changes)  # type: ignore[arg-type]


class LeaseStore(Protocol):
    """A table of leases with conditional writes (one per application)."""

    async def initialize(self) -> None:
        """Create the table when it does not exist yet (idempotent)."""

    async def list_leases(self) -> list[Lease]:
        """Every lease, as stored now (consistent reads)."""

    async def get_lease(self, lease_key: str) -> Lease | None:
        """One lease, or ``None`` when there is none for the key."""

    async def create_lease(self, lease: Lease) -> bool:
        """Store ``lease`` unless its key exists; ``True`` when this call created it."""

    async def replace_lease(self, lease: Lease, expected_counter: int) -> bool:
        """Store ``lease`` if the stored counter is ``expected_counter``; ``True`` if done.

        Attributes the store holds beyond :class:`Lease`'s (another KCL's) are kept.
        """

    async def delete_lease(self, lease_key: str, expected_counter: int) -> bool:
        """Delete the lease if its counter is ``expected_counter``; ``True`` if done."""

    async def close(self) -> None:
        """Release connections and files; the store is not used afterwards."""
