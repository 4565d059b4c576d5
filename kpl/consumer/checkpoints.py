"""Two-phase checkpoints, as the KCL's ``prepareCheckpoint``.

``prepared = await batch.prepare_checkpoint(state)`` records a *pending* checkpoint in the
shard's lease (fenced by the lease counter like every write) while the committed one stays
where it was; ``await prepared.checkpoint()`` commits it. An application that must finish
an outside effect (a database transaction, a file upload) between reading and
checkpointing prepares first, then does the effect, then commits: a worker that takes the
lease over in between sees the pending checkpoint (``batch.pending_checkpoint``, or the
``on_shard_started`` hook) and can find out whether the effect happened. Any later
checkpoint clears the pending one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kpl.consumer.leases.base import Lease

__all__ = ["PendingCheckpoint", "PreparedCheckpoint"]


@dataclass(frozen=True, slots=True)
class PendingCheckpoint:
    """A checkpoint prepared and not committed, as found in a lease."""

    sequence_number: str
    sub_sequence_number: int = 0
    #: What the application stored with it (``None`` when nothing).
    state: bytes | None = None

    @classmethod
    def of(cls, lease: Lease) -> PendingCheckpoint | None:
        """The lease's pending checkpoint, if it has one."""
        if lease.pending_checkpoint is None:
            return None
        return cls(
            lease.pending_checkpoint,
            lease.pending_checkpoint_sub_sequence_number,
            lease.pending_checkpoint_state,
        )


@dataclass(eq=False)
class PreparedCheckpoint:
    """A checkpoint this worker prepared; :meth:`checkpoint` commits it."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    state: bytes | None
    _commit: Callable[[], Awaitable[None]] = field(repr=False)

    async def checkpoint(self) -> None:
        """Commit the prepared checkpoint (raises ``LeaseLost`` if the lease was taken
        by another worker since; a checkpoint already past it is left as it is)."""
        await self._commit()
