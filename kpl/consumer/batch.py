"""A shard's batch as the application sees it, and the state of one shard's reader.

A :class:`Batch` is handed to the application; its checkpoint methods go back through the
:class:`~kpl.consumer.consumer.Consumer` that delivered it, which owns the lease and the
fencing. A :class:`ShardReader` is the Consumer's record of one shard for one lease term:
its cancel scope, what was processed and checkpointed, and the figures for ``metrics()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from kpl.consumer.checkpoints import PendingCheckpoint, PreparedCheckpoint
from kpl.consumer.leases.base import Lease
from kpl.consumer.records import UserRecord

if TYPE_CHECKING:
    from kpl.consumer.consumer import Consumer


@dataclass(eq=False)
class Batch:
    """One shard's next user records, in order."""

    shard_id: str
    records: Sequence[UserRecord]
    #: How far the shard's reader was behind the tip when it read these.
    millis_behind_latest: int
    _consumer: Consumer = field(repr=False)
    _reader: ShardReader = field(repr=False)
    _done: anyio.Event = field(default_factory=anyio.Event, repr=False)

    async def checkpoint(self) -> None:
        """Checkpoint through the batch's last record (raises ``LeaseLost`` if the lease
        was taken by another worker: the new owner delivers what was not checkpointed)."""
        self._consumer._processed(self)
        last = self.records[-1]
        assert last.sequence_number is not None
        await self._consumer._checkpoint(
            self._reader, last.sequence_number, last.sub_sequence_number
        )

    async def prepare_checkpoint(self, state: bytes | None = None) -> PreparedCheckpoint:
        """Prepare a checkpoint through the batch's last record, with optional ``state``;
        the returned handle's ``checkpoint()`` commits it (raises ``LeaseLost`` as
        :meth:`checkpoint` does)."""
        last = self.records[-1]
        assert last.sequence_number is not None
        return await self._consumer._prepare(
            self._reader, last.sequence_number, last.sub_sequence_number, state
        )

    @property
    def pending_checkpoint(self) -> PendingCheckpoint | None:
        """The checkpoint a previous owner of the shard had prepared and not committed
        when this worker took the lease (the KCL passes it to ``initialize``)."""
        return PendingCheckpoint.of(self._reader.lease)


@dataclass(eq=False)
class ShardReader:
    """One shard's reader for one lease term."""

    shard_id: str
    lease: Lease
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    finished: anyio.Event = field(default_factory=anyio.Event)
    #: The last (sequence, sub) known processed / written as the checkpoint.
    processed: tuple[int, int] | None = None
    processed_at: tuple[str, int] | None = None
    checkpointed: tuple[int, int] | None = None
    ended: bool = False
    stopping: bool = False
    #: A handler in progress (run()): shielded from cancellation until its deadline.
    handler_scope: anyio.CancelScope | None = None
    last_batch: Batch | None = None
    millis_behind_latest: int = 0
    records: int = 0
    bytes: int = 0
    #: KPL aggregates that did not decode, delivered as plain data instead.
    malformed_aggregates: int = 0
