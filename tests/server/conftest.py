"""Shared fixtures: a real StreamServer on port 0 in a background thread, boto3 clients.

boto3 is synchronous, so the server runs on its own event loop in a thread and the
boto3 tests are plain functions. One server per module keeps the suite fast; tests use
unique stream names so they do not see each other's streams.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from server import StreamServer


class FakeClock:
    """A settable clock for the server (epoch seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ServerThread:
    """Runs a StreamServer on a private event loop until :meth:`stop`."""

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="stream-server", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with StreamServer(port=0, **self._overrides) as server:
                self.url = server.url
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as error:  # surfaced by start()
            self._error = error
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def make_client(url: str) -> Any:
    """A boto3 Kinesis client for the local server (no retries: errors show at once)."""
    from botocore.config import Config

    return boto3.client(
        "kinesis",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The URL of a real server shared by a test module (state delay 0, limits off).

    Limits are off because these tests are about the API: a module's burst of control
    calls must not be throttled (the limit tests start their own servers).
    """
    thread = ServerThread(state_delay_seconds=0.0, limits="off").start()
    try:
        yield thread.url
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def kinesis(server_url: str) -> Iterator[Any]:
    """A boto3 client for :func:`server_url`."""
    client = make_client(server_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def stream_name() -> str:
    """A fresh stream name."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_stream(kinesis: Any) -> Callable[..., str]:
    """Create an ACTIVE stream: ``make_stream(shards=1)`` -> its name."""

    def create(shards: int = 1, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        kinesis.create_stream(StreamName=name, ShardCount=shards)
        kinesis.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.01, "MaxAttempts": 100}
        )
        return name

    return create
