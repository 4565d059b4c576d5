"""How a consumer gets a shard's records: the interface between the Consumer and a reader.

The :class:`~kpl.consumer.Consumer` owns everything around a shard's records (leases,
lineage, where a lease term starts, delivery, checkpoints, SHARD_END); a
:class:`Retrieval` only fetches. For each lease term the consumer calls
:meth:`Retrieval.read` with the shard's :class:`~kpl.consumer.core.reading.ShardCursor`
(which knows where to start and where to resume after an interruption) and a
:data:`Deliver` callback; ``read`` hands every answer's Kinesis records to the callback,
in order, and returns once the shard has ended (the consumer then writes SHARD_END).
Cancelling ``read`` (a lost lease, shutdown) stops it at once.

Two retrievals exist: polling with GetRecords (:mod:`kpl.consumer.polling`) and enhanced
fan-out with SubscribeToShard (:mod:`kpl.consumer.fanout`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from kpl.consumer.core.reading import ShardCursor

__all__ = ["Deliver", "Retrieval"]

#: Called with one answer's Kinesis records (``Data`` as bytes), their data's size in
#: bytes and the answer's MillisBehindLatest; returns once the records were handed on.
Deliver = Callable[[list[Mapping[str, Any]], int, int], Awaitable[None]]


class Retrieval(Protocol):
    """Fetches one shard's records for a lease term (see the module's docstring)."""

    async def read(self, cursor: ShardCursor, deliver: Deliver) -> None:
        """Hand every record of ``cursor``'s shard from its position on to ``deliver``;
        return at the shard's end."""
        ...

    async def aclose(self) -> None:
        """Release what the retrieval holds (every ``read`` has returned)."""
        ...

    def metrics(self) -> dict[str, Any]:
        """What the retrieval counts (its ``mode`` at the least)."""
        ...
