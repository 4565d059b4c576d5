"""Retention, sans IO: lazy trimming with a fake clock and where each iterator type starts."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from server.core.engine import Engine, EngineConfig
from server.core.errors import KinesisError, ResourceNotFoundException
from server.storage.memory import MemoryStorage

T0 = 1_800_000_000.0
HOUR = 3600.0
SHARD = "shardId-000000000000"


class Harness:
    def __init__(self) -> None:
        self.now = T0
        self.storage = MemoryStorage()
        self.engine = Engine(
            EngineConfig(state_delay_seconds=0.0), self.storage, random.Random(5)
        )
        self("CreateStream", StreamName="s", ShardCount=1)

    def __call__(self, action: str, **body: Any) -> Any:
        return self.engine.handle(action, body, self.now).body

    def put(self, data: bytes, shard_key: str = "1") -> str:
        seq: str = self(
            "PutRecord", StreamName="s", Data=base64.b64encode(data).decode(), PartitionKey="k",
            ExplicitHashKey=shard_key,
        )["SequenceNumber"]
        return seq

    def read(self, shard_id: str = SHARD, **iterator: Any) -> list[bytes]:
        it = self("GetShardIterator", StreamName="s", ShardId=shard_id, **iterator)[
            "ShardIterator"
        ]
        page = self("GetRecords", ShardIterator=it)
        return [r["Data"] for r in page["Records"]]


@pytest.fixture
def hourly() -> tuple[Harness, list[str]]:
    """Records r0..r4 written one hour apart; the clock then stands 24.5 h after r0.

    With the default 24 h retention r0 has expired and r1..r4 are kept.
    """
    h = Harness()
    seqs = []
    for i in range(5):
        seqs.append(h.put(f"r{i}".encode()))
        h.now += HOUR
    h.now = T0 + 24.5 * HOUR
    return h, seqs


KEPT = [b"r1", b"r2", b"r3", b"r4"]


def test_trim_horizon_starts_at_the_oldest_kept_record(hourly: tuple[Harness, list[str]]) -> None:
    h, _ = hourly
    assert h.read(ShardIteratorType="TRIM_HORIZON") == KEPT
    h.now += 2 * HOUR  # r1 and r2 expire too
    assert h.read(ShardIteratorType="TRIM_HORIZON") == [b"r3", b"r4"]


def test_nothing_is_trimmed_before_retention_runs_out() -> None:
    h = Harness()
    h.put(b"old")
    h.now = T0 + 24 * HOUR - 1.0
    assert h.read(ShardIteratorType="TRIM_HORIZON") == [b"old"]
    h.now = T0 + 24 * HOUR + 0.001
    assert h.read(ShardIteratorType="TRIM_HORIZON") == []


def test_trimming_is_lazy_and_drops_records_from_storage(hourly: tuple[Harness, list[str]]) -> None:
    h, seqs = hourly
    assert h.storage.oldest_sequence_number("s", SHARD) == int(seqs[0])  # not yet trimmed
    h.read(ShardIteratorType="TRIM_HORIZON")
    assert h.storage.oldest_sequence_number("s", SHARD) == int(seqs[1])


def test_at_timestamp_before_the_trim_horizon_starts_there(
    hourly: tuple[Harness, list[str]],
) -> None:
    h, _ = hourly
    assert h.read(ShardIteratorType="AT_TIMESTAMP", Timestamp=T0 - HOUR) == KEPT
    later = h.read(ShardIteratorType="AT_TIMESTAMP", Timestamp=T0 + 2 * HOUR)
    assert later == [b"r2", b"r3", b"r4"]


@pytest.mark.parametrize("kind", ["AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"])
def test_a_trimmed_sequence_number_reads_from_the_trim_horizon(
    hourly: tuple[Harness, list[str]], kind: str
) -> None:
    # The service does not refuse an expired checkpoint: reading resumes at the oldest
    # kept record (the expired ones are lost, which is what retention means).
    h, seqs = hourly
    assert h.read(ShardIteratorType=kind, StartingSequenceNumber=seqs[0]) == KEPT


def test_a_kept_sequence_number_still_reads_exactly(hourly: tuple[Harness, list[str]]) -> None:
    h, seqs = hourly
    assert h.read(ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[2]) == [
        b"r2",
        b"r3",
        b"r4",
    ]
    assert h.read(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[2]) == [
        b"r3",
        b"r4",
    ]


def test_an_iterator_taken_before_trimming_skips_what_expired() -> None:
    h = Harness()
    h.put(b"a")
    h.now += 2 * HOUR
    h.put(b"b")
    h.now = T0 + 24 * HOUR - 60.0
    it = h("GetShardIterator", StreamName="s", ShardId=SHARD, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    h.now = T0 + 24 * HOUR + 60.0  # "a" expires while the iterator is still valid
    assert [r["Data"] for r in h("GetRecords", ShardIterator=it)["Records"]] == [b"b"]


def test_longer_retention_keeps_records_and_does_not_revive_expired_ones() -> None:
    h = Harness()
    h.put(b"first")
    h.now += 10 * HOUR
    h.put(b"second")
    h.now = T0 + 25 * HOUR  # "first" expired (not yet trimmed: nobody read)
    h("IncreaseStreamRetentionPeriod", StreamName="s", RetentionPeriodHours=48)
    assert h.read(ShardIteratorType="TRIM_HORIZON") == [b"second"]
    h.now = T0 + 40 * HOUR  # "second" is 30 h old: kept under 48 h
    assert h.read(ShardIteratorType="TRIM_HORIZON") == [b"second"]


def test_shorter_retention_trims_at_once() -> None:
    h = Harness()
    h("IncreaseStreamRetentionPeriod", StreamName="s", RetentionPeriodHours=72)
    h.put(b"old")
    h.now = T0 + 30 * HOUR
    h.put(b"new")
    assert h.read(ShardIteratorType="TRIM_HORIZON") == [b"old", b"new"]
    h("DecreaseStreamRetentionPeriod", StreamName="s", RetentionPeriodHours=24)
    assert h.read(ShardIteratorType="TRIM_HORIZON") == [b"new"]


def test_a_closed_shard_disappears_once_retention_has_passed_its_closing() -> None:
    h = Harness()
    h.put(b"parent")
    h("SplitShard", StreamName="s", ShardToSplit=SHARD, NewStartingHashKey=str(2**127))
    h.now += 1.0
    h.put(b"child")
    assert h.read(ShardIteratorType="TRIM_HORIZON") == [b"parent"]
    h.now = T0 + 24 * HOUR + 10.0
    shards = h("ListShards", StreamName="s")["Shards"]
    assert [s["ShardId"] for s in shards] == ["shardId-000000000001", "shardId-000000000002"]
    assert shards[0]["ParentShardId"] == SHARD  # lineage is kept on the children
    described = h("DescribeStream", StreamName="s")["StreamDescription"]["Shards"]
    assert [s["ShardId"] for s in described] == ["shardId-000000000001", "shardId-000000000002"]
    with pytest.raises(KinesisError) as info:
        h("GetShardIterator", StreamName="s", ShardId=SHARD, ShardIteratorType="TRIM_HORIZON")
    assert isinstance(info.value, ResourceNotFoundException)
    assert h.read("shardId-000000000001", ShardIteratorType="TRIM_HORIZON") == []
