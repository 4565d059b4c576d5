"""Retention against the real server with boto3, the server's clock moved by the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import FakeClock, serve_with_client

HOUR = 3600.0


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def kinesis(clock: FakeClock) -> Iterator[Any]:
    yield from serve_with_client(state_delay_seconds=0.0, clock=clock)


def read(kinesis: Any, name: str, **iterator: Any) -> list[bytes]:
    it = kinesis.get_shard_iterator(
        StreamName=name, ShardId="shardId-000000000000", **iterator
    )["ShardIterator"]
    return [r["Data"] for r in kinesis.get_records(ShardIterator=it)["Records"]]


def test_records_past_retention_are_gone(kinesis: Any, clock: FakeClock) -> None:
    name = f"ret-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    start = clock.now
    first = kinesis.put_record(StreamName=name, Data=b"old", PartitionKey="k")
    clock.now += 2 * HOUR
    kinesis.put_record(StreamName=name, Data=b"new", PartitionKey="k")
    assert read(kinesis, name, ShardIteratorType="TRIM_HORIZON") == [b"old", b"new"]
    clock.now = start + 25 * HOUR
    assert read(kinesis, name, ShardIteratorType="TRIM_HORIZON") == [b"new"]
    assert read(kinesis, name, ShardIteratorType="AT_TIMESTAMP", Timestamp=start) == [b"new"]
    assert read(
        kinesis, name, ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=first["SequenceNumber"],
    ) == [b"new"]
    clock.now = start + 27 * HOUR
    assert read(kinesis, name, ShardIteratorType="TRIM_HORIZON") == []
