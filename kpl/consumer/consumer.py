"""``Consumer``: read a stream as one of many workers, with leases and exact checkpoints.

The shell around the sans-IO cores (lineage, reading, leases). Structure, per worker:

- one anyio task group, owned by the ``async with`` block, holding the lease
  coordinator (take, renew), an event pump that starts and stops shard readers as leases
  come and go, and one reader task per held shard;
- shard readers fetch through a :class:`~kpl.consumer.retrieval.Retrieval` (GetRecords
  polling, paced within the shard's limits, or enhanced fan-out's SubscribeToShard,
  ``ConsumerConfig(retrieval="fanout")``) and hand batches over a memory object stream
  with no buffer: a reader holds at most the one batch it is offering while it reads the
  next answer, so a slow application slows the reads (backpressure) instead of growing
  memory;
- ``async for batch in consumer`` takes the next batch of any shard; asking for the
  next batch marks the previous one processed. Batches of one shard come one after
  the other, in order;
- ``run(handler)`` has every reader call the handler itself: concurrent across shards,
  serial within one.

A reader that fails is logged and its lease released (another worker, or this one,
resumes it from its checkpoint); it never takes the others down. A child shard is read
only once every parent's lease is checkpointed at SHARD_END (a parent without a lease
was trimmed or never read and is not waited for); a reader at the end of its shard
waits until its last batch was processed, then checkpoints SHARD_END itself, so a
forgotten checkpoint never stalls the children.

Leaving the ``async with`` block (or :meth:`Consumer.shutdown`) stops the readers,
checkpoints every batch known to be processed, and releases the leases so that other
workers take them at their next cycle rather than after ``failover_time``.

Lifecycle hooks (:mod:`kpl.consumer.hooks`) are called for both ways of consuming;
two-phase checkpoints are in :mod:`kpl.consumer.checkpoints`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final, Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from kpl.client import KinesisClient
from kpl.consumer.batch import Batch, ShardReader
from kpl.consumer.checkpoints import PendingCheckpoint, PreparedCheckpoint
from kpl.consumer.config import (
    ConsumerConfig,
    Coordinator,
    CoordinatorFactory,
    check_consumer_name,
    lease_coordinator,
)
from kpl.consumer.coordinator import LeaseAcquired, LeaseRevoked
from kpl.consumer.core.lineage import ShardInfo, is_ready
from kpl.consumer.core.reading import ShardCursor, starting_position
from kpl.consumer.errors import DuplicateWorkerId, LeaseLost
from kpl.consumer.hooks import ConsumerHooks, ShardHook, ShardStarted
from kpl.consumer.leases.base import SHARD_END, Lease, LeaseStore
from kpl.consumer.polling import PollingRetrieval
from kpl.consumer.records import UserRecord
from kpl.consumer.retrieval import Retrieval

__all__ = [
    "Batch",
    "Consumer",
    "ConsumerConfig",
    "ConsumerHooks",
    "Coordinator",
    "Handler",
    "PreparedCheckpoint",
    "ShardHook",
]

logger = logging.getLogger("kpl.consumer")

#: An async function given each batch by :meth:`Consumer.run`.
Handler = Callable[["Batch"], Awaitable[None]]

#: How often a child shard looks again whether its parents have finished.
_PARENT_POLL_S: Final = 0.2


def _position_key(sequence_number: str, sub_sequence_number: int) -> tuple[int, int]:
    return int(sequence_number), sub_sequence_number


class Consumer:
    """A KCL-class worker: holds its share of a stream's leases and delivers their records.

    ``async with Consumer("orders", application="billing", endpoint_url=url) as consumer:``
    then ``async for batch in consumer: ...; await batch.checkpoint()``, or
    ``await consumer.run(handler)``. Workers of one application share the stream's shards
    through the lease store at ``leases`` (``sqlite:///PATH``, ``dynamodb://TABLE``,
    ``memory://NAME``; by default a SQLite file named after the application). ``hooks``
    (:class:`~kpl.consumer.hooks.ConsumerHooks`) hear of shards started, leases lost,
    shards ended and shutdown, whichever way the consumer is used.
    """

    def __init__(
        self,
        stream: str,
        *,
        application: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        leases: str | LeaseStore | None = None,
        config: ConsumerConfig | None = None,
        client: KinesisClient | None = None,
        coordinator_factory: CoordinatorFactory | None = None,
        hooks: ConsumerHooks | None = None,
    ) -> None:
        if not application:
            raise ValueError("application must not be empty")
        self.stream = stream
        self.application = application
        self.config = config if config is not None else ConsumerConfig()
        self._consumer_name = self.config.consumer_name or application
        if self.config.retrieval == "fanout":
            check_consumer_name(self._consumer_name)
        self._endpoint_url = endpoint_url
        self._region = region
        self._leases = leases if leases is not None else f"sqlite:///{application}-leases.db"
        self._client = client
        self._owns_client = client is None
        self._coordinator_factory = coordinator_factory or lease_coordinator
        self._coordinator: Coordinator | None = None
        self._retrieval: Retrieval | None = None
        self._store: LeaseStore | None = None
        self._tg: TaskGroup | None = None
        self._readers: dict[str, ShardReader] = {}
        self._shards: dict[str, ShardInfo] = {}
        self._send: MemoryObjectSendStream[Batch] | None = None
        self._receive: MemoryObjectReceiveStream[Batch] | None = None
        self._mode: Literal["iterate", "run"] | None = None
        self._handler: Handler | None = None
        self._checkpoint_after_handler = True
        self._hooks = hooks if hooks is not None else ConsumerHooks()
        self._shutdown_notified = False
        self._current: Batch | None = None
        self._stopping: anyio.Event | None = None
        self._shutdown_requested = False
        self._receive_scope: anyio.CancelScope | None = None
        self._closed = False
        self._lost = 0
        self._failed = 0

    # ------------------------------------------------------------------ lifecycle

    def __repr__(self) -> str:
        return (
            f"Consumer({self.stream!r}, application={self.application!r}, "
            f"worker_id={self.config.worker_id!r})"
        )

    def __del__(self) -> None:
        # A started consumer holds leases (others wait failover_time for them), tasks and
        # connections until it is closed.
        if getattr(self, "_tg", None) is not None and not getattr(self, "_closed", True):
            warnings.warn(
                f"{self!r} was started and never closed: leave 'async with' or await aclose()",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    async def __aenter__(self) -> Consumer:
        from kpl.consumer.leases import open_lease_store

        self._stopping = anyio.Event()
        if self._shutdown_requested:
            self._stopping.set()
        if self._client is None:
            self._client = KinesisClient(self._endpoint_url, region=self._region)
        # A stream that does not exist (or cannot be read) fails here, not in a loop.
        try:
            self._store = (
                open_lease_store(self._leases) if isinstance(self._leases, str) else self._leases
            )
            await self._list_shards()
            self._retrieval = await self._open_retrieval(self._client)
        except BaseException:
            if self._store is not None and isinstance(self._leases, str):
                await self._store.close()
            if self._owns_client:
                await self._client.close()
            raise
        self._send, self._receive = anyio.create_memory_object_stream[Batch](0)
        self._coordinator = self._coordinator_factory(self._store, self.config, self._list_shards)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._coordinator.run, name="lease coordinator")
        tg.start_soon(self._pump_events, name="lease events")
        return self

    async def _open_retrieval(self, client: KinesisClient) -> Retrieval:
        if self.config.retrieval == "polling":
            return PollingRetrieval(client, self.stream, self.config)
        from kpl.consumer.fanout import FanOutRetrieval

        fanout = FanOutRetrieval(client, self.stream, self.config, self._consumer_name)
        await fanout.register()  # a refusal (20 consumers already) fails here
        return fanout

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    def shutdown(self) -> None:
        """Ask for a graceful stop: iteration ends, :meth:`run` returns (signal-safe in
        the event loop's thread)."""
        self._shutdown_requested = True
        if self._stopping is not None:
            self._stopping.set()
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    async def aclose(self) -> None:
        """Stop reading, checkpoint what was processed, release every lease, close."""
        if self._closed:
            return
        self._closed = True
        self.shutdown()
        tg, coordinator = self._tg, self._coordinator
        try:
            if tg is not None and coordinator is not None:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(self.config.shutdown_grace):
                        await self._notify_shutdown_requested()
                    await self._stop_readers()
                    await self._final_checkpoints()
                    await coordinator.release_all()
                tg.cancel_scope.cancel()
        finally:
            try:
                if tg is not None:
                    await tg.__aexit__(None, None, None)
            except BaseExceptionGroup as group:
                # A worker whose id another live worker uses stops with that error alone.
                fatal = _first(group, DuplicateWorkerId)
                if fatal is not None:
                    raise fatal from None
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    if self._retrieval is not None:
                        await self._retrieval.aclose()
                    if self._store is not None and isinstance(self._leases, str):
                        await self._store.close()
                    if self._owns_client and self._client is not None:
                        await self._client.close()
                if self._send is not None and self._receive is not None:
                    self._send.close()
                    self._receive.close()

    async def _stop_readers(self) -> None:
        grace = anyio.current_time() + self.config.shutdown_grace
        for reader in list(self._readers.values()):
            reader.stopping = True
            if reader.handler_scope is not None:
                reader.handler_scope.deadline = grace
            reader.scope.cancel()
        for reader in list(self._readers.values()):
            await reader.finished.wait()

    async def _final_checkpoints(self) -> None:
        for reader in list(self._readers.values()):
            if reader.ended or reader.processed_at is None:
                continue
            if (
                reader.checkpointed is not None
                and reader.processed is not None
                and reader.processed <= reader.checkpointed
            ):
                continue
            sequence_number, sub = reader.processed_at
            try:
                await self._checkpoint(reader, sequence_number, sub)
            except (LeaseLost, DuplicateWorkerId):
                pass  # the lease is not this worker's to write: already logged
            except Exception:
                logger.exception("final checkpoint of %s failed", reader.shard_id)

    # ------------------------------------------------------------------ delivery

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self

    async def __anext__(self) -> Batch:
        self._begin("iterate")
        if self._current is not None:
            self._processed(self._current)
            self._current = None
        while not self._shutdown_requested:
            with anyio.CancelScope() as scope:
                self._receive_scope = scope
                try:
                    assert self._receive is not None
                    batch = await self._receive.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                finally:
                    self._receive_scope = None
            if scope.cancelled_caught:
                continue
            # A batch offered before its lease was lost is not delivered.
            if self._readers.get(batch.shard_id) is not batch._reader or batch._reader.stopping:
                continue
            self._current = batch
            return batch
        raise StopAsyncIteration

    async def run(
        self,
        handler: Handler,
        *,
        checkpoint: bool = True,
        on_lease_lost: ShardHook | None = None,
        on_shard_ended: ShardHook | None = None,
        on_shutdown_requested: ShardHook | None = None,
    ) -> None:
        """Call ``handler`` with each batch, concurrently across shards and serially
        within one, until :meth:`shutdown`. With ``checkpoint`` each batch is checkpointed
        once its handler returned. The hooks given here join the Consumer's ``hooks``
        (:class:`~kpl.consumer.hooks.ConsumerHooks`); each gets the shard id when its
        lease was lost, when its end was reached (and checkpointed), or when shutdown
        was requested."""
        hooks = self._hooks.with_hooks(
            on_lease_lost=on_lease_lost,
            on_shard_ended=on_shard_ended,
            on_shutdown_requested=on_shutdown_requested,
        )
        self._handler = handler
        self._checkpoint_after_handler = checkpoint
        self._hooks = hooks
        self._begin("run")
        assert self._stopping is not None
        await self._stopping.wait()
        await self._notify_shutdown_requested()

    async def _notify_shutdown_requested(self) -> None:
        if self._shutdown_notified or self._mode is None:
            return
        self._shutdown_notified = True
        hook = self._hooks.on_shutdown_requested
        if hook is not None:
            for shard_id, reader in list(self._readers.items()):
                if not (reader.ended or reader.stopping):
                    await self._call_hook(hook, shard_id)

    def _begin(self, mode: Literal["iterate", "run"]) -> None:
        if self._tg is None:
            raise RuntimeError("use the Consumer inside 'async with'")
        if self._mode is None:
            self._mode = mode
            self._reconcile()
        elif self._mode != mode:
            raise RuntimeError("a Consumer is either iterated or run(), not both")

    def _processed(self, batch: Batch) -> None:
        reader = batch._reader
        batch._done.set()
        if not batch.records or self._readers.get(batch.shard_id) is not reader:
            return
        last = batch.records[-1]
        assert last.sequence_number is not None
        key = _position_key(last.sequence_number, last.sub_sequence_number)
        if reader.processed is None or key > reader.processed:
            reader.processed = key
            reader.processed_at = (last.sequence_number, last.sub_sequence_number)

    # ------------------------------------------------------------------ checkpoints

    async def checkpoint(self, record: UserRecord) -> None:
        """Checkpoint through ``record`` (any delivered record, exact to its sub-record).

        Raises ``LeaseLost`` when this worker no longer holds the record's shard.
        """
        if record.shard_id is None or record.sequence_number is None:
            raise ValueError("only a record delivered by a Consumer can be checkpointed")
        reader = self._readers.get(record.shard_id)
        if reader is None or reader.stopping:
            raise LeaseLost(record.shard_id, "not held by this worker")
        await self._checkpoint(reader, record.sequence_number, record.sub_sequence_number)

    async def prepare_checkpoint(
        self, record: UserRecord, state: bytes | None = None
    ) -> PreparedCheckpoint:
        """Prepare a checkpoint through ``record`` (any delivered record), storing the
        optional ``state`` bytes with it; ``await prepared.checkpoint()`` commits it.

        Before that commit the committed checkpoint stays where it was; a worker that takes
        the lease over sees the pending one. Raises ``LeaseLost`` as :meth:`checkpoint`.
        """
        if record.shard_id is None or record.sequence_number is None:
            raise ValueError("only a record delivered by a Consumer can be checkpointed")
        reader = self._readers.get(record.shard_id)
        if reader is None or reader.stopping:
            raise LeaseLost(record.shard_id, "not held by this worker")
        return await self._prepare(
            reader, record.sequence_number, record.sub_sequence_number, state
        )

    async def _prepare(
        self, reader: ShardReader, sequence_number: str, sub: int, state: bytes | None
    ) -> PreparedCheckpoint:
        if state is not None and not isinstance(state, bytes):
            raise TypeError(f"state must be bytes, not {type(state).__name__}")
        if self._readers.get(reader.shard_id) is not reader:
            raise LeaseLost(reader.shard_id, "not held by this worker")
        key = _position_key(sequence_number, sub)
        # At or below the checkpoint there is nothing to prepare: committing it would
        # not move the checkpoint (which never moves backwards).
        if reader.checkpointed is None or key > reader.checkpointed:
            assert self._coordinator is not None
            await self._coordinator.prepare_checkpoint(
                reader.shard_id, sequence_number, sub, state
            )

        async def commit() -> None:
            await self._checkpoint(reader, sequence_number, sub)

        return PreparedCheckpoint(reader.shard_id, sequence_number, sub, state, commit)

    async def _checkpoint(self, reader: ShardReader, sequence_number: str, sub: int) -> None:
        if self._readers.get(reader.shard_id) is not reader:
            raise LeaseLost(reader.shard_id, "not held by this worker")
        key = _position_key(sequence_number, sub)
        if reader.checkpointed is not None and key <= reader.checkpointed:
            return  # never move a checkpoint backwards
        assert self._coordinator is not None
        await self._coordinator.checkpoint(reader.shard_id, sequence_number, sub)
        if reader.checkpointed is None or key > reader.checkpointed:
            reader.checkpointed = key

    # ------------------------------------------------------------------ leases

    async def _list_shards(self) -> list[ShardInfo]:
        assert self._client is not None
        shards = [
            ShardInfo.from_api(s)
            for s in await self._client.list_shards(self.stream, open_only=False)
        ]
        self._shards.update((s.shard_id, s) for s in shards)
        return shards

    async def _pump_events(self) -> None:
        assert self._coordinator is not None
        async for event in self._coordinator.events():
            if self._mode is None:
                continue  # readers start from held() when delivery begins
            if isinstance(event, LeaseAcquired):
                self._start_reader(event.lease)
            elif isinstance(event, LeaseRevoked):
                self._stop_reader(event.shard_id, lost=True)

    def _reconcile(self) -> None:
        """Start a reader for each lease held and not being read."""
        assert self._coordinator is not None
        for lease in self._coordinator.held().values():
            reader = self._readers.get(lease.lease_key)
            if reader is None or (reader.stopping and not reader.ended):
                self._start_reader(lease)

    def _start_reader(self, lease: Lease) -> None:
        if self._tg is None or self._shutdown_requested:
            return
        previous = self._readers.get(lease.lease_key)
        if previous is not None and not previous.stopping:
            # Taken again after a loss this worker has not seen yet: a new term
            # starts from the lease's checkpoint.
            self._stop_reader(lease.lease_key, lost=False)
        reader = ShardReader(lease.lease_key, lease)
        self._readers[lease.lease_key] = reader
        self._tg.start_soon(self._run_reader, reader, previous, name=f"read {lease.lease_key}")

    def _stop_reader(self, shard_id: str, *, lost: bool) -> None:
        reader = self._readers.get(shard_id)
        if reader is None or reader.stopping or reader.ended:
            return
        reader.stopping = True
        reader.scope.cancel()
        if lost:
            self._lost += 1
            hook = self._hooks.on_lease_lost
            if hook is not None and self._tg is not None:
                self._tg.start_soon(self._call_hook, hook, shard_id)

    async def _call_hook(self, hook: ShardHook, shard_id: str) -> None:
        try:
            await hook(shard_id)
        except Exception:
            logger.exception("hook %s for %s failed", getattr(hook, "__name__", hook), shard_id)

    async def _shard_started(self, reader: ShardReader) -> None:
        hook = self._hooks.on_shard_started
        lease = reader.lease
        if hook is None or lease.checkpoint == SHARD_END:
            return
        started = ShardStarted(
            reader.shard_id,
            lease.checkpoint,
            lease.checkpoint_sub_sequence_number,
            PendingCheckpoint.of(lease),
        )
        try:
            await hook(started)
        except Exception:
            logger.exception("hook on_shard_started for %s failed", reader.shard_id)

    # ------------------------------------------------------------------ reading

    async def _run_reader(self, reader: ShardReader, previous: ShardReader | None) -> None:
        try:
            if previous is not None:
                await previous.finished.wait()
            with reader.scope:
                await self._shard_started(reader)
                await self._read(reader)
        except (LeaseLost, DuplicateWorkerId):
            reader.stopping = True  # the coordinator revokes it: nothing to give back
        except Exception as error:
            self._failed += 1
            logger.exception("reader of %s failed: %s", reader.shard_id, error)
            reader.stopping = True
            if self._coordinator is not None and not self._shutdown_requested:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._coordinator.release(reader.shard_id)
                    except Exception:
                        logger.exception("release of %s failed", reader.shard_id)
        finally:
            reader.finished.set()

    async def _wait_for_parents(self, reader: ShardReader) -> None:
        assert self._coordinator is not None
        parents = reader.lease.parent_shard_ids
        while parents:
            observed = self._coordinator.observed()
            finished = {
                p
                for p in parents
                if (p in self._readers and self._readers[p].ended)
                or (p in observed and observed[p].checkpoint == SHARD_END)
            }
            if is_ready(parents, finished=finished, read=set(observed)):
                return
            await anyio.sleep(_PARENT_POLL_S)

    async def _shard_info(self, shard_id: str) -> ShardInfo:
        info = self._shards.get(shard_id)
        if info is None:
            await self._list_shards()
            info = self._shards.get(shard_id, ShardInfo(shard_id))
        return info

    async def _read(self, reader: ShardReader) -> None:
        assert self._coordinator is not None
        assert self._retrieval is not None
        await self._wait_for_parents(reader)
        lease = reader.lease
        start = starting_position(
            lease.checkpoint,
            lease.checkpoint_sub_sequence_number,
            timestamp=self.config.initial_timestamp,
        )
        if start is None:
            reader.ended = True
            self._coordinator.request_shard_sync()
            return
        if start.sequence_number is not None:
            reader.checkpointed = _position_key(
                start.sequence_number, lease.checkpoint_sub_sequence_number
            )
        cursor = ShardCursor(await self._shard_info(reader.shard_id), start)
        await self._retrieval.read(cursor, functools.partial(self._on_records, reader, cursor))
        await self._shard_ended(reader)

    async def _on_records(
        self,
        reader: ShardReader,
        cursor: ShardCursor,
        raw: list[Mapping[str, Any]],
        size: int,
        millis: int,
    ) -> None:
        reader.millis_behind_latest = millis
        records = cursor.take(raw)
        reader.malformed_aggregates = cursor.malformed_aggregates
        if records:
            reader.records += len(records)
            reader.bytes += size
            batch = Batch(reader.shard_id, records, millis, self, reader)
            reader.last_batch = batch
            await self._deliver(reader, batch)

    async def _deliver(self, reader: ShardReader, batch: Batch) -> None:
        if self._handler is None:
            assert self._send is not None
            await self._send.send(batch)
            return
        if self._shutdown_requested or reader.stopping:
            # run() has returned or the lease is going: nothing more is handed to the
            # application; the reader waits to be stopped.
            await anyio.sleep_forever()
        with anyio.CancelScope(shield=True) as shield:
            reader.handler_scope = shield
            try:
                await self._handler(batch)
            finally:
                reader.handler_scope = None
        self._processed(batch)
        if self._checkpoint_after_handler:
            await batch.checkpoint()

    async def _shard_ended(self, reader: ShardReader) -> None:
        assert self._coordinator is not None
        if reader.last_batch is not None:
            # The children wait for SHARD_END: it is written once everything read was
            # processed, and what was processed is checkpointed by the same write.
            await reader.last_batch._done.wait()
        await self._coordinator.checkpoint(reader.shard_id, SHARD_END)
        reader.ended = True
        self._coordinator.request_shard_sync()
        hook = self._hooks.on_shard_ended
        if hook is not None:
            await self._call_hook(hook, reader.shard_id)

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, Any]:
        """Per shard: MillisBehindLatest, records and bytes delivered, aggregates that did
        not decode (delivered as plain data); the lease counts;
        what the retrieval counts (with fan-out: subscriptions made, failed, open)."""
        shards = {
            shard_id: {
                "millis_behind_latest": reader.millis_behind_latest,
                "records": reader.records,
                "bytes": reader.bytes,
                "malformed_aggregates": reader.malformed_aggregates,
            }
            for shard_id, reader in self._readers.items()
        }
        leases: dict[str, int] = dict(self._coordinator.metrics()) if self._coordinator else {}
        return {
            "worker_id": self.config.worker_id,
            "shards": shards,
            "records": sum(s["records"] for s in shards.values()),
            "bytes": sum(s["bytes"] for s in shards.values()),
            "leases": leases,
            "readers_failed": self._failed,
            "retrieval": self._retrieval.metrics() if self._retrieval is not None else {},
        }


def _first(group: BaseExceptionGroup, kind: type[DuplicateWorkerId]) -> DuplicateWorkerId | None:
    """The first ``kind`` error inside ``group`` (however deeply nested), if any."""
    for error in group.exceptions:
        if isinstance(error, kind):
            return error
        if isinstance(error, BaseExceptionGroup):
            found = _first(error, kind)
            if found is not None:
                return found
    return None
