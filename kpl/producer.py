"""The asyncio producer: ``await producer.put()`` in front of the sans-IO core.

Theory of operation:

- :meth:`Producer.put` hands the record to :class:`~kpl.core.pipeline.ProducerCore`
  (which validates it at once), wakes the one sender task and returns the record's
  future. It awaits only when the buffer budget (``max_buffered_bytes`` /
  ``max_buffered_records``, counted by the core over every record not yet completed)
  has no room: then it queues behind earlier waiters, first come first served, and is
  let in as completions free the budget. :meth:`Producer.put_nowait` raises
  :class:`~kpl.errors.BufferFull` instead. The core decides both what a valid put is
  and whether it fits (``ProducerCore.validate``, ``ProducerCore.has_room``; put()'s
  usual case asks both of ``ProducerCore.add`` in one call): each
  record is charged its data, its key and :data:`RECORD_OVERHEAD` bytes, so
  ``max_buffered_bytes`` bounds memory: a budget of small records is mostly Python
  objects, not payload.
- :meth:`Producer.put_many` checks a whole call first, then hands its records to the core
  with int handles and returns one future for the call (:mod:`kpl.batch`): no future or
  result is made per record.
- :meth:`Producer.flush` starts a new epoch and returns when no record of an earlier
  epoch is outstanding — so it waits for exactly what was put before it, however many
  puts follow. (A record's handle in the core is its future, or ``(future, epoch)``
  while an older epoch is still draining; see ``Producer.__init__``.)
- Nothing can hang: the core expires every record at ``record_ttl``; a request is
  bounded by ``request_timeout``; :meth:`Producer.close` drains within that bound and
  then cancels what is left, failing those records with ``ProducerClosed``.
- If the sender task dies, a done-callback fails every pending future, every waiter,
  and stores the error; later calls raise ``ProducerClosed`` chained to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import warnings
from asyncio import InvalidStateError
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import count, repeat
from typing import Any, Literal, cast

from kpl.auth import CredentialProvider, Credentials
from kpl.batch import Batches, BatchResult, as_sequence
from kpl.client import KinesisClient
from kpl.config import ProducerConfig
from kpl.core.admission import RECORD_OVERHEAD, nbytes, validate_many
from kpl.core.pipeline import Completion, Delivered, ProducerCore
from kpl.core.results import RecordResult
from kpl.errors import BufferFull, ProducerClosed, RecordTooLarge
from kpl.protocol.limits import DEFAULT_MAX_RECORD_SIZE
from kpl.sender import Sender
from kpl.transport import AioHttpTransport, Transport

__all__ = ["RECORD_OVERHEAD", "BatchResult", "Producer"]

_State = Literal["new", "running", "failed", "closing", "closed"]
# What the core holds for each record: its future and the flush epoch it was put in.
_Handle = tuple["asyncio.Future[RecordResult]", int]
_new_result = tuple.__new__

# put() yields to the loop once per this many calls (see put()).
_YIELD_EVERY = 256

# Slack on top of record_ttl + request_timeout before close() stops waiting for the
# core to expire records and cancels instead (the core should never need it).
_CLOSE_GRACE = 1.0


def _set_all(futures: Sequence[Any], results: Iterator[RecordResult]) -> None:
    """``futures[i].set_result(next(results))`` for each future, skipping cancelled ones.

    ``map`` drives the calls from C; a cancelled future stops it with InvalidStateError,
    after which it resumes with the next future and result (both iterators moved on).
    """
    if not futures:
        return
    set_result = type(futures[0]).set_result  # one loop made them all: one type
    remaining = iter(futures)
    while True:
        try:
            deque(map(set_result, remaining, results), 0)
            return
        except InvalidStateError:
            continue  # cancelled by its owner: nothing to tell


def _not_started() -> Any:
    raise RuntimeError("the producer has not been started")


class Producer:
    """Puts user records into one stream, aggregated, batched, rate limited and retried.

    ``async with Producer("s", endpoint_url="http://127.0.0.1:4567") as producer:``
    — leave out ``endpoint_url`` to target real AWS Kinesis in ``region``. Pass a
    ``transport`` (e.g. :class:`kpl.transport.MockTransport`) to replace the network.
    """

    def __init__(
        self,
        stream_name: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        config: ProducerConfig | None = None,
        *,
        credentials: Credentials | CredentialProvider | None = None,
        transport: Transport | None = None,
        stream_arn: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.stream_name = stream_name
        self.config = config = config if config is not None else ProducerConfig()
        self._core = ProducerCore(
            stream_name, config, rng=rng if rng is not None else random.Random(),
            stream_arn=stream_arn,
        )
        self._owns_transport = transport is None
        if transport is None:
            transport = AioHttpTransport(
                endpoint_url,
                region=region,
                credentials=credentials,
                max_connections=config.max_connections,
                connect_timeout=config.connect_timeout,
                request_timeout=config.request_timeout,
            )
        self._transport = transport
        self._client = KinesisClient(transport=transport, owns_transport=False)
        self._stream_arn = stream_arn
        self._sender: Sender | None = None  # made in start(): it needs the running loop
        self._wakeup = asyncio.Event()  # replaced by the sender's own in start()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: _State = "new"
        self._error: BaseException | None = None
        # Flush bookkeeping. Every record belongs to the epoch current at its put();
        # flush() starts a new epoch and waits until no record of an older one is left.
        # Records of one epoch at a time (the "untagged" one) are handed to the core
        # with their bare future as handle and counted in _untagged_count; the others
        # as (future, epoch), counted per epoch in _outstanding. The untagged epoch
        # moves to the current one as soon as none of its records is outstanding, so
        # the tuple is only needed for records put while an older epoch drains.
        self._epoch = 0
        self._untagged_epoch = 0
        self._untagged_count = 0
        self._outstanding: dict[int, int] = {}
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # put() calls waiting for buffer room, in arrival order: (data + key bytes, future).
        self._room_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        # Waiters let in whose records are not added yet (they run later): their count
        # and bytes, which the budget counts on top of the core's.
        self._admitted = 0
        self._admitted_bytes = 0
        self._puts_since_yield = 0
        # put_many() calls not completed yet, and the int handles of their records.
        self._batches = Batches()
        # Bound in start() (they need the running loop); put() calls them directly.
        self._create_future: Callable[[], asyncio.Future[Any]] = _not_started
        self._time: Callable[[], float] = _not_started

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Producer:
        self.start()
        if self._sender is not None:
            # Wait (bounded) for the first ListShards so that records can be aggregated
            # from the first put; without a map they would go out unaggregated.
            # The stream's record size limit is asked for at the same time.
            await asyncio.wait({self._sender.first_shard_map, self._sender.stream_limits},
                               timeout=self.config.request_timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the sender task (``async with`` and the first put() do it for you)."""
        if self._state != "new":
            self._raise_if_unusable()
            return
        self._loop = loop = asyncio.get_running_loop()
        self._sender = sender = Sender(
            self._core, self._client, self._resolve,
            stream_name=self.stream_name, stream_arn=self._stream_arn,
        )
        self._wakeup = sender.wakeup
        self._create_future = loop.create_future
        self._time = loop.time
        self._state = "running"
        self._task = loop.create_task(sender.run(), name=f"kpl-sender[{self.stream_name}]")
        self._task.add_done_callback(self._sender_done)

    def _raise_if_unusable(self) -> None:
        if self._error is not None:
            raise ProducerClosed(
                f"the producer's sender task failed: {self._error!r}"
            ) from self._error
        if self._state != "running":
            raise ProducerClosed("the producer is closed")

    @property
    def closed(self) -> bool:
        """True once close() has finished."""
        return self._state == "closed"

    async def close(self) -> None:
        """Flush, stop the sender and release connections; never hangs.

        Every record put before close() is delivered or failed when it returns:
        failures surface through the records' futures, not here.
        """
        if self._state == "closed":
            return
        if self._state == "closing":
            # A concurrent close(): wait for the first one to finish.
            if self._task is not None:
                await asyncio.wait({self._task})
            return
        started = self._task is not None
        self._state = "closing"
        try:
            if self._task is not None and not self._task.done():
                loop = asyncio.get_running_loop()
                self._core.flush(loop.time())
                if self._sender is not None:
                    self._sender.stop()
                bound = self.config.record_ttl + self.config.request_timeout + _CLOSE_GRACE
                done, _ = await asyncio.wait({self._task}, timeout=bound)
                if not done:
                    self._task.cancel()
                    await asyncio.wait({self._task})
        finally:
            if self._task is not None and not self._task.done():
                # close() itself was cancelled: do not leave the sender behind.
                self._task.cancel()
            self._state = "closed"
            if started:
                self._fail_leftovers(ProducerClosed("the producer closed"))
            if self._owns_transport:
                await self._transport.close()

    def _fail_leftovers(self, error: BaseException) -> None:
        """Fail whatever the core still holds, and every waiter."""
        loop = self._loop
        if loop is not None and self._core.buffered_records:
            self._resolve(self._core.fail_all(error, loop.time()))
        for _, waiter in self._room_waiters:
            if not waiter.done():
                waiter.set_exception(ProducerClosed(str(error)))
        self._room_waiters.clear()
        for _, waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._flush_waiters.clear()

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            error: BaseException | None = ProducerClosed("the producer's sender was cancelled")
            if self._state in ("closing", "closed"):
                error = None  # close() cancelled it on purpose after the drain bound
        else:
            error = task.exception()
        if error is not None and self._error is None:
            self._error = error
        if error is not None and self._state == "running":
            self._state = "failed"  # put() checks the state first: make it take the slow path
        self._fail_leftovers(error if error is not None else ProducerClosed("closed"))

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", "closed") in ("running", "failed", "closing"):
            _warn(
                f"unclosed {self!r}: use 'async with Producer(...)' or await close()",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        return f"<Producer stream={self.stream_name!r} state={self._state}>"

    # ------------------------------------------------------------------ putting

    def _add(
        self, data: bytes, partition_key: str, explicit_hash_key: str | None
    ) -> asyncio.Future[RecordResult]:
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[RecordResult] = loop.create_future()
        if self._epoch == self._untagged_epoch or self._retag():
            self._core.add(data, partition_key, explicit_hash_key, future, loop.time())
            self._untagged_count += 1
        else:
            epoch = self._epoch
            self._core.add(data, partition_key, explicit_hash_key, (future, epoch), loop.time())
            self._outstanding[epoch] = self._outstanding.get(epoch, 0) + 1
        self._wakeup.set()
        return future

    def put_nowait(
        self, data: bytes, partition_key: str, explicit_hash_key: str | None = None
    ) -> asyncio.Future[RecordResult]:
        """Buffer a record now or raise :class:`~kpl.errors.BufferFull`.

        Bad input (too large, a malformed key) raises at once; so does a closed producer.
        """
        if self._state != "running":
            self.start()
        try:
            size = nbytes(data) + len(partition_key)
        except TypeError:
            self._core.validate(data, partition_key, explicit_hash_key)  # says what is wrong
            raise
        if self._room_waiters or not self._core.has_room(size):
            self._core.validate(data, partition_key, explicit_hash_key)
            raise BufferFull(
                f"buffer budget full: {self._core.buffered_records} records / "
                f"{self._core.buffered_bytes} bytes buffered "
                f"(max {self.config.max_buffered_records} / {self.config.max_buffered_bytes})"
            )
        return self._add(data, partition_key, explicit_hash_key)

    async def put(
        self, data: bytes, partition_key: str, explicit_hash_key: str | None = None
    ) -> asyncio.Future[RecordResult]:
        """Buffer a record and return its future; wait only while the budget is full.

        The future resolves to a :class:`~kpl.RecordResult`, or raises
        :class:`~kpl.RecordFailed` with the error code and every attempt. Bad input
        (too large, a malformed key) raises here at once, also when the buffer is full.
        """
        # The per-record hot path: one test for "running, no waiter, no older flush epoch
        # draining, plain bytes", then the core, which validates the record and adds it if
        # the budget has room; everything else is in _put_slow().
        if (
            self._state != "running"
            or self._room_waiters
            or self._epoch != self._untagged_epoch
            or type(data) is not bytes
        ):
            return await self._put_slow(data, partition_key, explicit_hash_key)
        future: asyncio.Future[RecordResult] = self._create_future()
        # The future itself is the handle (no tuple per record).
        try:
            added = self._core.add(
                data, partition_key, explicit_hash_key, future, self._time(), True
            )
        except RecordTooLarge:
            if self._limits_pending():
                # The stream may take larger records: ask it first (the slow path waits).
                return await self._put_slow(data, partition_key, explicit_hash_key)
            raise
        if not added:  # no room: the slow path waits for it
            return await self._put_slow(data, partition_key, explicit_hash_key)
        self._untagged_count += 1
        sender = self._sender
        if not sender.woken:  # type: ignore[union-attr]
            sender.wake()  # type: ignore[union-attr]
        self._puts_since_yield += 1
        if self._puts_since_yield >= _YIELD_EVERY:
            # A tight put() loop never suspends while there is room; without this the
            # sender could not ship full requests (or honour record_max_buffered_time)
            # until the budget filled up.
            self._puts_since_yield = 0
            await asyncio.sleep(0)
        return future

    async def _put_slow(
        self, data: bytes, partition_key: str, explicit_hash_key: str | None
    ) -> asyncio.Future[RecordResult]:
        """put() when not started, out of room, behind waiters, during a flush drain, or
        with data that is not plain bytes."""
        if self._state != "running":
            self.start()
        if type(data) is not bytes or type(partition_key) is not str:
            self._core.validate(data, partition_key, explicit_hash_key)
        if self._limits_pending():
            sender = self._sender
            assert sender is not None
            # Until the stream's limits are known, a record above the config's limit
            # waits for them (bounded by request_timeout: DescribeStreamSummary is a call).
            with contextlib.suppress(TypeError, AttributeError):  # bad input: validate() says
                if len(data) + len(partition_key.encode()) > self._core.max_record_size:
                    await asyncio.wait({sender.stream_limits})
        size = nbytes(data) + len(partition_key)
        if self._room_waiters or not self._core.has_room(
            size, self._admitted, self._admitted_bytes
        ):
            self._core.validate(data, partition_key, explicit_hash_key)
            await self._wait_for_room(size)
        future = self._add(data, partition_key, explicit_hash_key)
        self._puts_since_yield += 1
        if self._puts_since_yield >= _YIELD_EVERY:
            self._puts_since_yield = 0
            await asyncio.sleep(0)
        return future

    # ------------------------------------------------------------------ bulk

    def put_many_nowait(
        self, records: Iterable[tuple[bytes, str] | tuple[bytes, str, str | None]]
    ) -> asyncio.Future[BatchResult]:
        """Buffer every record of ``records`` now, or none and raise
        :class:`~kpl.errors.BufferFull`; see :meth:`put_many`."""
        if self._state != "running":
            self.start()
        datas, keys, hash_keys, size, sizes = validate_many(
            as_sequence(records), self._core.max_record_size
        )
        if self._room_waiters or not self._fits(len(datas), size):
            raise BufferFull(f"buffer budget full for {len(datas)} records of {size} bytes: "
                             f"{self._core.buffered_records} records / "
                             f"{self._core.buffered_bytes} bytes buffered")
        batch = self._open_batch(len(datas))
        self._add_many(batch, datas, keys, hash_keys, sizes, 0, len(datas))
        self._batches.finish_adding(batch, len(datas))
        return batch._future

    async def put_many(
        self, records: Iterable[tuple[bytes, str] | tuple[bytes, str, str | None]]
    ) -> asyncio.Future[BatchResult]:
        """Buffer records in bulk; return ONE future for the whole call.

        ``records`` holds ``(data, partition_key)`` or ``(data, partition_key,
        explicit_hash_key)`` tuples. Every record is checked first: a bad one raises
        here and nothing of the call is buffered. Then they are buffered in order,
        waiting for buffer room as :meth:`put` does (a call larger than the budget goes
        in as room frees up). The future resolves, once every record is delivered or
        failed, to a :class:`~kpl.BatchResult` (counts, failures by index, and each
        record's :class:`~kpl.RecordResult` on request); it never raises for a record's
        failure. Flush, close, ``record_ttl``, ``preserve_order`` and the metrics treat
        these records as they treat put()'s.
        """
        if self._state != "running":
            self.start()
        records = as_sequence(records)
        core = self._core
        try:
            datas, keys, hash_keys, size, sizes = validate_many(records, core.max_record_size)
        except RecordTooLarge:
            if not self._limits_pending():
                raise
            # The stream may take larger records: ask it first.
            await asyncio.wait({self._sender.stream_limits})  # type: ignore[union-attr]
            datas, keys, hash_keys, size, sizes = validate_many(records, core.max_record_size)
        n = len(datas)
        batch = self._open_batch(n)
        added = 0
        try:
            if not self._room_waiters and self._fits(n, size):
                self._add_many(batch, datas, keys, hash_keys, sizes, 0, n)
                added = n
            else:
                charged = sizes or [nbytes(d) + len(k) for d, k in zip(datas, keys, strict=True)]
                while added < n:
                    if self._room_waiters or not core.has_room(
                        charged[added], self._admitted, self._admitted_bytes
                    ):
                        await self._wait_for_room(charged[added])
                    # As many of the following records as fit now, with the first.
                    end = added + 1
                    tally = charged[added]
                    while end < n and core.has_room(
                        charged[end], self._admitted + end - added, self._admitted_bytes + tally
                    ):
                        tally += charged[end]
                        end += 1
                    self._add_many(batch, datas, keys, hash_keys, sizes, added, end)
                    added = end
        finally:
            self._batches.finish_adding(batch, added)
            if self._flush_waiters:
                self._wake_flush_waiters()
        # Let the sender ship what is full (a put_many() loop may never wait otherwise).
        await asyncio.sleep(0)
        return batch._future

    def _fits(self, n: int, size: int) -> bool:
        """Whether ``n`` records of ``size`` bytes in all fit the buffer budget now."""
        return not n or self._core.has_room(
            size, self._admitted + n - 1, self._admitted_bytes
        )

    def _open_batch(self, n: int) -> BatchResult:
        loop = self._loop
        assert loop is not None
        return self._batches.new(n, self._epoch, loop.create_future())

    def _add_many(
        self,
        batch: BatchResult,
        datas: list[Any],
        keys: list[Any],
        hash_keys: list[Any] | None,
        sizes: list[int] | None,
        lo: int,
        hi: int,
    ) -> None:
        """Hand records ``lo`` to ``hi`` of a checked call (and their sizes) to the core."""
        if lo or hi < len(datas):
            datas, keys = datas[lo:hi], keys[lo:hi]
            hash_keys = hash_keys[lo:hi] if hash_keys is not None else None
            sizes = sizes[lo:hi] if sizes is not None else None
        if hash_keys is None:
            self._core.add_many(datas, keys, batch.start + lo, self._time(), sizes)
        else:
            deque(map(
                self._core.add, datas, keys, hash_keys,
                range(batch.start + lo, batch.start + hi), repeat(self._time()),
            ), 0)
        sender = self._sender
        if sender is not None and not sender.woken:
            sender.wake()

    def _limits_pending(self) -> bool:
        """Whether the stream's record size is still being asked for (and may be larger
        than the config's default limit)."""
        sender = self._sender
        return (
            sender is not None
            and not sender.stream_limits.done()
            and self.config.max_record_size == DEFAULT_MAX_RECORD_SIZE
        )

    async def _wait_for_room(self, size: int) -> None:
        loop = self._loop
        assert loop is not None
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (size, waiter)
        self._room_waiters.append(entry)
        # Records may sit in a half-full request waiting for record_max_buffered_time:
        # they leave at the next poll, whose answers free the room.
        self._core.room_wanted()
        self._wakeup.set()
        try:
            await waiter
        except BaseException:
            if entry in self._room_waiters:
                self._room_waiters.remove(entry)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._admitted -= 1
                self._admitted_bytes -= size
                self._wake_room_waiters()  # pass the room we were given to the next one
            raise
        # Admitted: the caller adds its record before it yields again.
        self._admitted -= 1
        self._admitted_bytes -= size
        self._raise_if_unusable()

    def _wake_room_waiters(self) -> None:
        """Let waiting put() calls in, in order, while there is room for them."""
        waiters = self._room_waiters
        has_room = self._core.has_room
        # Each admitted waiter adds its record only when it runs, so admit by a running
        # tally on top of the core's counters.
        while waiters:
            size, waiter = waiters[0]
            if not has_room(size, self._admitted, self._admitted_bytes):
                break
            waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._admitted += 1
                self._admitted_bytes += size

    # ------------------------------------------------------------------ completions

    def _retag(self) -> bool:
        """Move the untagged epoch to the current one if none of its records is left."""
        if self._untagged_count:
            return False
        self._untagged_epoch = self._epoch
        return True

    def _resolve(self, completions: Sequence[Completion | Delivered]) -> None:
        """Settle futures and put_many() calls; update flush epochs; admit waiting puts."""
        outstanding = self._outstanding
        untagged = 0
        if self._batches.open:
            completions, _ = self._batches.take(
                completions, futures=bool(self._untagged_count or outstanding)
            )
        for item in completions:
            if type(item) is Delivered:
                # A whole Kinesis record's user records: one tight loop, one result each.
                shard_id = item.shard_id
                sequence = item.sequence_number
                attempts = item.attempts
                future: Any
                if not outstanding:
                    # No flush is draining, so every handle is a bare future (the usual
                    # case): results made and set by C loops (map), no Python loop.
                    handles = item.handles
                    untagged += len(handles)
                    _set_all(
                        handles,
                        map(_new_result, repeat(RecordResult), zip(
                            repeat(shard_id), repeat(sequence), count(), repeat(attempts)
                        )),
                    )
                    continue
                for sub, future in enumerate(item.handles):
                    if type(future) is tuple:
                        future, epoch = future
                        left = outstanding[epoch] - 1
                        if left:
                            outstanding[epoch] = left
                        else:
                            del outstanding[epoch]
                    else:
                        untagged += 1
                    # A try costs nothing in 3.11 (contextlib.suppress would cost a call).
                    try:  # noqa: SIM105
                        future.set_result(
                            _new_result(RecordResult, (shard_id, sequence, sub, attempts))
                        )
                    except InvalidStateError:
                        pass  # cancelled by its owner: nothing to tell
                continue
            handle, outcome = cast(Completion, item)
            if type(handle) is tuple:
                future, epoch = cast(_Handle, handle)
                left = outstanding[epoch] - 1
                if left:
                    outstanding[epoch] = left
                else:
                    del outstanding[epoch]
            else:
                future = cast("asyncio.Future[RecordResult]", handle)
                untagged += 1
            if not future.done():
                if isinstance(outcome, RecordResult):
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome)
        self._untagged_count -= untagged
        if self._room_waiters:
            self._wake_room_waiters()
        if self._flush_waiters:
            self._wake_flush_waiters()

    def _oldest_outstanding_epoch(self) -> int | None:
        oldest = min(self._outstanding, default=None)
        if self._untagged_count and (oldest is None or self._untagged_epoch < oldest):
            oldest = self._untagged_epoch
        batch = self._batches.oldest_epoch()
        if batch is not None and (oldest is None or batch < oldest):
            oldest = batch
        return oldest

    def _wake_flush_waiters(self) -> None:
        oldest = self._oldest_outstanding_epoch()
        still: list[tuple[int, asyncio.Future[None]]] = []
        for epoch, waiter in self._flush_waiters:
            if oldest is None or oldest > epoch:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((epoch, waiter))
        self._flush_waiters = still

    async def flush(self) -> None:
        """Send everything buffered now; return when every record put before this call
        is acknowledged or failed (at the latest ``record_ttl`` after its put)."""
        if self._state == "new" or self._task is None:
            return
        if self._error is not None:
            self._raise_if_unusable()
        loop = asyncio.get_running_loop()
        epoch = self._epoch
        self._epoch += 1
        oldest = self._oldest_outstanding_epoch()
        if oldest is None or oldest > epoch:
            return
        self._core.flush(loop.time())
        self._wakeup.set()
        waiter: asyncio.Future[None] = loop.create_future()
        self._flush_waiters.append((epoch, waiter))
        await waiter
        if self._error is not None:
            self._raise_if_unusable()

    # ------------------------------------------------------------------ introspection

    def metrics(self) -> dict[str, float]:
        """The KPL's metrics (UserRecordsReceived, UserRecordsPut, KinesisRecordsPut,
        BufferingTime, RetriesPerRecord, AllErrors, ...) as plain numbers."""
        return self._core.metrics()  # a new dict on every call

    @property
    def buffered_records(self) -> int:
        """User records put and not yet completed."""
        return self._core.buffered_records

    @property
    def buffered_bytes(self) -> int:
        """Bytes (data + partition keys) put and not yet completed."""
        return self._core.buffered_bytes

