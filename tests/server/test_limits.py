"""What one client may cost: the connection cap, slow headers and bodies, stalled readers,
and the byte budget of answers in flight."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from server.web.limits import ByteBudget
from tests.server.test_wire import post
from tests.support import ServerThread

JSON = "application/x-amz-json-1.1"


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "", parts.port or 0), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def request_bytes(target: str, body: bytes) -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.{target}\r\n"
        f"Content-Type: {JSON}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture
def capped() -> Iterator[str]:
    with ServerThread(
        require_auth=False, limits="off", max_connections=3, idle_timeout_seconds=0.5,
        body_timeout_seconds=0.5,
    ) as thread:
        yield thread.url


def test_beyond_the_connection_cap_a_new_client_gets_a_clear_refusal(
    capped: str, caplog: pytest.LogCaptureFixture
) -> None:
    held = [connect(capped) for _ in range(3)]
    try:
        for sock in held:  # each is being served
            sock.sendall(request_bytes("ListStreams", b"{}"))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with caplog.at_level(logging.WARNING, logger="server.web"), connect(capped) as extra:
            answer = read_until_closed(extra)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert orjson.loads(body)["__type"] == "ServiceUnavailableException"
        assert "connection cap of 3" in caplog.text
    finally:
        for sock in held:
            sock.close()
    # Room again once they are gone.
    with connect(capped) as sock:
        sock.sendall(request_bytes("ListStreams", b"{}"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("sent", [b"", b"POST / HT", b"POST / HTTP/1.1\r\nHost: x\r\n"])
def test_a_connection_that_never_completes_its_headers_is_closed(capped: str, sent: bytes) -> None:
    with connect(capped) as sock:
        sock.sendall(sent)
        assert read_until_closed(sock) == b""


def test_a_body_that_stops_arriving_gets_408(capped: str) -> None:
    with connect(capped) as sock:
        sock.sendall(request_bytes("ListStreams", b"{}")[:-2])  # headers, no body
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")


def test_a_client_that_stops_reading_a_large_answer_is_cut_off() -> None:
    aborted = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "read nothing" in record.getMessage():
                aborted.set()

    watch = Watch()
    logging.getLogger("server.web").addHandler(watch)
    try:
        with ServerThread(
            require_auth=False, limits="off", state_delay_seconds=0.0,
            write_timeout_seconds=0.5,
        ) as thread:
            url = thread.url
            create = b'{"StreamName":"big","ShardCount":1}'
            post(url, "CreateStream", create, {"Content-Type": JSON})
            data = base64.b64encode(b"x" * 1_000_000).decode()
            for _ in range(9):
                post(url, "PutRecord", orjson.dumps(
                    {"StreamName": "big", "PartitionKey": "k", "Data": data}
                ), {"Content-Type": JSON})
            _, _, raw = post(url, "GetShardIterator", orjson.dumps({
                "StreamName": "big", "ShardId": "shardId-000000000000",
                "ShardIteratorType": "TRIM_HORIZON",
            }), {"Content-Type": JSON})
            token = orjson.loads(raw)["ShardIterator"]
            with connect(url) as sock:
                sock.sendall(request_bytes("GetRecords", orjson.dumps({"ShardIterator": token})))
                assert aborted.wait(10)
                received = read_until_closed(sock)
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert len(body) < length  # cut off before the whole answer
            # The server goes on answering others.
            status, _, _ = post(url, "ListStreams", b"{}", {"Content-Type": JSON})
            assert status == 200
    finally:
        logging.getLogger("server.web").removeHandler(watch)


# -- the answer budget (plain asyncio, no server) -------------------------------------


async def test_the_budget_admits_in_order_and_never_beyond_capacity() -> None:
    budget = ByteBudget(100)
    assert await budget.reserve(60) == 60
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        await budget.reserve(size)
        order.append(name)

    first = asyncio.ensure_future(take("a", 50))
    second = asyncio.ensure_future(take("b", 10))  # would fit, but waits its turn
    await asyncio.sleep(0)
    assert order == []
    budget.release(60)
    await asyncio.gather(first, second)
    assert order == ["a", "b"]
    assert budget.used == 60


async def test_an_oversized_answer_goes_alone_and_a_cancelled_waiter_gives_way() -> None:
    budget = ByteBudget(10)
    await budget.reserve(5)
    big = asyncio.ensure_future(budget.reserve(50))
    small = asyncio.ensure_future(budget.reserve(1))
    await asyncio.sleep(0)
    big.cancel()
    await asyncio.sleep(0)
    assert await small == 1
    budget.release(5)
    budget.release(1)
    assert await budget.reserve(50) == 50  # alone: admitted whatever its size
    assert budget.used == 50


def test_a_large_answer_waits_for_the_budget_without_holding_its_bytes() -> None:
    aborted = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "read nothing" in record.getMessage():
                aborted.set()

    watch = Watch()
    logging.getLogger("server.web").addHandler(watch)
    try:
        with ServerThread(
            require_auth=False, limits="off", state_delay_seconds=0.0,
            write_timeout_seconds=1.0, max_answer_bytes=1024 * 1024,
        ) as thread:
            url = thread.url
            create = b'{"StreamName":"big","ShardCount":1}'
            post(url, "CreateStream", create, {"Content-Type": JSON})
            data = base64.b64encode(b"y" * 1_000_000).decode()
            for _ in range(9):
                post(url, "PutRecord", orjson.dumps(
                    {"StreamName": "big", "PartitionKey": "k", "Data": data}
                ), {"Content-Type": JSON})
            _, _, raw = post(url, "GetShardIterator", orjson.dumps({
                "StreamName": "big", "ShardId": "shardId-000000000000",
                "ShardIteratorType": "TRIM_HORIZON",
            }), {"Content-Type": JSON})
            request = orjson.dumps({"ShardIterator": orjson.loads(raw)["ShardIterator"]})
            with connect(url) as stalled:
                stalled.sendall(request_bytes("GetRecords", request))
                # Its answer has started: it holds the budget (and reads no more).
                assert stalled.recv(12) == b"HTTP/1.1 200"
                # A second reader waits for the budget the first holds, then gets it all.
                status, _, answer = post(url, "GetRecords", request, {"Content-Type": JSON})
                assert aborted.is_set()  # only once the stalled one was cut off
            assert status == 200
            assert len(orjson.loads(answer)["Records"]) == 9
    finally:
        logging.getLogger("server.web").removeHandler(watch)
