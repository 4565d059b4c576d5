"""GetRecords in CBOR 1.1: the same records as JSON from the real server, errors in CBOR
translated, transports without a content type kept on JSON, and a consumer's readers
choosing the format by record size."""

from __future__ import annotations

import asyncio
from typing import Any

import cbor2
import pytest

from kpl import Consumer, ConsumerConfig
from kpl.client import KinesisClient
from kpl.consumer.core.reading import CBOR_FROM_RECORD_SIZE
from kpl.consumer.leases.memory import MemoryLeaseStore
from kpl.errors import InvalidArgumentException, ResourceNotFoundException
from kpl.protocol.aggregation import SubRecord, encode
from kpl.transport import (
    CBOR_CONTENT_TYPE,
    CONTENT_TYPE,
    AioHttpTransport,
    MockRequest,
    MockResponse,
    MockTransport,
    error_from_response,
)
from server import StreamServer


async def _stream(url: str, name: str) -> KinesisClient:
    client = KinesisClient(url, region="us-east-1")
    await client.create_stream(name, 1)
    async with asyncio.timeout(10):
        await client.wait_for_active(name, interval=0.01)
    return client


async def test_cbor_answers_carry_the_same_records_as_json() -> None:
    aggregate = encode(["a", "b"], [], [SubRecord(0, None, b"\x00A"), SubRecord(1, None, b"B")])
    datas = [b"\x00\xff\x80 binary", b"", aggregate, b"x" * 5000]
    async with StreamServer(port=0, state_delay_seconds=0.0) as server:
        client = await _stream(server.url, "s")
        try:
            for i, data in enumerate(datas):
                await client.put_record("s", data, f"k{i}", explicit_hash_key="7" if i else None)
            answers = {}
            for cbor in (False, True):
                iterator = await client.get_shard_iterator(
                    "s", "shardId-000000000000", "TRIM_HORIZON"
                )
                answers[cbor] = await client.get_records(iterator, 100, cbor=cbor)
        finally:
            await client.close()
    as_json, as_cbor = answers[False], answers[True]
    assert [r["Data"] for r in as_cbor["Records"]] == datas
    assert [r["Data"] for r in as_json["Records"]] == datas
    for j, c in zip(as_json["Records"], as_cbor["Records"], strict=True):
        assert c["PartitionKey"] == j["PartitionKey"]
        assert c["SequenceNumber"] == j["SequenceNumber"]
        # Tag 1 epoch milliseconds, given back in seconds like JSON's.
        assert isinstance(c["ApproximateArrivalTimestamp"], float)
        assert c["ApproximateArrivalTimestamp"] == pytest.approx(
            j["ApproximateArrivalTimestamp"], abs=1e-3
        )
    assert as_cbor["MillisBehindLatest"] == as_json["MillisBehindLatest"]
    assert as_cbor["NextShardIterator"]


async def test_cbor_errors_from_the_server_arrive_translated() -> None:
    async with StreamServer(port=0, state_delay_seconds=0.0) as server:
        client = await _stream(server.url, "s")
        try:
            iterator = await client.get_shard_iterator("s", "shardId-000000000000", "LATEST")
            await client.delete_stream("s")
            with pytest.raises(ResourceNotFoundException):
                await client.get_records(iterator, cbor=True)
            with pytest.raises(InvalidArgumentException):
                await client.get_records("not an iterator", cbor=True)
        finally:
            await client.close()


def test_error_answers_are_read_in_cbor_or_json() -> None:
    cbor_body = cbor2.dumps({"__type": "ExpiredIteratorException", "message": "too old"})
    error = error_from_response(400, cbor_body)
    assert error.error_code == "ExpiredIteratorException"
    assert "too old" in str(error)
    json_body = b'{"__type": "ExpiredIteratorException", "message": "too old"}'
    assert error_from_response(400, json_body).error_code == "ExpiredIteratorException"
    # Neither: the status decides, and the body is quoted.
    error = error_from_response(503, b"<html>busy</html>")
    assert error.error_code == "ServiceUnavailable"
    assert "busy" in str(error)


