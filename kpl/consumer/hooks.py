"""The KCL's lifecycle notifications, for both ways of consuming.

``Consumer(..., hooks=ConsumerHooks(...))`` calls each hook, an async function, for
``async for batch in consumer`` and for ``consumer.run(handler)`` alike:

- ``on_shard_started(ShardStarted)``: this worker took a shard's lease and starts reading
  it (the KCL's ``initialize``), before any batch of the shard; ``started`` says where it
  resumes and which checkpoint a previous owner had prepared and not committed;
- ``on_lease_lost(shard_id)``: another worker took the lease; nothing more of the shard is
  delivered here and checkpoints for it raise ``LeaseLost``;
- ``on_shard_ended(shard_id)``: the shard was read to its end and checkpointed at
  ``SHARD_END`` (its children can start);
- ``on_shutdown_requested(shard_id)``: for each shard still held when the consumer was
  asked to stop (:meth:`~kpl.consumer.Consumer.shutdown` or leaving ``async with``),
  before the final checkpoints and the release; it may still checkpoint.

A hook that raises is logged and does not stop the consumer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace

from kpl.consumer.checkpoints import PendingCheckpoint

__all__ = ["ConsumerHooks", "ShardHook", "ShardStarted", "StartedHook"]


@dataclass(frozen=True, slots=True)
class ShardStarted:
    """A shard this worker starts reading, and where."""

    shard_id: str
    #: The committed checkpoint: a sequence number or TRIM_HORIZON, LATEST, AT_TIMESTAMP.
    checkpoint: str
    checkpoint_sub_sequence_number: int
    #: A checkpoint prepared by a previous owner and never committed.
    pending_checkpoint: PendingCheckpoint | None


#: A hook given the shard id.
ShardHook = Callable[[str], Awaitable[None]]
#: The hook of a shard's start.
StartedHook = Callable[[ShardStarted], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConsumerHooks:
    """The lifecycle hooks of a :class:`~kpl.consumer.Consumer` (each optional)."""

    on_shard_started: StartedHook | None = None
    on_lease_lost: ShardHook | None = None
    on_shard_ended: ShardHook | None = None
    on_shutdown_requested: ShardHook | None = None

    def with_hooks(self, **hooks: ShardHook | None) -> ConsumerHooks:
        """These hooks plus ``hooks``; a hook given both here and there is an error."""
        given = {name: hook for name, hook in hooks.items() if hook is not None}
        for name in given:
            if getattr(self, name) is not None:
                raise ValueError(f"{name} is given both to the Consumer's hooks and here")
        names = {f.name for f in fields(self)}
        unknown = given.keys() - names
        if unknown:
            raise TypeError(f"unknown hook(s): {', '.join(sorted(unknown))}")
        return replace(self, **given)  # type: ignore[arg-type]
