"""Every implemented action through boto3 against the real server on port 0."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kpl.protocol.hashing import partition_key_hash

N3 = [
    (0, 113427455640312821154458202477256070484),
    (113427455640312821154458202477256070485, 226854911280625642308916404954512140969),
    (226854911280625642308916404954512140970, 340282366920938463463374607431768211455),
]


def error_of(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_create_describe_list_delete(kinesis: Any, stream_name: str) -> None:
    kinesis.create_stream(StreamName=stream_name, ShardCount=3)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream_name, WaiterConfig={"Delay": 0.01})
    desc = kinesis.describe_stream(StreamName=stream_name)["StreamDescription"]
    assert desc["StreamStatus"] == "ACTIVE"
    assert desc["StreamARN"] == f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream_name}"
    assert desc["RetentionPeriodHours"] == 24
    assert isinstance(desc["StreamCreationTimestamp"], dt.datetime)
    ranges = [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in desc["Shards"]
    ]
    assert ranges == N3
    summary = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 3
    assert stream_name in kinesis.list_streams(Limit=10000)["StreamNames"]
    shards = kinesis.list_shards(StreamName=stream_name, MaxResults=2)
    assert len(shards["Shards"]) == 2
    rest = kinesis.list_shards(NextToken=shards["NextToken"])
    assert [s["ShardId"] for s in rest["Shards"]] == ["shardId-000000000002"]
    kinesis.delete_stream(StreamName=stream_name)
    kinesis.get_waiter("stream_not_exists").wait(
        StreamName=stream_name, WaiterConfig={"Delay": 0.01}
    )
    code, message, status = error_of(kinesis.describe_stream, StreamName=stream_name)
    assert (code, status) == ("ResourceNotFoundException", 400)
    assert message == f"Stream {stream_name} under account 000000000000 not found."


def test_list_streams_paginator(kinesis: Any, make_stream: Callable[..., str]) -> None:
    names = {make_stream() for _ in range(3)}
    seen: list[str] = []
    for page in kinesis.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 1}):
        seen += page["StreamNames"]
    assert names <= set(seen)
    assert seen == sorted(seen)


def test_put_record_routing_and_get_records(kinesis: Any, make_stream: Callable[..., str]) -> None:
    name = make_stream(3)
    keys = [f"user-{i}" for i in range(30)]
    placed: dict[str, list[tuple[str, bytes]]] = {}
    for key in keys:
        r = kinesis.put_record(StreamName=name, Data=key.encode(), PartitionKey=key)
        index = int(r["ShardId"][8:])
        assert N3[index][0] <= partition_key_hash(key) <= N3[index][1]
        placed.setdefault(r["ShardId"], []).append((r["SequenceNumber"], key.encode()))
    r = kinesis.put_record(
        StreamName=name, Data=b"e", PartitionKey="any", ExplicitHashKey=str(N3[1][0])
    )
    assert r["ShardId"] == "shardId-000000000001"
    placed["shardId-000000000001"].append((r["SequenceNumber"], b"e"))
    for shard_id, expected in placed.items():
        it = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        got = kinesis.get_records(ShardIterator=it)
        assert [(r["SequenceNumber"], r["Data"]) for r in got["Records"]] == expected
        assert all(
            isinstance(r["ApproximateArrivalTimestamp"], dt.datetime) for r in got["Records"]
        )
        assert got["MillisBehindLatest"] == 0
        assert "NextShardIterator" in got


def test_put_records_every_entry(kinesis: Any, make_stream: Callable[..., str]) -> None:
    name = make_stream(3)
    entries = [{"Data": bytes([i % 256]) * 100, "PartitionKey": f"k{i}"} for i in range(500)]
    entries[7]["ExplicitHashKey"] = "0"
    result = kinesis.put_records(StreamName=name, Records=entries)
    assert result["FailedRecordCount"] == 0
    assert len(result["Records"]) == 500
    assert result["Records"][7]["ShardId"] == "shardId-000000000000"
    for entry, r in zip(entries, result["Records"], strict=True):
        if "ExplicitHashKey" not in entry:
            index = int(r["ShardId"][8:])
            assert N3[index][0] <= partition_key_hash(str(entry["PartitionKey"])) <= N3[index][1]
    by_shard: dict[str, list[int]] = {}
    for r in result["Records"]:
        by_shard.setdefault(r["ShardId"], []).append(int(r["SequenceNumber"]))
    for numbers in by_shard.values():
        assert numbers == sorted(set(numbers))


def test_every_iterator_type(kinesis: Any, make_stream: Callable[..., str]) -> None:
    name = make_stream(1)
    shard = "shardId-000000000000"
    seqs = [
        kinesis.put_record(StreamName=name, Data=bytes([i]), PartitionKey="k")["SequenceNumber"]
        for i in range(3)
    ]

    def read(kind: str, **extra: Any) -> list[bytes]:
        it = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard, ShardIteratorType=kind, **extra
        )["ShardIterator"]
        return [r["Data"] for r in kinesis.get_records(ShardIterator=it, Limit=100)["Records"]]

    assert read("TRIM_HORIZON") == [b"\x00", b"\x01", b"\x02"]
    assert read("AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1]) == [b"\x01", b"\x02"]
    assert read("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1]) == [b"\x02"]
    assert read("AT_TIMESTAMP", Timestamp=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) == [
        b"\x00",
        b"\x01",
        b"\x02",
    ]
    latest = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="LATEST")[
        "ShardIterator"
    ]
    kinesis.put_record(StreamName=name, Data=b"later", PartitionKey="k")
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=latest)["Records"]] == [b"later"]


def test_tags_retention_limits_and_max_record_size(
    kinesis: Any, make_stream: Callable[..., str]
) -> None:
    name = make_stream(1)
    kinesis.add_tags_to_stream(StreamName=name, Tags={"team": "data", "env": "test"})
    tags = kinesis.list_tags_for_stream(StreamName=name)
    assert tags["Tags"] == [{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "data"}]
    assert tags["HasMoreTags"] is False
    kinesis.remove_tags_from_stream(StreamName=name, TagKeys=["env"])
    assert kinesis.list_tags_for_stream(StreamName=name)["Tags"] == [
        {"Key": "team", "Value": "data"}
    ]
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=72)
    kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["RetentionPeriodHours"] == 48
    limits = kinesis.describe_limits()
    assert limits["ShardLimit"] == 500
    assert limits["OpenShardCount"] >= 1
    arn = summary["StreamARN"]
    big = b"x" * (1024 * 1024 + 10)
    code, message, _ = error_of(kinesis.put_record, StreamName=name, Data=big, PartitionKey="k")
    assert code == "ValidationException"
    assert message == (
        "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=1048586 "
        "cap=1048586]' at 'data' failed to satisfy constraint: Member must have length "
        "less than or equal to 1048576"
    )
    kinesis.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=2048)
    r = kinesis.put_record(StreamARN=arn, Data=big, PartitionKey="k")
    it = kinesis.get_shard_iterator(
        StreamARN=arn,
        ShardId=r["ShardId"],
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=r["SequenceNumber"],
    )["ShardIterator"]
    assert kinesis.get_records(ShardIterator=it)["Records"][0]["Data"] == big


def test_record_size_counts_the_partition_key_over_the_wire(
    kinesis: Any, make_stream: Callable[..., str]
) -> None:
    name = make_stream(1)
    mib = 1024 * 1024
    code, message, status = error_of(
        kinesis.put_record, StreamName=name, Data=b"x" * mib, PartitionKey="k"
    )
    assert (code, status) == ("ValidationException", 400)
    assert message == (
        "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=1048576 "
        "cap=1048576]' at 'data' failed to satisfy constraint: Member's length plus the "
        "partition key's UTF-8 length (1048576 + 1 = 1048577 bytes) must be less than or "
        "equal to 1048576"
    )
    code, message, status = error_of(
        kinesis.put_records,
        StreamName=name,
        Records=[{"Data": b"a", "PartitionKey": "k"}, {"Data": b"x" * mib, "PartitionKey": "k"}],
    )
    assert (code, status) == ("ValidationException", 400)
    assert "at 'records.2.member.data'" in message
    put = kinesis.put_record(StreamName=name, Data=b"x" * (mib - 1), PartitionKey="k")
    it = kinesis.get_shard_iterator(
        StreamName=name, ShardId=put["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=it)["Records"]
    assert [(len(r["Data"]), r["SequenceNumber"]) for r in records] == [
        (mib - 1, put["SequenceNumber"])
    ]


def test_on_demand_stream(kinesis: Any, stream_name: str) -> None:
    kinesis.create_stream(StreamName=stream_name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(StreamName=stream_name, WaiterConfig={"Delay": 0.01})
    summary = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
    assert summary["OpenShardCount"] == 4


def test_errors_through_boto3(kinesis: Any, make_stream: Callable[..., str]) -> None:
    name = make_stream(2)
    code, message, status = error_of(kinesis.create_stream, StreamName=name, ShardCount=1)
    assert (code, status) == ("ResourceInUseException", 400)
    assert message == f"Stream {name} under account 000000000000 already exists."
    code, message, _ = error_of(kinesis.create_stream, StreamName="bad name", ShardCount=100000)
    assert code == "ValidationException"
    assert message == (
        "1 validation error detected: Value 'bad name' at 'streamName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    )
    code, message, _ = error_of(
        kinesis.create_stream,
        StreamName="x" * 129,
        ShardCount=1,
        StreamModeDetails={"StreamMode": "PROVISIONED"},
    )
    assert message == (
        "1 validation error detected: Value '" + "x" * 129 + "' at 'streamName' failed to "
        "satisfy constraint: Member must have length less than or equal to 128"
    )
    open_shards = kinesis.describe_limits()["OpenShardCount"]  # the module shares a server
    code, message, _ = error_of(kinesis.create_stream, StreamName="ok", ShardCount=100000)
    assert code == "LimitExceededException"
    assert message == (
        "This request would exceed the shard limit for the account 000000000000 in us-east-1. "
        f"Current shard count for the account: {open_shards}. Limit: 500. Number of additional "
        "shards that would have resulted from this request: 100000. Refer to the AWS Service "
        "Limits page (http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) "
        "for current limits and how to request higher limits."
    )
    code, message, _ = error_of(
        kinesis.put_records,
        StreamName=name,
        Records=[
            {"Data": b"x", "PartitionKey": "k" * 257},
            {"Data": b"x", "PartitionKey": "k", "ExplicitHashKey": "x"},
        ],
    )
    assert code == "ValidationException"
    assert message == (
        "2 validation errors detected: Value '" + "k" * 257 + "' at "
        "'records.1.member.partitionKey' failed to satisfy constraint: Member must have "
        "length less than or equal to 256; Value 'x' at 'records.2.member.explicitHashKey' "
        "failed to satisfy constraint: Member must satisfy regular expression pattern: "
        "0|([1-9]\\d{0,38})"
    )
    r = kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k", ExplicitHashKey="0")
    code, message, _ = error_of(
        kinesis.get_shard_iterator,
        StreamName=name,
        ShardId="shardId-000000000001",
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=r["SequenceNumber"],
    )
    assert code == "InvalidArgumentException"
    assert message == (
        "Invalid StartingSequenceNumber. It encodes shardId-000000000000, while it was used in "
        "a call to a shard with shardId-000000000001"
    )
    code, message, _ = error_of(kinesis.get_records, ShardIterator="not-an-iterator")
    assert (code, message) == ("InvalidArgumentException", "Invalid ShardIterator.")
    code, message, _ = error_of(
        kinesis.put_record, StreamName="missing", Data=b"x", PartitionKey="k"
    )
    assert (code, message) == (
        "ResourceNotFoundException",
        "Stream missing under account 000000000000 not found.",
    )


def test_dry_run_checks_everything_and_changes_nothing(
    kinesis: Any, make_stream: Callable[..., str]
) -> None:
    name = make_stream(1)
    dry = "The request was rejected because the DryRun parameter was specified."
    assert error_of(
        kinesis.put_record, StreamName=name, Data=b"x", PartitionKey="k", DryRun=True
    ) == ("DryRunOperationException", dry, 400)
    assert error_of(
        kinesis.put_records,
        StreamName=name,
        Records=[{"Data": b"x", "PartitionKey": "k"}],
        DryRun=True,
    ) == ("DryRunOperationException", dry, 400)
    # A dry run that would fail answers the real error.
    code, _, _ = error_of(
        kinesis.put_record, StreamName="missing", Data=b"x", PartitionKey="k", DryRun=True
    )
    assert code == "ResourceNotFoundException"
    shard = {"StreamName": name, "ShardId": "shardId-000000000000"}
    assert error_of(
        kinesis.get_shard_iterator, **shard, ShardIteratorType="TRIM_HORIZON", DryRun=True
    )[0] == "DryRunOperationException"
    it = kinesis.get_shard_iterator(**shard, ShardIteratorType="TRIM_HORIZON", DryRun=False)
    assert error_of(
        kinesis.get_records, ShardIterator=it["ShardIterator"], DryRun=True
    )[0] == "DryRunOperationException"
    # Nothing was written by the dry runs.
    assert kinesis.get_records(ShardIterator=it["ShardIterator"])["Records"] == []
    kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k", DryRun=False)
    assert len(kinesis.get_records(ShardIterator=it["ShardIterator"])["Records"]) == 1


def test_record_distribution_strategy(kinesis: Any, stream_name: str) -> None:
    code, message, _ = error_of(
        kinesis.create_stream,
        StreamName=stream_name,
        StreamModeDetails={"StreamMode": "ON_DEMAND"},
        RecordDistributionStrategy="AUTO",
    )
    assert code == "InvalidArgumentException"
    assert message == (
        "RecordDistributionStrategy AUTO is not supported by this server; "
        "use USER_PARTITION_KEY (the default)."
    )
    code, message, _ = error_of(
        kinesis.create_stream, StreamName=stream_name, RecordDistributionStrategy="RANDOM"
    )
    assert message == (
        "1 validation error detected: Value 'RANDOM' at 'recordDistributionStrategy' failed "
        "to satisfy constraint: Member must satisfy enum value set: [AUTO, USER_PARTITION_KEY]"
    )
    kinesis.create_stream(StreamName=stream_name, RecordDistributionStrategy="USER_PARTITION_KEY")
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream_name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 40}
    )
    summary = kinesis.describe_stream_summary(StreamName=stream_name)
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 4