async def test_mock_transport_answers_in_the_format_asked() -> None:
    seen: list[MockRequest] = []

    def handler(request: MockRequest) -> Any:
        seen.append(request)
        assert request.json() == {"ShardIterator": "it", "Limit": 3}
        return {"Records": [{"Data": b"raw", "PartitionKey": "k", "SequenceNumber": "1"}]}

    async with KinesisClient(transport=MockTransport(handler)) as client:
        assert client.speaks_cbor
        answer = await client.get_records("it", 3, cbor=True)
    assert seen[0].content_type == CBOR_CONTENT_TYPE
    assert answer["Records"][0]["Data"] == b"raw"


async def test_a_cbor_answer_without_byte_data_is_a_clear_error() -> None:
    def handler(request: MockRequest) -> Any:
        return {"Records": [{"Data": "cmF3", "PartitionKey": "k", "SequenceNumber": "1"}]}

    async with KinesisClient(transport=MockTransport(handler)) as client:
        with pytest.raises(TypeError, match="without byte Data"):
            await client.get_records("it", cbor=True)

    def not_cbor(request: MockRequest) -> Any:
        return MockResponse(200, b"\xff\xff")

    async with KinesisClient(transport=MockTransport(not_cbor)) as client:
        with pytest.raises(TypeError, match="CBOR that does not parse"):
            await client.get_records("it", cbor=True)


class _JsonOnlyTransport:
    """A transport written against the JSON-only protocol: call(action, body)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def call(self, action: str, body: bytes) -> bytes:
        self.bodies.append(body)
        return b'{"Records": [{"Data": "cmF3", "PartitionKey": "k", "SequenceNumber": "1"}]}'

    async def close(self) -> None:
        pass


async def test_a_transport_without_content_types_stays_on_json() -> None:
    transport = _JsonOnlyTransport()
    async with KinesisClient(transport=transport) as client:
        assert not client.speaks_cbor
        answer = await client.get_records("it", cbor=True)
    assert answer["Records"][0]["Data"] == b"raw"
    assert transport.bodies == [b'{"ShardIterator":"it"}']


class _Recording(AioHttpTransport):
    """The real transport, noting each GetRecords call's content type."""

    def __init__(self, url: str) -> None:
        super().__init__(url, region="us-east-1")
        self.get_records: list[str] = []

    async def call(self, action: str, body: bytes, content_type: str = CONTENT_TYPE) -> bytes:
        if action == "GetRecords":
            self.get_records.append(content_type)
        return await super().call(action, body, content_type)


@pytest.mark.parametrize("large", [False, True])
async def test_a_consumer_reads_in_cbor_while_records_are_large(large: bool) -> None:
    size = 2 * CBOR_FROM_RECORD_SIZE if large else 100
    async with StreamServer(port=0, state_delay_seconds=0.0) as server:
        setup = await _stream(server.url, "s")
        transport = _Recording(server.url)
        store = MemoryLeaseStore("cbor-choice")
        config = ConsumerConfig(
            initial_position="TRIM_HORIZON", worker_id="w", idle_time_between_reads=0.0
        )
        try:
            for i in range(3):
                await setup.put_record("s", bytes([i]) * size, f"k{i}")
            got: list[bytes] = []
            async with Consumer(
                "s",
                application="cbor-choice",
                leases=store,
                config=config,
                client=KinesisClient(transport=transport),
            ) as consumer:
                async for batch in consumer:
                    got.extend(r.data for r in batch.records)
                    if len(got) == 3:
                        # The next answer is empty or new: two calls made at least.
                        await setup.put_record("s", b"\x09" * size, "k9")
                    if len(got) == 4:
                        break
        finally:
            await setup.close()
            await store.close()
            await transport.close()
    assert got == [bytes([i]) * size for i in range(3)] + [b"\x09" * size]
    # A reader starts in CBOR; after an answer of small records it asks in JSON.
    assert transport.get_records[0] == CBOR_CONTENT_TYPE
    later = set(transport.get_records[1:])
    assert later == ({CBOR_CONTENT_TYPE} if large else {CONTENT_TYPE})
