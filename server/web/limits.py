"""What one client may cost: connections, slow reads and writes, answer bytes in flight.

Theory of operation
-------------------
The server is one event loop, so a client must never hold more than its share:

* **Connections.** :class:`GuardedSite` listens like aiohttp's ``TCPSite`` but counts
  connections; beyond ``max_connections`` a new one gets a short ``503`` with an
  AWS-shaped body and is closed at once (logged at most every 10 s), so the process
  never reaches its file limit and the clients already connected keep being served.
* **Headers and idle keep-alive.** aiohttp's ``keepalive_timeout`` closes a connection
  whose handler waits for a request for that long: no request at all, half a request
  line or headers, or an idle keep-alive.
* **Bodies.** The body is read under ``body_timeout`` (``dispatch``): a client that
  stops sending mid-body gets ``408`` and its connection closed. Bodies larger than
  :data:`SMALL_BODY` in flight across every connection (being read, decoded and
  answered) are bounded by a :class:`ByteBudget` of ``max_body_bytes``: a large body
  that finds no room is not read until there is (it waits in the socket's buffers and
  the client's), reserving its announced length (a chunked one, the body cap).
* **Answers.** A large answer (GetRecords' up to 10 MiB of data, ~14 MiB of JSON) is
  written in chunks, each awaiting the transport's drain under ``write_timeout``: a
  client that stops reading is cut off instead of holding the handler, and the bytes of
  large answers in flight across every connection are bounded by :class:`ByteBudget`:
  an answer that finds no room drops its bytes, waits for room, and is made afresh from
  the same iterator. Small answers (most, and every normal reader's) never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from aiohttp import web

__all__ = ["SMALL_BODY", "ByteBudget", "GuardedSite", "write_guarded"]

log = logging.getLogger("server.web")

#: Answers up to this size are written in one go (the socket buffer takes them).
SMALL_ANSWER = 256 * 1024
#: Request bodies up to this size are read without a reservation.
SMALL_BODY = 256 * 1024
_CHUNK = 256 * 1024
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-amz-json-1.1\r\n"
    b"Connection: close\r\nContent-Length: 84\r\n\r\n"
    b'{"__type":"ServiceUnavailableException","message":"Too many connections to server."}'
)
_LOG_EVERY = 10.0


class ByteBudget:
    """A byte budget for bodies or answers in flight: reservations wait, first come
    first served.

    One reservation may be larger than the whole budget; it then waits until it is alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def try_reserve(self, size: int) -> bool:
        """Take ``size`` bytes if they fit now (and nobody waits); whether taken."""
        if not self._waiters and (self.used + size <= self.capacity or self.used == 0):
            self.used += size
            return True
        return False

    async def reserve(self, size: int) -> int:
        """Wait until ``size`` bytes fit (or nothing else is reserved); take them."""
        if self.try_reserve(size):
            return size
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()  # those behind it may fit now
            elif future.done() and not future.cancelled():
                self.release(size)  # granted as we were cancelled: hand it on
            raise
        return size

    def release(self, size: int) -> None:
        """Give ``size`` reserved bytes back and wake whoever now fits."""
        self.used -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            want, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.used + want > self.capacity and self.used > 0:
                break
            self._waiters.popleft()
            self.used += want
            future.set_result(None)


async def write_guarded(
    request: web.Request, body: bytes, content_type: str, stall_seconds: float
) -> web.StreamResponse:
    """Write a large answer in chunks, each drained within ``stall_seconds`` or the
    connection is aborted (a client that does not read never holds the handler or the
    bytes)."""
    timeout = stall_seconds
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = len(body)
    view = memoryview(body)
    try:
        async with asyncio.timeout(timeout):
            await response.prepare(request)
        for start in range(0, len(body), _CHUNK):
            async with asyncio.timeout(timeout):
                # aiohttp's write awaits the transport's drain past its buffer limit.
                await response.write(view[start : start + _CHUNK])
        async with asyncio.timeout(timeout):
            await response.write_eof()
    except TimeoutError:
        log.warning(
            "aborting the connection of %s: it read nothing for %.0f s", request.remote, timeout
        )
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError() from None
    except ConnectionError:  # the client went away: nobody to answer
        raise asyncio.CancelledError() from None
    return response


class _Refuse(asyncio.Protocol):
    """Answers ``503`` and closes: the connection cap is reached."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class _Counted(asyncio.Protocol):
    """Wraps aiohttp's protocol to count the connection while it is open."""

    def __init__(self, inner: Any, guard: _Guard) -> None:
        self._inner = inner
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.open -= 1
        self._inner.connection_lost(exc)


class _Guard:
    """The protocol factory: aiohttp's handler under the cap, a refusal above it."""

    def __init__(self, factory: Any, max_connections: int) -> None:
        self._factory = factory
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0
        self._logged = 0.0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged >= _LOG_EVERY:
                self._logged = now
                log.warning(
                    "connection cap of %d reached: refusing new connections (%d so far)",
                    self.max_connections, self.refused,
                )
            return _Refuse()
        self.open += 1
        return _Counted(self._factory(), self)


class GuardedSite(web.TCPSite):
    """``TCPSite`` with a cap on concurrent connections (see the module docstring)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 max_connections: int, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.max_connections = max_connections
        self.guard: _Guard | None = None

    async def start(self) -> None:
        """Listen, handing each connection to aiohttp through the cap."""
        # BaseSite.start registers the site with its runner; TCPSite.start would also
        # listen, with aiohttp's factory unwrapped.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self.guard = _Guard(server, self.max_connections)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        with contextlib.suppress(IndexError):
            self._bound_port = self._server.sockets[0].getsockname()[1]
