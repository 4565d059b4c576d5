"""The one background task that drives the producer's sans-IO core.

Theory of operation (the core accumulates, this task only sends; aiokafka's sender is the model):

- The core decides everything: which PutRecords requests are ready, when it next wants
  to be asked (``Poll.deadline``), when the shard map should be fetched. The sender only
  moves bytes and time.
- One loop: ``poll(now)`` -> start one task per ready request (never more than the core
  allows in flight) and at most one ListShards fetch -> hand completions to the
  producer -> ``asyncio.wait`` over the in-flight calls, the wake-up event and the
  deadline, FIRST_COMPLETED -> feed each finished call to ``on_response`` /
  ``on_error``. There is one timer for the whole pipeline; no task or timer per record.
- ``put()`` wakes the loop through an :class:`asyncio.Event`; setting it while it is
  already set costs a flag test, so every put may set it.
- Stopping: after :meth:`Sender.stop` the loop exits once the core holds no record and
  nothing is in flight. :meth:`Sender.run` cancels what is still in flight when it is
  itself cancelled and fails those records, so no future is left pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from kpl.client import KinesisClient
from kpl.core.pipeline import Completion, Delivered, ProducerCore, PutRecordsRequest
from kpl.errors import MalformedResponse, ProducerClosed

__all__ = ["Sender", "parse_put_records"]

Resolver = Callable[[Sequence[Completion | Delivered]], None]


def parse_put_records(body: bytes) -> dict[str, Any]:
    """The JSON object of a 200 PutRecords answer.

    A body that is not JSON, or JSON that is not an object, raises
    :class:`kpl.errors.MalformedResponse` (retried), the same outcome the core gives an
    object with the wrong entries: a garbled answer says nothing about the records.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        snippet = body[:80].decode("utf-8", "replace").strip()
        raise MalformedResponse(
            f"PutRecords answered a body that is not JSON ({len(body)} bytes: {snippet!r})"
        ) from error
    if not isinstance(parsed, dict):
        raise MalformedResponse(
            f"PutRecords answered a JSON {type(parsed).__name__}, not an object"
        )
    return parsed


class Sender:
    """Moves the core's requests over the transport; one instance, one task."""

    def __init__(
        self,
        core: ProducerCore,
        client: KinesisClient,
        resolve: Resolver,
        *,
        stream_name: str,
        stream_arn: str | None = None,
    ) -> None:
        self._core = core
        self._client = client
        self._resolve = resolve
        self._stream_name = stream_name
        self._stream_arn = stream_arn
        #: Set it to make the loop poll the core again (the producer does on every put).
        self.wakeup = asyncio.Event()
        #: Whether ``wakeup`` is set: put() tests this flag rather than call set().
        self.woken = False
        self._stopping = False
        self._in_flight: dict[asyncio.Task[Any], PutRecordsRequest] = {}
        self._refresh: asyncio.Task[list[tuple[str, int, int]]] | None = None
        #: Done once the first ListShards has been answered (or failed).
        self.first_shard_map: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Done once the stream's record size is known (or DescribeStreamSummary failed:
        #: then the config's limits stay, which fit every stream).
        self.stream_limits: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._limits: asyncio.Task[dict[str, Any]] | None = None

    def wake(self) -> None:
        """Make the loop poll the core again (new records, a flush, stop)."""
        self.woken = True
        self.wakeup.set()

    def stop(self) -> None:
        """Exit once every record has been answered (or failed by the core)."""
        self._stopping = True
        self.wakeup.set()

    async def _put_records(self, request: PutRecordsRequest) -> dict[str, Any]:
        body = await self._client.transport.call("PutRecords", request.body)
        return parse_put_records(body)

    def _finish(self, task: asyncio.Task[Any], now: float) -> None:
        """Feed one finished call back to the core and resolve what it completes."""
        if task is self._limits:
            self._limits = None
            if task.exception() is None:
                kib = task.result().get("MaxRecordSizeInKiB")
                if isinstance(kib, int) and kib > 0:
                    self._core.set_stream_limits(kib * 1024)
            # A refusal (no DescribeStreamSummary permission, say) keeps the config's
            # limits, which every stream accepts; PutRecords reports the real problems.
            if not self.stream_limits.done():
                self.stream_limits.set_result(None)
            return
        if task is self._refresh:
            self._refresh = None
            error = task.exception()
            if error is None:
                self._core.set_shard_map(task.result(), now)
            else:
                self._core.on_shard_map_error(error, now)
            if not self.first_shard_map.done():
                self.first_shard_map.set_result(None)
            return
        request = self._in_flight.pop(task)
        error = task.exception()
        if error is None:
            completions = self._core.on_response(request, task.result(), now)
        else:
            # Transport errors and unreadable answers are KinesisErrors already; anything
            # else (a bug in a mock handler) fails the request rather than the sender.
            completions = self._core.on_error(request, error, now)
        if completions:
            self._resolve(completions)

    async def run(self) -> None:
        """The loop; returns after :meth:`stop` once nothing is pending."""
        loop = asyncio.get_running_loop()
        core = self._core
        wake_task: asyncio.Task[Any] | None = None
        self._limits = loop.create_task(
            self._client.describe_stream_summary(self._stream_name, stream_arn=self._stream_arn)
        )
        try:
            while True:
                self.wakeup.clear()
                self.woken = False
                now = loop.time()
                poll = core.poll(now)
                if poll.completions:
                    self._resolve(poll.completions)
                if poll.refresh_shard_map and self._refresh is None:
                    self._refresh = loop.create_task(
                        self._client.shard_ranges(self._stream_name, stream_arn=self._stream_arn)
                    )
                for request in poll.requests:
                    self._in_flight[loop.create_task(self._put_records(request))] = request
                if (
                    self._stopping
                    and not self._in_flight
                    and core.buffered_records == 0
                    and not poll.requests
                ):
                    return
                if wake_task is None or wake_task.done():
                    wake_task = loop.create_task(self.wakeup.wait())
                waits: set[asyncio.Task[Any]] = {wake_task, *self._in_flight}
                if self._refresh is not None:
                    waits.add(self._refresh)
                if self._limits is not None:
                    waits.add(self._limits)
                timeout = None if poll.deadline is None else max(0.0, poll.deadline - now)
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                now = loop.time()
                for task in done:
                    if task is not wake_task:
                        self._finish(task, now)
        finally:
            await self._abort(wake_task)

    async def _abort(self, wake_task: asyncio.Task[Any] | None) -> None:
        """Cancel what is still running; fail the records of unanswered requests."""
        tasks: list[asyncio.Task[Any]] = list(self._in_flight)
        if wake_task is not None:
            tasks.append(wake_task)
        if self._refresh is not None:
            tasks.append(self._refresh)
            self._refresh = None
        if self._limits is not None:
            tasks.append(self._limits)
            self._limits = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self.first_shard_map.done():
            self.first_shard_map.set_result(None)
        if not self.stream_limits.done():
            self.stream_limits.set_result(None)
        now = asyncio.get_running_loop().time()
        closed = ProducerClosed("the producer stopped before the request was answered")
        for request in list(self._in_flight.values()):
            completions = self._core.on_error(request, closed, now)
            if completions:
                self._resolve(completions)
        self._in_flight.clear()
