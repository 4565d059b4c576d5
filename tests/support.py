"""Test support shared by the server, producer and command-line tests.

boto3 and the ``kpl`` commands run their own (or no) event loop, so the real server
they talk to runs on a private loop in a thread, on port 0.

Shell tests that talk to no socket run on :class:`VirtualTimeLoop` (``@virtual_time``):
its clock stands still while anything is ready to run and jumps to the next timer when
nothing is, so a test's timeouts, backoffs and TTLs pass in no wall time and always in
the same order.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import boto3

from server import StreamServer


class FakeClock:
    """A settable clock for the server (epoch seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_P = ParamSpec("_P")
_R = TypeVar("_R")


class _JumpingSelector(selectors.BaseSelector):
    """A selector that, instead of blocking until a timer is due, moves the loop's
    clock to it. Real readiness (a thread's wake-up, a socket) still wins: it is
    polled first, and with no timer at all the selector blocks for real."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None or self._loop.threads_busy:
            # No timer to jump to, or a worker thread whose result is real: wait for real.
            return self._real.select(timeout)
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: ``time()`` moves only when every task waits for a
    timer, and then straight to the earliest one. Work in executor threads takes real
    time, so the clock holds still while any is running."""

    def __init__(self, start: float = 100_000.0) -> None:
        self._now = start
        self.threads_busy = 0
        super().__init__(_JumpingSelector(self))

    def run_in_executor(self, executor: Any, func: Callable[..., _R], *args: Any) -> Any:
        """Run ``func`` in a thread, holding the clock until it is done."""
        future = super().run_in_executor(executor, func, *args)
        self.threads_busy += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, future: asyncio.Future[Any]) -> None:
        self.threads_busy -= 1

    async def shutdown_default_executor(self, *args: Any) -> None:
        """Join the executor's threads with no (virtual) deadline: joining takes real time."""
        await super().shutdown_default_executor()

    def time(self) -> float:
        """The virtual clock (seconds)."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the selector does, when the loop would sleep)."""
        self._now += seconds


def virtual_time(test: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, _R]:
    """Run an async test on a fresh :class:`VirtualTimeLoop` (for tests without sockets)."""

    @functools.wraps(test)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            return runner.run(test(*args, **kwargs))

    return run


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
