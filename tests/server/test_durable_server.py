"""A StreamServer with ``data_dir`` restarted on the same directory: everything comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import FakeClock, ServerThread, make_client

STATE_DELAY = 1.0


def settle(kinesis: Any, clock: FakeClock, name: str) -> None:
    clock.now += STATE_DELAY
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"


def read_shard(kinesis: Any, name: str, shard_id: str, **where: Any) -> list[dict[str, Any]]:
    kind = "AT_SEQUENCE_NUMBER" if where else "TRIM_HORIZON"
    it = kinesis.get_shard_iterator(
        StreamName=name, ShardId=shard_id, ShardIteratorType=kind, **where
    )["ShardIterator"]
    out: list[dict[str, Any]] = []
    while it:
        got = kinesis.get_records(ShardIterator=it, Limit=7)
        out.extend(got["Records"])
        if not got["Records"]:
            break
        it = got.get("NextShardIterator")
    return out


def everything(kinesis: Any, name: str) -> dict[str, list[tuple[str, str, bytes]]]:
    return {
        shard["ShardId"]: [
            (r["SequenceNumber"], r["PartitionKey"], r["Data"])
            for r in read_shard(kinesis, name, shard["ShardId"])
        ]
        for shard in kinesis.list_shards(StreamName=name)["Shards"]
    }


def server(data_dir: Path, clock: FakeClock) -> ServerThread:
    return ServerThread(
        data_dir=data_dir, segment_bytes=2048, state_delay_seconds=STATE_DELAY,
        limits="off", clock=clock,
    ).start()


def test_streams_lineage_and_records_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    data_dir = tmp_path / "data"
    thread = server(data_dir, clock)
    kinesis = make_client(thread.url)
    try:
        kinesis.create_stream(StreamName="keep", ShardCount=2)
        settle(kinesis, clock, "keep")
        kinesis.add_tags_to_stream(StreamName="keep", Tags={"team": "data"})
        kinesis.increase_stream_retention_period(StreamName="keep", RetentionPeriodHours=48)
        for i in range(60):
            kinesis.put_record(StreamName="keep", PartitionKey=f"k{i}", Data=b"a%d" % i)
        shard0 = kinesis.list_shards(StreamName="keep")["Shards"][0]
        middle = (int(shard0["HashKeyRange"]["StartingHashKey"]) + int(
            shard0["HashKeyRange"]["EndingHashKey"]
        )) // 2
        kinesis.split_shard(
            StreamName="keep", ShardToSplit=shard0["ShardId"], NewStartingHashKey=str(middle)
        )
        settle(kinesis, clock, "keep")
        kinesis.put_records(
            StreamName="keep",
            Records=[{"PartitionKey": f"after{i}", "Data": b"b%d" % i} for i in range(80)],
        )
        kinesis.create_stream(StreamName="gone", ShardCount=1)
        settle(kinesis, clock, "gone")
        kinesis.put_record(StreamName="gone", PartitionKey="x", Data=b"x")
        kinesis.delete_stream(StreamName="gone")
        clock.now += STATE_DELAY
        before_shards = kinesis.list_shards(StreamName="keep")["Shards"]
        before_summary = kinesis.describe_stream_summary(StreamName="keep")[
            "StreamDescriptionSummary"
        ]
        before = everything(kinesis, "keep")
        assert kinesis.list_streams()["StreamNames"] == ["keep"]
    finally:
        kinesis.close()
        thread.stop()
    assert sum(map(len, before.values())) == 140
    assert list((data_dir / "streams").iterdir()) == [data_dir / "streams" / "s-keep"]

    thread = server(data_dir, clock)
    kinesis = make_client(thread.url)
    try:
        assert kinesis.list_streams()["StreamNames"] == ["keep"]
        assert kinesis.list_shards(StreamName="keep")["Shards"] == before_shards
        summary = kinesis.describe_stream_summary(StreamName="keep")["StreamDescriptionSummary"]
        assert summary == before_summary
        assert summary["RetentionPeriodHours"] == 48
        assert kinesis.list_tags_for_stream(StreamName="keep")["Tags"] == [
            {"Key": "team", "Value": "data"}
        ]
        assert everything(kinesis, "keep") == before
        # AT_SEQUENCE_NUMBER from a number handed out before the restart.
        sid, records = next((k, v) for k, v in before.items() if len(v) > 10)
        assert [
            (r["SequenceNumber"], r["PartitionKey"], r["Data"])
            for r in read_shard(kinesis, "keep", sid, StartingSequenceNumber=records[5][0])
        ] == records[5:]
        # New numbers continue above the old ones on every open shard.
        for shard in kinesis.list_shards(StreamName="keep")["Shards"]:
            if "EndingSequenceNumber" in shard["SequenceNumberRange"]:
                continue
            got = kinesis.put_record(
                StreamName="keep", PartitionKey="new", Data=b"n",
                ExplicitHashKey=shard["HashKeyRange"]["StartingHashKey"],
            )
            assert got["ShardId"] == shard["ShardId"]
            old = before[shard["ShardId"]]
            assert old  # every open shard got records before the restart
            assert int(got["SequenceNumber"]) > int(old[-1][0])
        # A deleted stream's name is free again.
        kinesis.create_stream(StreamName="gone", ShardCount=1)
        settle(kinesis, clock, "gone")
        assert everything(kinesis, "gone") == {"shardId-000000000000": []}
    finally:
        kinesis.close()
        thread.stop()


def test_iterators_handed_out_before_a_restart_read_on_after_it(tmp_path: Path) -> None:
    clock = FakeClock()
    data_dir = tmp_path / "data"
    thread = server(data_dir, clock)
    kinesis = make_client(thread.url)
    try:
        kinesis.create_stream(StreamName="s", ShardCount=1)
        settle(kinesis, clock, "s")
        for i in range(3):
            kinesis.put_record(StreamName="s", PartitionKey="k", Data=b"r%d" % i)
        it = kinesis.get_shard_iterator(
            StreamName="s", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        first = kinesis.get_records(ShardIterator=it, Limit=1)
        latest = kinesis.get_shard_iterator(
            StreamName="s", ShardId="shardId-000000000000", ShardIteratorType="LATEST"
        )["ShardIterator"]
    finally:
        kinesis.close()
        thread.stop()
    assert [r["Data"] for r in first["Records"]] == [b"r0"]

    clock.now += 60.0
    thread = server(data_dir, clock)
    kinesis = make_client(thread.url)
    try:
        got = kinesis.get_records(ShardIterator=first["NextShardIterator"])
        assert [r["Data"] for r in got["Records"]] == [b"r1", b"r2"]
        # The same token again reads the same records: it carries its own position.
        again = kinesis.get_records(ShardIterator=first["NextShardIterator"])
        assert [r["Data"] for r in again["Records"]] == [b"r1", b"r2"]
        kinesis.put_record(StreamName="s", PartitionKey="k", Data=b"after")
        assert [r["Data"] for r in kinesis.get_records(ShardIterator=latest)["Records"]] == [
            b"after"
        ]
        # Expiry runs on the wall clock from the token's issue, restart or not: 60 s
        # passed before it, 241 s more make the five minutes.
        clock.now += 241.0
        with pytest.raises(ClientError) as info:
            kinesis.get_records(ShardIterator=first["NextShardIterator"])
        assert info.value.response["Error"]["Code"] == "ExpiredIteratorException"
    finally:
        kinesis.close()
        thread.stop()


def test_memory_servers_refuse_each_others_iterators() -> None:
    """Without a data dir the secret is fresh per server: a token dies with its server."""
    clock = FakeClock()
    tokens = []
    for _ in range(2):
        with ServerThread(state_delay_seconds=0.0, limits="off", clock=clock) as thread:
            kinesis = make_client(thread.url)
            try:
                kinesis.create_stream(StreamName="s", ShardCount=1)
                if tokens:
                    with pytest.raises(ClientError) as info:
                        kinesis.get_records(ShardIterator=tokens[0])
                    assert info.value.response["Error"] == {
                        "Code": "InvalidArgumentException",
                        "Message": "Invalid ShardIterator.",
                    }
                tokens.append(
                    kinesis.get_shard_iterator(
                        StreamName="s",
                        ShardId="shardId-000000000000",
                        ShardIteratorType="TRIM_HORIZON",
                    )["ShardIterator"]
                )
            finally:
                kinesis.close()
    assert tokens[0] != tokens[1]
