"""How a :class:`~kpl.consumer.Consumer` reads and balances, and what it needs of its
lease coordinator."""

from __future__ import annotations

import math
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from kpl.consumer.core.lineage import ShardInfo
from kpl.consumer.leases.base import Lease, LeaseStore
from kpl.protocol.limits import GET_RECORDS_MAX_LIMIT

__all__ = [
    "ConsumerConfig",
    "Coordinator",
    "CoordinatorFactory",
    "InitialPosition",
    "RetrievalMode",
    "check_consumer_name",
    "lease_coordinator",
]

InitialPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
#: How shards are read: GetRecords polling, or enhanced fan-out (SubscribeToShard).
RetrievalMode = Literal["polling", "fanout"]


#: What RegisterStreamConsumer takes as a name.
_CONSUMER_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")


def check_consumer_name(name: str) -> str:
    """``name`` if RegisterStreamConsumer takes it, else a ValueError saying why."""
    if not _CONSUMER_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a stream consumer name (1-128 letters, digits, '_', '.', '-'); "
            "set ConsumerConfig.consumer_name"
        )
    return name


def _default_worker_id() -> str:
    # Host and pid say where a worker runs; the random part keeps two workers distinct
    # when a pid is reused (containers all start at pid 1).
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ConsumerConfig:
    """How a :class:`Consumer` reads and balances (the KCL's settings)."""

    #: Where a shard with no checkpoint starts: the oldest record, new records, or a time.
    initial_position: InitialPosition = "LATEST"
    #: For AT_TIMESTAMP: epoch seconds.
    initial_timestamp: float | None = None
    #: A lease whose counter stood still this long (on the observer's clock) is expired.
    failover_time: float = 10.0
    #: At most this many leases per worker (``None``: no limit).
    max_leases_per_worker: int | None = None
    #: At most this many leases stolen from other workers per taker cycle.
    max_leases_to_steal: int = 1
    #: GetRecords ``Limit``.
    max_records: int = GET_RECORDS_MAX_LIMIT
    #: Between two GetRecords calls on a shard that is caught up.
    idle_time_between_reads: float = 0.2
    #: This worker's name in the lease table (unique per process and host by default).
    worker_id: str = field(default_factory=_default_worker_id)
    #: How long a handler may go on after shutdown was requested before it is cancelled.
    shutdown_grace: float = 10.0
    #: ``"polling"`` (GetRecords, shared with the stream's other readers) or ``"fanout"``
    #: (a registered stream consumer and SubscribeToShard: 2 MiB/s per shard of its own,
    #: records pushed as they arrive).
    retrieval: RetrievalMode = "polling"
    #: With fan-out: the stream consumer's name (by default the application's).
    consumer_name: str | None = None

    def __post_init__(self) -> None:
        if self.initial_position not in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
            raise ValueError(f"unknown initial_position {self.initial_position!r}")
        if self.initial_position == "AT_TIMESTAMP" and self.initial_timestamp is None:
            raise ValueError("initial_position AT_TIMESTAMP needs initial_timestamp")
        if not 1 <= self.max_records <= GET_RECORDS_MAX_LIMIT:
            raise ValueError(f"max_records must be 1..{GET_RECORDS_MAX_LIMIT}")
        if self.failover_time <= 0 or not math.isfinite(self.failover_time):
            raise ValueError("failover_time must be a positive number of seconds")
        if self.idle_time_between_reads < 0:
            raise ValueError("idle_time_between_reads must be >= 0")
        if self.max_leases_to_steal < 0:
            raise ValueError("max_leases_to_steal must be >= 0")
        if self.max_leases_per_worker is not None and self.max_leases_per_worker < 1:
            raise ValueError("max_leases_per_worker must be >= 1")
        if self.retrieval not in ("polling", "fanout"):
            raise ValueError(f"retrieval must be 'polling' or 'fanout', not {self.retrieval!r}")
        if self.consumer_name is not None:
            check_consumer_name(self.consumer_name)


class Coordinator(Protocol):
    """What the consumer needs of a lease coordinator (``LeaseCoordinator``)."""

    async def run(self) -> None: ...
    def request_shard_sync(self) -> None: ...
    def held(self) -> Mapping[str, Lease]: ...
    def observed(self) -> Mapping[str, Lease]: ...
    def events(self) -> AsyncIterator[object]: ...
    async def checkpoint(
        self, shard_id: str, checkpoint: str, sub_sequence_number: int = 0
    ) -> None: ...
    async def prepare_checkpoint(
        self,
        shard_id: str,
        checkpoint: str,
        sub_sequence_number: int = 0,
        state: bytes | None = None,
    ) -> None: ...
    async def release(self, shard_id: str) -> None: ...
    async def release_all(self) -> None: ...
    def metrics(self) -> dict[str, int]: ...


#: Builds the coordinator: (store, config, list_shards) -> Coordinator.
CoordinatorFactory = Callable[
    [LeaseStore, ConsumerConfig, Callable[[], Awaitable[Sequence[ShardInfo]]]], Coordinator
]


def lease_coordinator(
    store: LeaseStore,
    config: ConsumerConfig,
    list_shards: Callable[[], Awaitable[Sequence[ShardInfo]]],
) -> Coordinator:
    """The default: a :class:`~kpl.consumer.coordinator.LeaseCoordinator` on ``store``."""
    from kpl.consumer.coordinator import LeaseCoordinator

    return LeaseCoordinator(
        store,
        worker_id=config.worker_id,
        list_shards=list_shards,
        failover_time=config.failover_time,
        max_leases_per_worker=config.max_leases_per_worker,
        max_leases_to_steal=config.max_leases_to_steal,
        initial_checkpoint=config.initial_position,
    )
