"""The storage protocol: what the stream engine needs from a place that keeps records.

Theory of operation
-------------------
The engine (``server.core``) makes every decision: which shard a record goes to, its
sequence number, its arrival time, when a stream changes state, what retention trims.
Storage only *keeps* things, in two kinds:

* **Stream metadata** (:class:`StreamMeta` with its :class:`ShardMeta` list): small,
  rewritten as a whole by :meth:`Storage.save_stream` after every change (create,
  state change, tags, retention, resharding, max record size). A durable implementation
  writes it atomically; :meth:`Storage.load_streams` gives it back at start-up.
* **Records** (:data:`StoredRecord` tuples): appended per shard in strictly increasing
  sequence-number order with non-decreasing arrival times, read back by sequence number
  or by arrival time with a binary search, and trimmed from the old end.

Sequence numbers are plain ``int`` here (the engine formats them as decimal strings on
the wire and encodes the shard in them, see ``server.core.seqnum``). Storage never
invents or changes a sequence number.

Durability: the calls are synchronous so the sans-IO engine can make them. An
implementation that buffers writes (group commit) makes them durable in
:meth:`Storage.wait_durable`, which the web layer awaits before it acknowledges a
PutRecord/PutRecords or a metadata change. The memory implementation returns at once.

Reading without blocking the loop: before the engine runs GetRecords, the web layer
awaits :meth:`Storage.read_ahead` with the arguments the engine's :meth:`Storage.read`
will use, so an implementation on disk can fetch the bytes in a worker thread and serve
the synchronous read from them. It is only a hint: :meth:`Storage.read` alone decides
what is answered.

Thread-safety: calls come from one event loop thread; no locking is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ShardMeta",
    "Storage",
    "StoredRecord",
    "StreamMeta",
]

#: One record as kept by storage: ``(sequence_number, arrival, partition_key, data)``.
#:
#: * ``sequence_number`` – ``int``, strictly increasing within a shard;
#: * ``arrival`` – epoch seconds (``float``) the engine assigned, non-decreasing within a shard;
#: * ``partition_key`` – ``str`` as the producer sent it;
#: * ``data`` – ``bytes``, the record's decoded payload.
#:
#: A plain tuple rather than a class keeps the PutRecords hot path free of per-record
#: object construction.
StoredRecord = tuple[int, float, str, bytes]


@dataclass(slots=True)
class ShardMeta:
    """A shard's lineage and ranges; persisted as part of its :class:`StreamMeta`.

    Closed shards (``ending_sequence_number is not None``) stay in the stream and stay
    readable until retention has trimmed all their records.
    """

    shard_id: str
    """``shardId-%012d``; the index comes from the stream's ``next_shard_index``."""
    starting_hash_key: int
    """First hash key of the shard's range (inclusive)."""
    ending_hash_key: int
    """Last hash key of the shard's range (inclusive)."""
    starting_sequence_number: int
    """The lowest sequence number the shard can hand out."""
    created_at: float
    """Epoch seconds the shard was created (ShardFilter AT/FROM_TIMESTAMP)."""
    parent_shard_id: str | None = None
    """The shard this one was split from, or the first parent of a merge."""
    adjacent_parent_shard_id: str | None = None
    """The second parent of a merge."""
    ending_sequence_number: int | None = None
    """Set when the shard is closed by a reshard; ``None`` while open."""
    closed_at: float | None = None
    """Epoch seconds the shard was closed, ``None`` while open."""

    @property
    def is_open(self) -> bool:
        """Whether the shard still takes writes."""
        return self.ending_sequence_number is None

    @property
    def index(self) -> int:
        """The numeric part of the shard id."""
        return int(self.shard_id[8:])


@dataclass(slots=True)
class StreamMeta:
    """Everything about a stream except its records; storage persists it as a whole."""

    name: str
    arn: str
    status: str
    """``CREATING``, ``ACTIVE``, ``UPDATING`` or ``DELETING``; see ``server.core.engine``."""
    status_since: float
    """Epoch seconds the stream entered ``status``; the engine advances states lazily."""
    created_at: float
    mode: str
    """``PROVISIONED`` or ``ON_DEMAND``."""
    retention_hours: int
    max_record_size_kib: int
    shards: list[ShardMeta] = field(default_factory=list)
    """Every shard, open and closed, in creation (index) order."""
    next_shard_index: int = 0
    """The index the next new shard takes (a per-stream counter, never reused)."""
    tags: dict[str, str] = field(default_factory=dict)
    stream_id: str = ""
    """A per-stream 24-character id (``StreamId`` in the API)."""
    # The settings below are plain strings, numbers, lists and dicts (no classes), so a
    # storage that persists the fields above generically persists these the same way.
    consumers: list[dict[str, Any]] = field(default_factory=list)
    """Registered stream consumers, each ``{"name", "arn", "status", "status_since",
    "created_at", "tags"}`` (see ``server.core.consumers``)."""
    encryption_type: str = "NONE"
    """``NONE`` or ``KMS`` (StartStreamEncryption); the records stay as they are."""
    key_id: str | None = None
    """The KMS key named by StartStreamEncryption, while ``encryption_type`` is ``KMS``."""
    policies: dict[str, str] = field(default_factory=dict)
    """Resource policies (JSON text) by resource ARN: the stream's and its consumers'."""
    shard_level_metrics: list[str] = field(default_factory=list)
    """Enhanced monitoring: the shard-level metrics enabled, in the service's order."""


