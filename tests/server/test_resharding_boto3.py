"""Resharding against the real server with boto3: lineage, tiling, reading across a reshard."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kpl.protocol.hashing import MAX_HASH_KEY
from server.core.resharding import open_ranges_tile, uniform_ranges
from tests.support import FakeClock, serve_with_client

STATE_DELAY = 5.0
ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def kinesis(clock: FakeClock) -> Iterator[Any]:
    # Limits on (the default): resharding and reads must work under them too.
    yield from serve_with_client(state_delay_seconds=STATE_DELAY, limits="aws", clock=clock)


@pytest.fixture(autouse=True)
def fresh_second(clock: FakeClock) -> None:
    clock.now += 60.0


def active_stream(kinesis: Any, clock: FakeClock, shards: int) -> str:
    name = f"r-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    settle(kinesis, clock, name)
    return name


def settle(kinesis: Any, clock: FakeClock, name: str) -> None:
    clock.now += STATE_DELAY
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"


def shards_of(kinesis: Any, name: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = kinesis.list_shards(StreamName=name)["Shards"]
    return shards


def open_ranges(shards: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
        if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    ]


def read_shard(kinesis: Any, name: str, shard_id: str) -> tuple[list[bytes], dict[str, Any]]:
    iterator = kinesis.get_shard_iterator(
        StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    out: list[bytes] = []
    while True:
        page = kinesis.get_records(ShardIterator=iterator)
        out += [r["Data"] for r in page["Records"]]
        if page.get("NextShardIterator") is None or not page["Records"]:
            return out, page
        iterator = page["NextShardIterator"]


def test_split_lineage_updating_and_flowing_writes(kinesis: Any, clock: FakeClock) -> None:
    name = active_stream(kinesis, clock, 1)
    parent_seq = kinesis.put_record(StreamName=name, Data=b"p", PartitionKey="a")[
        "SequenceNumber"
    ]
    kinesis.split_shard(
        StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127)
    )
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "UPDATING"
    # Writes and reads keep flowing while UPDATING; a second reshard is refused.
    put = kinesis.put_record(StreamName=name, Data=b"c", PartitionKey="a", ExplicitHashKey="1")
    assert put["ShardId"] == "shardId-000000000001"
    with pytest.raises(ClientError) as info:
        kinesis.merge_shards(
            StreamName=name,
            ShardToMerge="shardId-000000000001",
            AdjacentShardToMerge="shardId-000000000002",
        )
    assert info.value.response["Error"]["Code"] == "ResourceInUseException"
    settle(kinesis, clock, name)
    shards = shards_of(kinesis, name)
    assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(3)]
    assert shards[0]["SequenceNumberRange"]["EndingSequenceNumber"] == parent_seq
    parent = "shardId-000000000000"
    assert [s.get("ParentShardId") for s in shards] == [None, parent, parent]
    assert sorted(open_ranges(shards)) == [(0, 2**127 - 1), (2**127, MAX_HASH_KEY)]


def test_merge_lineage(kinesis: Any, clock: FakeClock) -> None:
    name = active_stream(kinesis, clock, 2)
    kinesis.merge_shards(
        StreamName=name,
        ShardToMerge="shardId-000000000000",
        AdjacentShardToMerge="shardId-000000000001",
    )
    settle(kinesis, clock, name)
    child = shards_of(kinesis, name)[-1]
    assert child["ShardId"] == "shardId-000000000002"
    assert child["ParentShardId"] == "shardId-000000000000"
    assert child["AdjacentParentShardId"] == "shardId-000000000001"
    assert open_ranges([child]) == [(0, MAX_HASH_KEY)]


def test_validation_errors_use_the_service_messages(kinesis: Any, clock: FakeClock) -> None:
    name = active_stream(kinesis, clock, 3)
    cases = [
        (
            kinesis.split_shard,
            {"ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "1"},
            "InvalidArgumentException",
            "is not both greater than one plus the shard's StartingHashKey 0",
        ),
        (
            kinesis.split_shard,
            {"ShardToSplit": "shardId-000000000042", "NewStartingHashKey": "100"},
            "ResourceNotFoundException",
            f"Could not find shard shardId-000000000042 in stream {name} under account {ACCOUNT}.",
        ),
        (
            kinesis.merge_shards,
            {
                "ShardToMerge": "shardId-000000000000",
                "AdjacentShardToMerge": "shardId-000000000002",
            },
            "InvalidArgumentException",
            "are not an adjacent pair of shards eligible for merging",
        ),
        (
            kinesis.update_shard_count,
            {"TargetShardCount": 7, "ScalingType": "UNIFORM_SCALING"},
            "LimitExceededException",
            "double",
        ),
    ]
    for call, args, code, text in cases:
        clock.now += 1.0
        with pytest.raises(ClientError) as info:
            call(StreamName=name, **args)
        assert info.value.response["Error"]["Code"] == code
        assert text in info.value.response["Error"]["Message"]
    assert len(shards_of(kinesis, name)) == 3


@pytest.mark.parametrize(("initial", "target"), [(2, 4), (4, 2), (3, 5)])
def test_update_shard_count_tiles_uniformly(
    kinesis: Any, clock: FakeClock, initial: int, target: int
) -> None:
    name = active_stream(kinesis, clock, initial)
    result = kinesis.update_shard_count(
        StreamName=name, TargetShardCount=target, ScalingType="UNIFORM_SCALING"
    )
    assert (result["CurrentShardCount"], result["TargetShardCount"]) == (initial, target)
    settle(kinesis, clock, name)
    shards = shards_of(kinesis, name)
    assert open_ranges_tile(open_ranges(shards))
    assert sorted(open_ranges(shards)) == uniform_ranges(target)
    ids = {s["ShardId"] for s in shards}
    for shard in shards[initial:]:
        assert shard["ParentShardId"] in ids
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == target


def test_reading_across_a_reshard_loses_no_record(kinesis: Any, clock: FakeClock) -> None:
    name = active_stream(kinesis, clock, 2)
    written: list[bytes] = []

    def put_batch(tag: str) -> None:
        entries = [
            {"Data": f"{tag}-{i}".encode(), "PartitionKey": f"key-{i}"} for i in range(40)
        ]
        result = kinesis.put_records(StreamName=name, Records=entries)
        assert result["FailedRecordCount"] == 0
        written.extend(e["Data"] for e in entries)

    put_batch("before")
    kinesis.update_shard_count(StreamName=name, TargetShardCount=3, ScalingType="UNIFORM_SCALING")
    put_batch("during")
    settle(kinesis, clock, name)
    put_batch("after")
    # Read like a consumer: start from the shards without parents, follow ChildShards
    # once every parent of a child is finished.
    shards = {s["ShardId"]: s for s in shards_of(kinesis, name)}
    finished: set[str] = set()
    read: list[bytes] = []
    queue = [s for s, m in shards.items() if "ParentShardId" not in m]
    while queue:
        shard_id = queue.pop(0)
        clock.now += 1.0  # stay inside 5 GetRecords/s per shard
        records, last = read_shard(kinesis, name, shard_id)
        read += records
        finished.add(shard_id)
        if "NextShardIterator" in last and last["NextShardIterator"] is not None:
            continue  # an open shard
        for child in last["ChildShards"]:
            if set(child["ParentShards"]) <= finished and child["ShardId"] not in queue:
                queue.append(child["ShardId"])
    assert sorted(read) == sorted(written)
    assert len(read) == len(written)
