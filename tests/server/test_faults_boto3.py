"""Each fault knob against the real server with boto3 (limits off: only injected faults)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

import server.web.app as app_module
from tests.support import serve_with_client


def client_for(**overrides: Any) -> Iterator[Any]:
    yield from serve_with_client(state_delay_seconds=0.0, seed=1234, **overrides)


def new_stream(kinesis: Any) -> str:
    name = f"f-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    return name


ENTRIES = [{"Data": b"x", "PartitionKey": f"k{i}"} for i in range(200)]


@pytest.fixture(scope="module")
def throttling() -> Iterator[Any]:
    yield from client_for(throttle_rate=0.3)


@pytest.fixture(scope="module")
def failing() -> Iterator[Any]:
    yield from client_for(internal_failure_rate=1.0)


@pytest.fixture(scope="module")
def erroring() -> Iterator[Any]:
    yield from client_for(error_rate=1.0)


@pytest.fixture(scope="module")
def slow() -> Iterator[Any]:
    yield from client_for(latency_ms=(80.0, 120.0))


def test_throttle_rate_fails_entries_independently(throttling: Any) -> None:
    name = new_stream(throttling)
    result = throttling.put_records(StreamName=name, Records=ENTRIES)
    failed = [r for r in result["Records"] if "ErrorCode" in r]
    assert result["FailedRecordCount"] == len(failed)
    assert 30 <= len(failed) <= 90  # 200 draws at 0.3
    for entry in failed:
        assert entry["ErrorCode"] == "ProvisionedThroughputExceededException"
        assert entry["ErrorMessage"] == (
            f"Rate exceeded for shard shardId-000000000000 in stream {name} "
            "under account 000000000000."
        )
    written = [r["SequenceNumber"] for r in result["Records"] if "SequenceNumber" in r]
    assert written == sorted(written, key=int)
    # Only the successful entries were stored.
    iterator = throttling.get_shard_iterator(
        StreamName=name, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = throttling.get_records(ShardIterator=iterator)["Records"]
    assert [r["SequenceNumber"] for r in records] == written


def test_internal_failure_rate_fails_entries_and_put_record(failing: Any) -> None:
    name = new_stream(failing)
    result = failing.put_records(StreamName=name, Records=ENTRIES[:5])
    assert result["FailedRecordCount"] == 5
    assert {(r["ErrorCode"], r["ErrorMessage"]) for r in result["Records"]} == {
        ("InternalFailure", "Internal service failure.")
    }
    with pytest.raises(ClientError) as info:
        failing.put_record(StreamName=name, Data=b"x", PartitionKey="k")
    assert info.value.response["Error"]["Code"] == "InternalFailure"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_error_rate_fails_whole_requests_with_500(erroring: Any) -> None:
    for call, args in (
        (erroring.list_streams, {}),
        (erroring.put_records, {"StreamName": "s", "Records": ENTRIES[:1]}),
    ):
        with pytest.raises(ClientError) as info:
            call(**args)
        error = info.value.response
        assert error["Error"]["Code"] == "InternalFailure"
        assert error["Error"]["Message"] == "Internal service failure."
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_latency_is_added_to_responses(slow: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    paused: list[float] = []
    pause = app_module._pause

    async def observed(seconds: float, stopping: asyncio.Event) -> None:
        paused.append(seconds)
        await pause(seconds, stopping)

    monkeypatch.setattr(app_module, "_pause", observed)
    slow.list_streams()
    slow.list_streams()
    assert len(paused) == 2
    assert all(0.08 <= seconds <= 0.12 for seconds in paused)


def test_nothing_is_injected_by_default() -> None:
    for kinesis in client_for():
        name = new_stream(kinesis)
        result = kinesis.put_records(StreamName=name, Records=ENTRIES)
        assert result["FailedRecordCount"] == 0
