"""KinesisClient over a MockTransport: payloads, pagination, decoding, errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kpl.client import KinesisClient
from kpl.errors import InternalFailure, ResourceNotFoundException, ValidationException
from kpl.transport import MockRequest, MockResponse, MockTransport


def shard(index: int, start: int, end: int, closed: bool = False) -> dict[str, Any]:
    numbers = {"StartingSequenceNumber": "1"}
    if closed:
        numbers["EndingSequenceNumber"] = "2"
    return {
        "ShardId": f"shardId-{index:012d}",
        "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
        "SequenceNumberRange": numbers,
    }


async def test_list_shards_follows_next_token_and_keeps_open_shards() -> None:
    pages = {
        None: {"Shards": [shard(0, 0, 99, closed=True), shard(2, 50, 99)], "NextToken": "t1"},
        "t1": {"Shards": [shard(1, 0, 49)]},
    }
    seen: list[dict[str, Any]] = []

    def handler(request: MockRequest) -> Any:
        assert request.action == "ListShards"
        payload = request.json()
        seen.append(payload)
        return pages[payload.get("NextToken")]

    async with KinesisClient(transport=MockTransport(handler)) as client:
        ranges = await client.shard_ranges("s")
        every = await client.list_shards("s", open_only=False)
    assert ranges == [("shardId-000000000001", 0, 49), ("shardId-000000000002", 50, 99)]
    assert len(every) == 3
    # The stream is named on the first page only; later pages carry just the token.
    assert seen[0] == {"StreamName": "s"}
    assert seen[1] == {"NextToken": "t1"}


async def test_put_and_get_records_encode_and_decode_blobs() -> None:
    stored: list[dict[str, Any]] = []

    def handler(request: MockRequest) -> Any:
        payload = request.json()
        if request.action == "PutRecord":
            stored.append(payload)
            return {"ShardId": "shardId-000000000000", "SequenceNumber": "1"}
        if request.action == "GetShardIterator":
            assert payload["ShardIteratorType"] == "AT_SEQUENCE_NUMBER"
            assert payload["StartingSequenceNumber"] == "1"
            return {"ShardIterator": "it"}
        assert request.action == "GetRecords"
        assert payload == {"ShardIterator": "it", "Limit": 5}
        return {
            "Records": [{"Data": stored[0]["Data"], "PartitionKey": "k", "SequenceNumber": "1"}],
            "NextShardIterator": "it2",
            "MillisBehindLatest": 0,
        }

    transport = MockTransport(handler)
    async with KinesisClient(transport=transport) as client:
        put = await client.put_record("s", b"\x00\xffdata", "k", explicit_hash_key="7")
        iterator = await client.get_shard_iterator(
            "s", put["ShardId"], "AT_SEQUENCE_NUMBER", starting_sequence_number="1"
        )
        answer = await client.get_records(iterator, limit=5)
    assert stored[0]["Data"] == base64.b64encode(b"\x00\xffdata").decode()
    assert stored[0]["ExplicitHashKey"] == "7"
    assert answer["Records"][0]["Data"] == b"\x00\xffdata"
    assert transport.closed


async def test_control_plane_payloads() -> None:
    transport = MockTransport(lambda request: None)
    client = KinesisClient(transport=transport, owns_transport=False)
    await client.create_stream("s", 3)
    await client.create_stream("od", on_demand=True)
    await client.split_shard("s", "shardId-000000000000", 2**127)
    await client.merge_shards("s", "shardId-000000000001", "shardId-000000000002")
    await client.delete_stream("s", enforce_consumer_deletion=True)
    await client.close()
    assert not transport.closed  # not owned
    assert [(r.action, r.json()) for r in transport.requests] == [
        ("CreateStream", {"StreamName": "s", "ShardCount": 3}),
        ("CreateStream", {"StreamName": "od", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}),
        ("SplitShard", {"StreamName": "s", "ShardToSplit": "shardId-000000000000",
                        "NewStartingHashKey": str(2**127)}),
        ("MergeShards", {"StreamName": "s", "ShardToMerge": "shardId-000000000001",
                         "AdjacentShardToMerge": "shardId-000000000002"}),
        ("DeleteStream", {"StreamName": "s", "EnforceConsumerDeletion": True}),
    ]


async def test_create_stream_rejects_bad_shard_count() -> None:
    client = KinesisClient(transport=MockTransport(lambda request: None))
    with pytest.raises(ValueError, match="shard_count"):
        await client.create_stream("s", 0)
    assert client.transport.requests == []  # type: ignore[attr-defined]
    await client.close()


async def test_wait_for_active_polls_until_active() -> None:
    states = iter(["CREATING", "CREATING", "ACTIVE"])

    def handler(request: MockRequest) -> Any:
        return {"StreamDescriptionSummary": {"StreamStatus": next(states), "StreamName": "s"}}

    async with KinesisClient(transport=MockTransport(handler)) as client:
        summary = await client.wait_for_active("s", interval=0)
    assert summary["StreamStatus"] == "ACTIVE"


async def test_errors_arrive_translated() -> None:
    def handler(request: MockRequest) -> Any:
        return MockResponse(400, {"__type": "ResourceNotFoundException", "message": "gone"})

    async with KinesisClient(transport=MockTransport(handler)) as client:
        with pytest.raises(ResourceNotFoundException, match="gone"):
            await client.describe_stream_summary("s")


async def test_non_object_answer_is_a_clear_error() -> None:
    async with KinesisClient(transport=MockTransport(lambda request: b"[1]")) as client:
        with pytest.raises(TypeError, match="not an object"):
            await client.call("ListStreams")


async def test_retryable_errors_are_retried_up_to_max_attempts() -> None:
    answers = iter([
        MockResponse(500, {"__type": "InternalFailure"}),
        MockResponse(400, {"__type": "LimitExceededException"}),
        {"StreamDescriptionSummary": {"StreamStatus": "ACTIVE"}},
    ])
    transport = MockTransport(lambda request: next(answers))
    async with KinesisClient(transport=transport, max_attempts=3, backoff=0.0) as client:
        summary = await client.describe_stream_summary("s")
    assert summary["StreamStatus"] == "ACTIVE"
    assert len(transport.requests) == 3


async def test_retries_stop_at_max_attempts_and_skip_permanent_errors() -> None:
    transport = MockTransport(lambda request: MockResponse(500, {"__type": "InternalFailure"}))
    async with KinesisClient(transport=transport, max_attempts=2, backoff=0.0) as client:
        with pytest.raises(InternalFailure):
            await client.describe_stream_summary("s")
    assert len(transport.requests) == 2
    permanent = MockTransport(lambda request: MockResponse(400, {"__type": "ValidationException"}))
    async with KinesisClient(transport=permanent, max_attempts=5, backoff=0.0) as client:
        with pytest.raises(ValidationException):
            await client.describe_stream_summary("s")
    assert len(permanent.requests) == 1
    with pytest.raises(ValueError, match="max_attempts"):
        KinesisClient(transport=permanent, max_attempts=0)
