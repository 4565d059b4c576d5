"""Shared fixtures: a real StreamServer on port 0 in a background thread, boto3 clients.

boto3 is synchronous, so the server runs on its own event loop in a thread and the
boto3 tests are plain functions. One server per module keeps the suite fast; tests use
unique stream names so they do not see each other's streams.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import ServerThread, make_client


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
