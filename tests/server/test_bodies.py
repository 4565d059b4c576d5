"""Request bodies: counted as they arrive, refused unparsed when they hold more than any
request, decoded and validated off the loop when large, answered in the flow's order."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import cbor2
import orjson
import pytest

from server import StreamServer
from server.core.calls import Validated
from server.core.errors import SerializationException
from server.web.bodies import Body, Decoder, read_body
from server.web.codec import (
    MAX_CBOR_ITEMS,
    MAX_JSON_VALUES,
    TOO_MANY,
    cbor_items_over,
    decode_cbor_request,
    json_values,
)
from server.web.limits import ByteBudget
from tests.server.test_wire import AUTH

CBOR = "application/x-amz-cbor-1.1"


class _Content:
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:  # all already received: no pause between them
            yield piece


class _Request:
    """What ``read_body`` reads of an aiohttp request: the length and the pieces."""

    def __init__(self, pieces: list[bytes], announced: bool = True) -> None:
        self.content = _Content(pieces)
        self.content_length = sum(map(len, pieces)) if announced else None


async def _read(pieces: list[bytes], *, count_json: bool, announced: bool = True) -> Body:
    body = await read_body(_Request(pieces, announced), 1 << 30, count_json=count_json)  # type: ignore[arg-type]
    assert body is not None
    return body


@pytest.mark.parametrize("announced", [True, False])
async def test_a_body_is_read_whole_and_its_json_values_counted(announced: bool) -> None:
    raw = orjson.dumps({"StreamName": "s", "Records": [{"Data": "aGk=", "PartitionKey": "k"}] * 3})
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    body = await _read(pieces, count_json=True, announced=announced)
    assert bytes(body.data) == raw
    assert (body.size, body.values, body.too_many) == (len(raw), json_values(raw), False)
    cbor = await _read(pieces, count_json=False, announced=announced)
    assert (bytes(cbor.data), cbor.values) == (raw, None)


async def test_a_json_body_over_the_value_limit_is_dropped_as_it_arrives() -> None:
    piece = b"{}," * 50_000
    pieces = [b'{"Records":['] + [piece] * (MAX_JSON_VALUES // 100_000 + 2) + [b"{}]}"]
    body = await _read(pieces, count_json=True)
    assert body.too_many
    assert body.data == b""  # nothing kept
    assert body.size == sum(map(len, pieces))
    with pytest.raises(SerializationException) as caught:
        await Decoder(cast(Any, None)).decode(body, cbor=False, action=None)
    assert caught.value.message == TOO_MANY


async def test_reading_lets_the_loop_serve_others_between_pieces() -> None:
    ran: list[int] = []
    reading = True

    async def other() -> None:
        while reading:
            ran.append(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = len(ran)
    body = await _read([b"x" * 65536] * 64, count_json=True)  # 4 MiB, all already here
    during = len(ran) - before
    reading = False
    await task
    assert body.size == 4 << 20
    assert during >= 4  # at least once per 512 KiB read


def test_cbor_items_are_counted_from_their_heads() -> None:
    document = {
        "a": [1, 2, {"b": b"xx" * 300}], "c": "s" * 300, "d": 1.5, "e": 2**40,
        "f": cbor2.CBORTag(1, 5), "g": [None, True, -(2**70)],
    }
    raw = cbor2.dumps(document)
    # The map and its 6 keys; a: the list, 1, 2, the map, "b", the bytes; c, d and e's
    # values; f: the tag and its number; g: the list, None, True and the bignum (a tag
    # around bytes).
    items = 1 + 6 + 6 + 3 + 2 + 5
    assert not cbor_items_over(raw, items)
    assert cbor_items_over(raw, items - 1)
    # {_ "a": [_ 1, 2], (_ "x" "y"): 0}: twelve heads, the three breaks included.
    indefinite = b"\xbf\x61a\x9f\x01\x02\xff\x7f\x61x\x61y\xff\x00\xff"
    assert cbor2.loads(indefinite) == {"a": [1, 2], "xy": 0}
    assert not cbor_items_over(indefinite, 12)
    assert cbor_items_over(indefinite, 11)


@pytest.mark.parametrize(
    "value", [[0] * (MAX_CBOR_ITEMS + 1), [[]] * (MAX_CBOR_ITEMS + 1), [b""] * MAX_CBOR_ITEMS]
)
def test_a_cbor_body_of_more_items_than_any_request_is_refused_undecoded(value: Any) -> None:
    with pytest.raises(SerializationException) as caught:
        decode_cbor_request(cbor2.dumps({"StreamName": "s", "X": value}))
    assert caught.value.message == TOO_MANY


async def test_a_cbor_item_bomb_is_refused_by_the_server() -> None:
    async with StreamServer(port=0, require_auth=False, limits="off") as server, \
            aiohttp.ClientSession() as session:
        body = cbor2.dumps({"X": [0] * 1_000_000})
        async with session.post(server.url, data=io.BytesIO(body), headers={
            "X-Amz-Target": "Kinesis_20131202.ListStreams", "Content-Type": CBOR,
        }) as response:
            assert response.status == 400
            assert cbor2.loads(await response.read()) == {
                "__type": "SerializationException", "Message": TOO_MANY,
            }


async def _post(session: aiohttp.ClientSession, url: str, target: str, body: Any,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with session.post(url, data=io.BytesIO(orjson.dumps(body)), headers={
        **(AUTH if headers is None else headers), "X-Amz-Target": f"Kinesis_20131202.{target}",
    }) as response:
        raw = await response.read()
        return response.status, orjson.loads(raw) if raw else None


def _off_loop(body: Any) -> bool:
    raw = orjson.dumps(body)
    return Decoder.off_loop(Body(raw, len(raw), json_values(raw)), cbor=False)


def _large_put(stream: str, records: int = 500) -> dict[str, Any]:
    data = base64.b64encode(b"d" * 3000).decode()
    return {"StreamName": stream, "Records": [
        {"Data": data, "PartitionKey": f"k{i}"} for i in range(records)
    ]}


async def test_a_large_body_is_validated_on_another_thread_while_the_loop_serves() -> None:
    async with StreamServer(port=0, require_auth=True, limits="off", state_delay_seconds=0) \
            as server, aiohttp.ClientSession() as session:
        engine = server.engine
        assert engine is not None
        assert (await _post(session, server.url, "CreateStream",
                            {"StreamName": "big", "ShardCount": 1}))[0] == 200
        loop_thread = threading.get_ident()
        started = asyncio.Event()
        release = threading.Event()
        seen: list[tuple[int, bool]] = []
        validate = engine.validate
        loop = asyncio.get_running_loop()

        def held_validate(action: str, body: Any) -> Validated:
            loop.call_soon_threadsafe(started.set)
            # Released by a coroutine on the loop: were this the loop's thread, it would
            # never be (the bound only keeps a broken build from hanging the suite).
            seen.append((threading.get_ident(), release.wait(60)))
            return validate(action, body)

        engine.validate = held_validate  # type: ignore[method-assign]
        put = asyncio.create_task(_post(session, server.url, "PutRecords", _large_put("big")))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([put, waiting], return_when=asyncio.FIRST_COMPLETED)
        assert not put.done(), put.result()
        # The loop answers another client while the large body is being validated.
        status, listed = await _post(session, server.url, "ListStreams", {})
        assert (status, listed["StreamNames"]) == (200, ["big"])
        release.set()
        status, answer = await put
        assert status == 200
        assert answer["FailedRecordCount"] == 0
        assert len(answer["Records"]) == 500
        assert len(seen) == 1
        assert seen[0][0] != loop_thread
        assert seen[0][1]


async def test_errors_found_ahead_are_answered_in_the_flows_order() -> None:
    async with StreamServer(port=0, require_auth=True, limits="off", state_delay_seconds=0) \
            as server, aiohttp.ClientSession() as session:
        too_many_records = _large_put("absent", records=600)
        assert _off_loop(too_many_records)
        # Unsigned: the authentication's shape is checked before validation.
        status, answer = await _post(session, server.url, "PutRecords", too_many_records,
                                     {"Content-Type": "application/x-amz-json-1.1"})
        assert (status, answer["__type"]) == (400, "MissingAuthenticationTokenException")
        # Signed: the validation error found on the worker thread.
        status, answer = await _post(session, server.url, "PutRecords", too_many_records)
        assert (status, answer["__type"]) == (400, "ValidationException")
        assert answer["message"].startswith("1 validation error detected: ")
        assert "Member must have length less than or equal to 500" in answer["message"]
        # Valid but for an absent stream: the engine's own refusal.
        status, answer = await _post(session, server.url, "PutRecords", _large_put("absent"))
        assert (status, answer["__type"]) == (400, "ResourceNotFoundException")


async def test_a_large_body_is_answered_as_a_small_one_would_be() -> None:
    async with StreamServer(port=0, require_auth=False, limits="off", state_delay_seconds=0) \
            as server, aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/x-amz-json-1.1"}
        bad = {"StreamName": "s", "Records": [{"Data": "aGk=", "PartitionKey": ""}] * 1000
               + [{"Data": 5, "PartitionKey": "k"}]}
        small = {"StreamName": "s", "Records": [{"Data": 5, "PartitionKey": "k"}]}
        assert _off_loop(bad)
        assert not _off_loop(small)
        for body in (bad, small):
            status, answer = await _post(session, server.url, "PutRecords", body, headers)
            assert (status, answer["__type"]) == (400, "SerializationException")
            assert answer["Message"] == (
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be "
                "converted to a Blob"
            )


async def test_large_bodies_in_flight_stay_within_their_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[int] = []
    waiting = asyncio.Event()

    class Watched(ByteBudget):
        async def reserve(self, size: int) -> int:
            if not self.try_reserve(size):
                waited.append(size)
                waiting.set()
                return await super().reserve(size)
            return size

    monkeypatch.setattr("server.web.app.ByteBudget", Watched)
    body = orjson.dumps({"Unknown": "a" * 700_000})  # over 256 KiB; two exceed 1 MiB
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\n"
        f"Content-Type: application/x-amz-json-1.1\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    async with StreamServer(port=0, require_auth=False, limits="off",
                            max_body_bytes=1 << 20) as server:
        first_reader, first = await asyncio.open_connection("127.0.0.1", server.port)
        first.write(head + body[:100_000])  # holds its reservation, sending slowly
        await first.drain()
        second_reader, second = await asyncio.open_connection("127.0.0.1", server.port)
        second.write(head + body)
        await second.drain()
        await waiting.wait()  # the second is not read while the first holds the room
        assert waited == [len(body)]
        first.write(body[100_000:])
        answers = []
        for reader in (first_reader, second_reader):
            answers.append(await reader.read())
        for writer in (first, second):
            writer.close()
        for raw in answers:
            assert raw.startswith(b"HTTP/1.1 200 ")
            assert orjson.loads(raw.partition(b"\r\n\r\n")[2])["StreamNames"] == []
