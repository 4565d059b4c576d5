"""Fixtures for the command-line tests.

The commands run their own event loop (``asyncio.Runner``), so a server they talk to
cannot live on the test's loop: it runs on a loop of its own in a thread, on port 0.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner


class ServerThread:
    """The real server on a free loopback port, on its own loop in a thread."""

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._main, name="test server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        from server import StreamServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with StreamServer(host="127.0.0.1", port=0, **self._overrides) as srv:
            self.url = str(srv.url)
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the test server did not start within 30 s")
        if self._error is not None:
            raise RuntimeError("the test server failed to start") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@pytest.fixture
def server_url() -> Iterator[str]:
    """URL of a fresh server for one test."""
    with ServerThread() as srv:
        yield srv.url


@pytest.fixture
def runner() -> CliRunner:
    """Click's runner; stderr is kept apart from stdout."""
    return CliRunner()


async def _knows_splitshard(url: str) -> bool:
    from kpl.client import KinesisClient
    from kpl.errors import KinesisError

    async with KinesisClient(url) as client:
        try:
            await client.call("SplitShard", {})
        except KinesisError as error:
            return error.error_code != "UnknownOperationException"
    return True


@pytest.fixture
def reshard_url(server_url: str) -> str:
    """A server that reshards (SplitShard arrives with the server's issue 3)."""
    if not asyncio.run(_knows_splitshard(server_url)):
        pytest.skip("the server does not implement SplitShard yet")
    return server_url
