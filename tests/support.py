"""Test support shared by the server and command-line tests.

boto3 and the ``kpl`` commands run their own (or no) event loop, so the real server
they talk to runs on a private loop in a thread, on port 0.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import boto3

from server import StreamServer


class FakeClock:
    """A settable clock for the server (epoch seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ServerThread:
    """Runs a StreamServer on a private event loop until :meth:`stop`.

    ``ServerThread(**overrides).start()`` ... ``.stop()``, or ``with ServerThread() as s:``.
    """

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        #: The running server (for tests that look inside it), once started.
        self.server: StreamServer | None = None
        self._thread = threading.Thread(target=self._run, name="stream-server", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with StreamServer(port=0, **self._overrides) as server:
                self.server = server
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
        if not self._ready.wait(30):
            raise RuntimeError("the test server did not start within 30 s")
        if self._error is not None:
            raise RuntimeError("the test server failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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


def serve_with_client(**overrides: Any) -> Iterator[Any]:
    """For a fixture: a server with ``overrides`` and a boto3 client for it, both closed after."""
    with ServerThread(**overrides) as thread:
        client = make_client(thread.url)
        try:
            yield client
        finally:
            client.close()
