"""Throughput limits against the real server with boto3; a fake clock replaces waiting."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import FakeClock, serve_with_client

SCALE = 0.01  # 10 records/s and 10,485 bytes/s in, 0.05 calls/s and 20,971 bytes/s out
ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def kinesis(clock: FakeClock) -> Iterator[Any]:
    yield from serve_with_client(
        state_delay_seconds=0.0, limits="aws", limits_scale=SCALE, clock=clock
    )


@pytest.fixture(autouse=True)
def fresh_second(clock: FakeClock) -> None:
    """Every test starts well after the previous one: all buckets full again."""
    clock.now += 60.0


def new_stream(kinesis: Any, clock: FakeClock, shards: int = 1) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    clock.now += 1.0
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamStatus"
    ] == "ACTIVE"
    return name


def error_of(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    error: dict[str, str] = info.value.response["Error"]
    return error


def test_put_records_partial_failure_then_recovery(kinesis: Any, clock: FakeClock) -> None:
    name = new_stream(kinesis, clock)
    entries = [{"Data": b"x", "PartitionKey": f"k{i}"} for i in range(15)]
    result = kinesis.put_records(StreamName=name, Records=entries)
    assert result["FailedRecordCount"] == 5
    assert all("SequenceNumber" in r for r in result["Records"][:10])
    for entry in result["Records"][10:]:
        assert entry["ErrorCode"] == "ProvisionedThroughputExceededException"
        assert entry["ErrorMessage"] == (
            f"Rate exceeded for shard shardId-000000000000 in stream {name} "
            f"under account {ACCOUNT}."
        )
        assert "SequenceNumber" not in entry
    clock.now += 1.0
    assert kinesis.put_records(StreamName=name, Records=entries[:10])["FailedRecordCount"] == 0


def test_bytes_per_shard_are_limited(kinesis: Any, clock: FakeClock) -> None:
    name = new_stream(kinesis, clock)
    entries = [{"Data": b"d" * 4000, "PartitionKey": f"k{i}"} for i in range(3)]
    result = kinesis.put_records(StreamName=name, Records=entries)
    assert [r.get("ErrorCode") for r in result["Records"]] == [
        None,
        None,
        "ProvisionedThroughputExceededException",
    ]
    clock.now += 1.0
    assert kinesis.put_records(StreamName=name, Records=entries[:2])["FailedRecordCount"] == 0


def test_each_shard_has_its_own_budget(kinesis: Any, clock: FakeClock) -> None:
    name = new_stream(kinesis, clock, shards=2)
    low, high = "0", str(2**127 + 1)
    entries = [
        {"Data": b"x", "PartitionKey": "k", "ExplicitHashKey": key}
        for key in [low] * 12 + [high] * 12
    ]
    result = kinesis.put_records(StreamName=name, Records=entries)
    assert result["FailedRecordCount"] == 4
    by_shard: dict[str, int] = {}
    for entry in result["Records"]:
        if "ShardId" in entry:
            by_shard[entry["ShardId"]] = by_shard.get(entry["ShardId"], 0) + 1
    assert by_shard == {"shardId-000000000000": 10, "shardId-000000000001": 10}


def test_put_record_over_the_limit_fails_whole(kinesis: Any, clock: FakeClock) -> None:
    name = new_stream(kinesis, clock)
    kinesis.put_records(
        StreamName=name, Records=[{"Data": b"x", "PartitionKey": "k"} for _ in range(10)]
    )
    error = error_of(kinesis.put_record, StreamName=name, Data=b"x", PartitionKey="k")
    assert error["Code"] == "ProvisionedThroughputExceededException"
    assert error["Message"] == (
        f"Rate exceeded for shard shardId-000000000000 in stream {name} under account {ACCOUNT}."
    )
    clock.now += 0.1
    assert kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k")["SequenceNumber"]


def test_get_records_call_rate(kinesis: Any, clock: FakeClock) -> None:
    name = new_stream(kinesis, clock)
    kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k")
    iterator = kinesis.get_shard_iterator(
        StreamName=name, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    page = kinesis.get_records(ShardIterator=iterator)
    assert [r["Data"] for r in page["Records"]] == [b"x"]
    # At this scale a shard serves one call per 20 s (5/s * 0.01).
    error = error_of(kinesis.get_records, ShardIterator=page["NextShardIterator"])
    assert error["Code"] == "ProvisionedThroughputExceededException"
    assert error["Message"] == (
        f"Rate exceeded for shard shardId-000000000000 in stream {name} "
        "under account 000000000000."
    )
    clock.now += 20.0
    assert kinesis.get_records(ShardIterator=page["NextShardIterator"])["Records"] == []


def test_control_plane_rate(kinesis: Any, clock: FakeClock) -> None:
    names = [f"c-{uuid.uuid4().hex[:10]}" for _ in range(6)]
    for name in names[:5]:
        kinesis.create_stream(StreamName=name, ShardCount=1)
    error = error_of(kinesis.create_stream, StreamName=names[5], ShardCount=1)
    assert error["Code"] == "LimitExceededException"
    clock.now += 0.2
    kinesis.create_stream(StreamName=names[5], ShardCount=1)