@runtime_checkable
class Storage(Protocol):
    """Keeps stream metadata and each shard's records.

    Implementations: ``server.storage.memory.MemoryStorage`` and
    ``server.storage.durable.DurableStorage``. Stream and shard are addressed by name and
    id, so an implementation can lay them out as directories/files. A shard's record log
    springs into existence on its first :meth:`append` (or on :meth:`save_stream`,
    whichever the implementation prefers); reads of a shard with no records return
    nothing rather than failing.
    """

    # -- metadata -------------------------------------------------------------------

    def load_streams(self) -> list[StreamMeta]:
        """Every stream saved and not deleted, as the storage found it when opened.

        Called once at start-up, before any other call; the engine owns the returned
        objects afterwards. (A durable implementation answers with what it recovered; the
        memory one, which cannot restart, with what was saved so far.)
        """
        ...

    def save_stream(self, stream: StreamMeta) -> None:
        """Persist the whole metadata of ``stream`` (replacing the previous version).

        Durable implementations must make this atomic: after a crash, either the old
        or the new version is loaded, never a mix.
        """
        ...

    def delete_stream(self, stream_name: str) -> None:
        """Forget the stream's metadata and drop all its records."""
        ...

    # -- records --------------------------------------------------------------------

    def append(self, stream_name: str, shard_id: str, records: Sequence[StoredRecord]) -> None:
        """Append records to the end of a shard's log.

        ``records`` is non-empty, in strictly increasing sequence-number order, each
        number greater than any earlier appended to this shard, with non-decreasing
        arrival times. The call must not keep a reference that the caller could mutate.
        Several appends may come before one :meth:`wait_durable` (concurrent requests).
        The records become readable no later than when a :meth:`wait_durable` that covers
        them returns (memory storage shows them at once; a durable one may wait, so that
        a reader never sees a record that could still be lost).
        """
        ...

    async def wait_durable(self) -> None:
        """Return once every earlier :meth:`append`/:meth:`save_stream` is durable.

        The only async method: the web layer awaits it before acknowledging a write.
        A durable implementation batches fsyncs here (group commit); it raises
        ``server.core.errors.InternalFailure`` if the data cannot be made durable.
        Memory storage returns immediately.
        """
        ...

    def read(
        self,
        stream_name: str,
        shard_id: str,
        from_sequence_number: int,
        limit: int,
        max_bytes: int,
    ) -> list[StoredRecord]:
        """Records with ``sequence_number >= from_sequence_number``, oldest first.

        At most ``limit`` records; stops before the record that would take the sum of
        ``len(data) + len(partition_key)`` over ``max_bytes``, but always returns at
        least one record when one is available. Found with a binary search, not a scan.
        """
        ...

    async def read_ahead(
        self,
        stream_name: str,
        shard_id: str,
        from_sequence_number: int,
        limit: int,
        max_bytes: int,
    ) -> None:
        """Prepare a :meth:`read` with the same arguments that is about to follow.

        A hint, awaited by the web layer before the engine's GetRecords: an on-disk
        implementation reads the bytes off the event loop here so that the synchronous
        :meth:`read` does not wait on the disk. It never changes what :meth:`read`
        answers and never raises for a shard it does not know. Memory storage returns
        immediately.
        """
        ...

    def sequence_number_at(self, stream_name: str, shard_id: str, timestamp: float) -> int | None:
        """The sequence number of the first kept record with ``arrival >= timestamp``.

        ``None`` when every kept record arrived before ``timestamp`` (or there are none).
        Binary search over the arrival times.
        """
        ...

    def oldest_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The sequence number of the oldest kept (untrimmed) record, or ``None``."""
        ...

    def last_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The highest sequence number ever appended to the shard, or ``None``.

        Still answers after retention trimmed that record; reads use it to tell a
        reader it has caught up.
        """
        ...

    def sequence_floor(self, stream_name: str, shard_id: str) -> int | None:
        """The number every new sequence number of the shard must exceed, or ``None``.

        At least :meth:`last_sequence_number`. The engine numbers on above it at
        start-up, so a number once acknowledged is never issued again, even when a
        durable implementation found records lost to damage.
        """
        ...

    def trim(self, stream_name: str, shard_id: str, arrived_before: float) -> int:
        """Drop the shard's records with ``arrival < arrived_before``; return how many.

        Retention calls this lazily; a durable implementation may drop only whole
        segments (so it may keep a few extra records, never drop a newer one).
        """
        ...

    def close(self) -> None:
        """Release files and other resources; the object is not used afterwards."""
        ...
