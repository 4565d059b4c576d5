"""The event-stream shell: shard signals and the writing loop, with a scripted stream."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botocore.eventstream import EventStreamBuffer

from server.core.calls import Event, EventBatch, EventStream
from server.core.errors import ResourceNotFoundException
from server.web import subscriptions
from server.web.subscriptions import ShardSignals, write_event_stream

T0 = 1_800_000_000.0


async def test_flush_wakes_only_marked_shards_with_waiters() -> None:
    signals = ShardSignals()
    a = signals.current(("s", "a"))
    b = signals.current(("s", "b"))
    signals.mark("s", "a")
    assert not a.is_set()  # marked, not yet durable
    signals.flush()
    assert a.is_set()
    assert not b.is_set()
    assert signals.current(("s", "a")) is not a  # the next change needs a fresh event
    signals.stop()
    assert b.is_set()
    assert signals.stopped


class Scripted(EventStream):
    """Answers its script one poll at a time; an exception in it is raised."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.closed = False

    @property
    def initial(self) -> dict[str, Any]:
        return {}

    def poll(self, now: float) -> EventBatch:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return EventBatch([Event("E", step)], now)

    def close(self) -> None:
        self.closed = True


async def _messages(stream: EventStream) -> list[Any]:
    signals = ShardSignals()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await write_event_stream(
            request, stream, signals, lambda: T0, request_id="r-1", cbor=False
        )

    app = web.Application()
    app.router.add_post("/", handler)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        async with client.post("/", data=b"{}") as response:
            assert response.status == 200
            assert response.headers["x-amzn-RequestId"] == "r-1"
            buffer = EventStreamBuffer()
            buffer.add_data(await asyncio.wait_for(response.read(), 10))
            return list(buffer)
    finally:
        await client.close()


async def test_an_error_in_a_poll_becomes_an_exception_message_that_ends_the_stream() -> None:
    stream = Scripted([{"n": 1}, ResourceNotFoundException("gone")])
    messages = await _messages(stream)
    assert [m.headers.get(":event-type") or m.headers[":exception-type"] for m in messages] == [
        "initial-response", "E", "ResourceNotFoundException"
    ]
    assert messages[1].payload == b'{"n":1}'
    assert messages[2].headers[":message-type"] == "exception"
    assert messages[2].payload == b'{"message":"gone"}'
    assert stream.closed


async def test_an_unexpected_error_is_an_internal_failure_message() -> None:
    stream = Scripted([RuntimeError("bug")])
    messages = await _messages(stream)
    assert messages[-1].headers[":exception-type"] == "InternalFailure"
    assert stream.closed


class Flood(EventStream):
    """1 MiB events forever, already past its expiry (so writes get only the grace)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    @property
    def initial(self) -> dict[str, Any]:
        return {}

    @property
    def expires_at(self) -> float:
        return T0

    def poll(self, now: float) -> EventBatch:
        return EventBatch([Event("E", {"blob": "x" * (1 << 20)})], now)

    def close(self) -> None:
        self.closed.set()


async def test_a_client_that_stops_reading_is_dropped_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subscriptions, "_END_GRACE_SECONDS", 0.2)
    stream = Flood()
    signals = ShardSignals()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await write_event_stream(
            request, stream, signals, lambda: T0, request_id="r-2", cbor=False
        )

    app = web.Application()
    app.router.add_post("/", handler)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        async with client.post("/", data=b"{}") as response:
            assert response.status == 200
            # Never read: the writer blocks, gives up after the grace and drops us.
            await asyncio.wait_for(stream.closed.wait(), 20)
            assert not signals.live
            with pytest.raises(aiohttp.ClientError):  # cut, not a complete response
                await asyncio.wait_for(response.read(), 20)
    finally:
        await client.close()


class Idle(EventStream):
    """One event, then nothing for an hour: only the client leaving can end it."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    @property
    def initial(self) -> dict[str, Any]:
        return {}

    def poll(self, now: float) -> EventBatch:
        return EventBatch([Event("E", {})], now + 3600)

    def close(self) -> None:
        self.closed.set()


async def test_a_client_that_leaves_ends_its_waiting_subscription_before_the_next_event() -> None:
    stream = Idle()
    signals = ShardSignals()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await write_event_stream(
            request, stream, signals, lambda: T0, request_id="r-3", cbor=False
        )

    app = web.Application()
    app.router.add_post("/", handler)
    # As the server runs it: a handler is not cancelled when its client leaves (the test
    # server's default cancels it, which would hide the writer's own check).
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"http://127.0.0.1:{port}/", data=b"{}")
            assert response.status == 200
            received = b""
            messages: list[Any] = []
            while len(messages) < 2:
                data = await asyncio.wait_for(response.content.read(64), 10)
                assert data, "the stream ended before its first event"
                received += data
                buffer = EventStreamBuffer()
                buffer.add_data(received)
                messages = list(buffer)
            assert [m.headers[":event-type"] for m in messages] == ["initial-response", "E"]
            response.close()  # drop the connection while the server waits for the shard
            # Its next event is an hour away: the subscription ends because the client left.
            await asyncio.wait_for(stream.closed.wait(), 30)
            assert not signals.live
    finally:
        signals.stop()
        await runner.cleanup()
