"""The asyncio shell of event-stream answers: shard signals and the writing loop.

* :class:`ShardSignals` is the "appended" signal per shard. The engine's stream table
  calls :meth:`ShardSignals.mark` whenever a shard changes (records appended, the shard
  closed, a subscription taken over); the web layer calls :meth:`ShardSignals.flush` once
  the request that made the change has made it durable, which wakes every subscriber
  waiting on those shards at once. A waiter takes the shard's current
  :class:`asyncio.Event` *before* it polls the engine, so a change between its poll and
  its wait is never missed. No one sleeps in a loop: a subscription waits for its shard's
  signal or for the deadline its last poll named (the heartbeat, the budget, the expiry).
* :func:`write_event_stream` writes an :class:`~server.core.calls.EventStream`: the
  ``initial-response`` event, then each poll's events, until the stream ends, the client
  leaves or the server stops; an error raised by a poll becomes an exception message
  (``:exception-type`` and ``{"message"}``) that ends the stream. Each write waits for
  the transport to drain, so a reader that stops reading holds at most one event plus the
  transport's buffer in memory; its subscription keeps only a position and catches up
  from storage when it reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from kpl.protocol.eventstream import CONTENT_TYPE, encode_event, encode_exception
from server.core.calls import Event, EventBatch, EventStream
from server.core.errors import InternalFailure, KinesisError
from server.web.codec import (
    CBOR_CONTENT_TYPE,
    encode_cbor_response,
    encode_response,
)
from server.web.keys import METRICS_KEY, PAYLOAD_KEY

__all__ = ["LiveStream", "ShardSignals", "write_event_stream"]

log = logging.getLogger("server.web")

_Key = tuple[str, str]
_NO_SHARD: _Key = ("", "")
#: How long the end of a stream (its last event, the final chunk) may wait for a client
#: that does not read before the connection is dropped.
_END_GRACE_SECONDS = 5.0
#: How often a subscription waiting for its shard checks that its client is still
#: connected: a client that left ends its subscription within this, so the shard can be
#: subscribed to again (a live one refuses a new subscription for its first 5 s).
_LIVENESS_SECONDS = 0.5
#: Payload content type of each message, by the client's wire format.
_JSON_PAYLOAD = "application/json"
#: The events the SubscribeToShardEvent metrics count (not exceptions, not the first).
_EVENT_TYPE = "SubscribeToShardEvent"


class ShardSignals:
    """One wake-up :class:`asyncio.Event` per shard that has waiters, set on change."""

    def __init__(self) -> None:
        self._events: dict[_Key, asyncio.Event] = {}
        self._pending: set[_Key] = set()
        self.stopped = False
        #: The event streams being written now (for shutdown and observation).
        self.live: set[LiveStream] = set()

    def mark(self, stream_name: str, shard_id: str) -> None:
        """The engine's hook: the shard changed (woken at the next :meth:`flush`)."""
        self._pending.add((stream_name, shard_id))

    def flush(self) -> None:
        """Wake the waiters of every shard marked since the last flush."""
        if not self._pending:
            return
        events = self._events
        for key in self._pending:
            event = events.pop(key, None)
            if event is not None:
                event.set()
        self._pending.clear()

    def current(self, key: _Key) -> asyncio.Event:
        """The event the shard's next change will set."""
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    def stop(self) -> None:
        """The server is stopping: wake everyone; every stream ends at its next turn.

        A stream blocked writing to a client that stopped reading would hold the
        shutdown until its expiry: its connection is aborted instead.
        """
        self.stopped = True
        for event in self._events.values():
            event.set()
        self._events.clear()
        for live in self.live:
            transport = live.request.transport
            if transport is not None and transport.get_write_buffer_size() > 0:
                transport.abort()


class LiveStream:
    """An event stream being written: its response and what it holds in memory."""

    __slots__ = ("request", "stream")

    def __init__(self, request: web.Request, stream: EventStream) -> None:
        self.request = request
        self.stream = stream

    def buffered_bytes(self) -> int:
        """Bytes written to the transport and not yet sent to the client."""
        transport = self.request.transport
        return 0 if transport is None else transport.get_write_buffer_size()


def _exception(error: KinesisError) -> Event:
    # Once the 200 and its first events are out, an error can only be a message.
    return Event(error.code, {"message": error.message}, exception=True)


async def _write(response: web.StreamResponse, data: bytes, limit: float) -> None:
    # A reader that stops reading blocks the write; it gives up at the stream's expiry.
    async with asyncio.timeout(max(limit, _END_GRACE_SECONDS)):
        await response.write(data)


async def _wait(wake: asyncio.Event, delay: float, request: web.Request) -> None:
    """Wait for the shard's signal or ``delay`` seconds, whichever is first; raise
    ``ConnectionResetError`` as soon as the client is seen gone (aiohttp learns it at
    once, the writing loop only at its next write, up to a heartbeat later)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + delay
    while not wake.is_set():
        left = until - loop.time()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(left, _LIVENESS_SECONDS)):
                await wake.wait()
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client left")


async def write_event_stream(
    request: web.Request,
    stream: EventStream,
    signals: ShardSignals,
    clock: Callable[[], float],
    *,
    request_id: str,
    cbor: bool,
) -> web.StreamResponse:
    """Write ``stream`` as an ``application/vnd.amazon.eventstream`` response."""
    encode: Callable[[dict[str, Any]], bytes] = encode_cbor_response if cbor else encode_response
    payload_type = CBOR_CONTENT_TYPE if cbor else _JSON_PAYLOAD
    response = web.StreamResponse(
        status=200, headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id}
    )
    await response.prepare(request)
    live = LiveStream(request, stream)
    # SubscribeToShardEvent metrics, per consumer (the ARN the call named).
    metrics = request.app.get(METRICS_KEY)
    payload = request.get(PAYLOAD_KEY)
    consumer_arn = payload.get("ConsumerARN") if isinstance(payload, dict) else None
    observe = (
        functools.partial(metrics.observe_subscription_event, consumer_arn)
        if metrics is not None and isinstance(consumer_arn, str)
        else None
    )
    signals.live.add(live)
    key = stream.wake_key or _NO_SHARD
    expires_at = stream.expires_at

    def limit() -> float:
        return 3600.0 if expires_at is None else expires_at - clock()

    try:
        await _write(
            response, encode_event("initial-response", encode(stream.initial), payload_type),
            limit(),
        )
        while not signals.stopped:
            wake = signals.current(key)
            try:
                batch = stream.poll(clock())
            except KinesisError as error:
                batch = EventBatch([_exception(error)], None)
            except Exception:
                log.exception("event stream failed")
                batch = EventBatch([_exception(InternalFailure())], None)
            for event in batch.events:
                body = encode(event.payload)
                frame = (
                    encode_exception(event.event_type, body, payload_type)
                    if event.exception
                    else encode_event(event.event_type, body, payload_type)
                )
                await _write(response, frame, limit())
                if observe is not None and event.event_type == _EVENT_TYPE:
                    observe(event.payload["Records"], event.payload["MillisBehindLatest"])
            if batch.wake_at is None:
                break
            delay = batch.wake_at - clock()
            if delay > 0:
                await _wait(wake, delay, request)
            else:
                # Catching up: let other requests run between events even when the
                # transport takes every write without pausing.
                await asyncio.sleep(0)
        async with asyncio.timeout(_END_GRACE_SECONDS):
            await response.write_eof()
    except ConnectionError:
        pass  # the client left
    except TimeoutError:
        # The client stopped reading until the stream's end: drop the connection, or
        # aiohttp's own end of the response would wait on it again.
        transport = request.transport
        if transport is not None:
            transport.abort()
    finally:
        signals.live.discard(live)
        stream.close()
    return response
