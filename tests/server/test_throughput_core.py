"""Per-shard throughput and control-plane rates, sans IO: plain functions, a fake clock."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from server.core.engine import Engine, EngineConfig
from server.core.errors import (
    KinesisError,
    LimitExceededException,
    ProvisionedThroughputExceededException,
)
from server.core.throughput import CONTROL_RATES, STREAM, Limits, Throughput
from server.storage.memory import MemoryStorage

T0 = 1_800_000_000.0
MIB = 1024 * 1024


# -- limits ----------------------------------------------------------------------------


def test_limits_scale_multiplies_every_per_shard_rate() -> None:
    limits = Limits.aws(0.01)
    assert limits.write_records_per_second == pytest.approx(10)
    assert limits.write_bytes_per_second == pytest.approx(MIB / 100)
    assert limits.read_calls_per_second == pytest.approx(0.05)
    assert limits.read_bytes_per_second == pytest.approx(2 * MIB / 100)
    with pytest.raises(ValueError, match="scale"):
        Limits.aws(0)


# -- writes ----------------------------------------------------------------------------


def test_write_records_throttle_then_recover_one_second_later() -> None:
    gate = Throughput()
    assert sum(gate.admit_write("s", "shard", 1, 10, T0) for _ in range(1500)) == 1000
    # Half a second gives back half the rate, a further second the whole burst.
    assert sum(gate.admit_write("s", "shard", 1, 10, T0 + 0.5) for _ in range(1500)) == 500
    assert sum(gate.admit_write("s", "shard", 1, 10, T0 + 1.5) for _ in range(1500)) == 1000


def test_write_bytes_throttle_and_all_or_nothing() -> None:
    gate = Throughput()
    assert gate.admit_write("s", "a", 1, MIB - 100, T0)
    # Records have room but bytes do not: refused, and no record token is taken either.
    assert not gate.admit_write("s", "a", 1, 200, T0)
    shard = gate._shards[("s", "a")]
    assert shard.write_records.tokens == 999
    assert gate.admit_write("s", "a", 1, 200, T0 + 0.001)


def test_shards_and_streams_have_separate_budgets() -> None:
    gate = Throughput()
    assert gate.admit_write("s", "a", 1000, 10, T0)
    assert not gate.admit_write("s", "a", 1, 10, T0)
    assert gate.admit_write("s", "b", 1, 10, T0)
    assert gate.admit_write("t", "a", 1, 10, T0)


def test_a_producer_pacing_at_the_limit_is_never_throttled() -> None:
    # 500-record batches every 0.5 s, jittered start: exactly 1,000 records/s.
    gate = Throughput()
    rng = random.Random(3)
    now = T0 + rng.random()
    refused = 0
    for _ in range(40):
        refused += sum(not gate.admit_write("s", "a", 1, 1000, now) for _ in range(500))
        now += 0.5
    assert refused == 0


def test_a_burst_of_three_times_the_limit_is_mostly_throttled() -> None:
    gate = Throughput()
    now = T0
    admitted = 0
    for _ in range(10):  # 3,000 records/s for a second, in 0.1 s slices
        admitted += sum(gate.admit_write("s", "a", 1, 100, now) for _ in range(300))
        now += 0.1
    # The full bucket (1,000), plus the 100 that refill before each of the nine later
    # slices: 300, 300, 300, 300, 200, then 100 a slice.
    assert admitted == 1000 + 9 * 100


def test_oversized_record_under_a_tiny_scale_is_admitted_from_a_full_bucket() -> None:
    gate = Throughput(Limits.aws(0.001))  # ~1,048 bytes/s, 1 record/s
    assert gate.admit_write("s", "a", 1, 5000, T0)
    assert not gate.admit_write("s", "a", 1, 10, T0 + 1.0)  # still paying the debt
    assert gate.admit_write("s", "a", 1, 10, T0 + 5.0)


# -- reads -----------------------------------------------------------------------------


def test_five_get_records_per_second_then_recovery() -> None:
    gate = Throughput()
    assert [gate.admit_read("s", "a", T0) for _ in range(6)] == [True] * 5 + [False]
    assert gate.admit_read("s", "a", T0 + 0.2)
    assert not gate.admit_read("s", "a", T0 + 0.2)


def test_a_10_mib_read_blocks_reads_until_the_debt_is_paid() -> None:
    gate = Throughput()
    assert gate.admit_read("s", "a", T0)
    gate.record_read("s", "a", 10 * MIB, T0)
    assert not gate.admit_read("s", "a", T0 + 1.0)
    assert not gate.admit_read("s", "a", T0 + 3.9)
    assert gate.admit_read("s", "a", T0 + 4.0)


# -- control plane ---------------------------------------------------------------------


def test_control_rates_are_the_documented_ones() -> None:
    rates = {action: (rate.per_second, rate.scope) for action, rate in CONTROL_RATES.items()}
    assert rates["CreateStream"] == (5, "account")
    assert rates["DeleteStream"] == (5, "account")
    assert rates["DescribeStream"] == (10, "account")
    assert rates["ListShards"] == (1000, STREAM)
    assert rates["SplitShard"] == (5, "account")
    assert rates["MergeShards"] == (5, "account")
    assert rates["UpdateShardCount"] == (10, "account")


def test_control_plane_rate_per_account_and_per_stream() -> None:
    gate = Throughput()
    assert [gate.admit_control("CreateStream", f"s{i}", T0) for i in range(6)] == [True] * 5 + [
        False
    ]
    assert gate.admit_control("CreateStream", "x", T0 + 0.2)
    # ListShards is counted per stream: another stream has its own 1,000.
    assert sum(gate.admit_control("ListShards", "a", T0) for _ in range(1001)) == 1000
    assert gate.admit_control("ListShards", "b", T0)
    # Data-plane actions and unlisted ones are not limited here.
    assert all(gate.admit_control("IncreaseStreamRetentionPeriod", "a", T0) for _ in range(50))


def test_forget_stream_drops_its_buckets() -> None:
    gate = Throughput()
    assert gate.admit_write("s", "a", 1000, 1, T0)
    assert sum(gate.admit_control("ListShards", "s", T0) for _ in range(1000)) == 1000
    gate.forget_stream("s")
    assert gate.admit_write("s", "a", 1000, 1, T0)
    assert gate.admit_control("ListShards", "s", T0)


# -- through the engine ----------------------------------------------------------------


class Harness:
    def __init__(self, scale: float = 1.0) -> None:
        self.now = T0
        self.engine = Engine(
            EngineConfig(state_delay_seconds=0.0),
            MemoryStorage(),
            random.Random(7),
            throughput=Throughput(Limits.aws(scale)),
        )

    def __call__(self, action: str, **body: Any) -> Any:
        return self.engine.handle(action, body, self.now).body

    def error(self, action: str, **body: Any) -> KinesisError:
        with pytest.raises(KinesisError) as info:
            self.engine.handle(action, body, self.now)
        return info.value


def test_put_records_fails_entries_over_the_shard_limit_individually() -> None:
    h = Harness(scale=0.01)  # 10 records/s per shard
    h("CreateStream", StreamName="s", ShardCount=1)
    h.now += 1
    entries = [{"Data": "eA==", "PartitionKey": f"k{i}"} for i in range(15)]
    result = h("PutRecords", StreamName="s", Records=entries)
    assert result["FailedRecordCount"] == 5
    ok = [r for r in result["Records"] if "SequenceNumber" in r]
    failed = [r for r in result["Records"] if "ErrorCode" in r]
    assert len(ok) == 10
    assert result["Records"][:10] == ok
    assert {r["ErrorCode"] for r in failed} == {"ProvisionedThroughputExceededException"}
    assert failed[0]["ErrorMessage"] == (
        "Rate exceeded for shard shardId-000000000000 in stream s under account 000000000000."
    )
    # A second later the shard takes records again.
    h.now += 1.0
    assert h("PutRecords", StreamName="s", Records=entries[:10])["FailedRecordCount"] == 0


def test_write_bytes_count_the_partition_key_per_entry() -> None:
    h = Harness(scale=0.01)  # 10 records/s and 10,485.76 bytes/s per shard
    h("CreateStream", StreamName="s", ShardCount=1)
    h.now += 1
    data = base64.b64encode(b"d" * 1500).decode()
    key = "k" * 256  # 1,756 bytes an entry with its key; six would fit without it
    entries = [{"Data": data, "PartitionKey": key} for _ in range(7)]
    result = h("PutRecords", StreamName="s", Records=entries)
    assert result["FailedRecordCount"] == 2
    assert ["ErrorCode" in r for r in result["Records"]] == [False] * 5 + [True] * 2
    # PutRecord charges the key too: 1,705.76 bytes are left, less than one entry.
    error = h.error("PutRecord", StreamName="s", Data=data, PartitionKey=key)
    assert isinstance(error, ProvisionedThroughputExceededException)
    assert h("PutRecord", StreamName="s", Data=data, PartitionKey="k")["SequenceNumber"]


def test_put_record_over_the_limit_fails_whole() -> None:
    h = Harness(scale=0.002)  # 2 records/s
    h("CreateStream", StreamName="s", ShardCount=1)
    h.now += 1
    for _ in range(2):
        h("PutRecord", StreamName="s", Data="eA==", PartitionKey="k")
    error = h.error("PutRecord", StreamName="s", Data="eA==", PartitionKey="k")
    assert isinstance(error, ProvisionedThroughputExceededException)
    assert error.message == (
        "Rate exceeded for shard shardId-000000000000 in stream s under account 000000000000."
    )
    h.now += 0.5
    assert h("PutRecord", StreamName="s", Data="eA==", PartitionKey="k")["SequenceNumber"]


def test_get_records_over_the_call_rate_is_throttled() -> None:
    h = Harness()
    h("CreateStream", StreamName="s", ShardCount=1)
    h.now += 1
    it = h(
        "GetShardIterator", StreamName="s", ShardId="shardId-000000000000",
        ShardIteratorType="TRIM_HORIZON",
    )["ShardIterator"]
    for _ in range(5):
        it = h("GetRecords", ShardIterator=it)["NextShardIterator"]
    error = h.error("GetRecords", ShardIterator=it)
    assert isinstance(error, ProvisionedThroughputExceededException)
    h.now += 0.2
    assert "NextShardIterator" in h("GetRecords", ShardIterator=it)


def test_control_plane_limit_through_the_engine() -> None:
    h = Harness()
    for i in range(5):
        h("CreateStream", StreamName=f"s{i}", ShardCount=1)
    error = h.error("CreateStream", StreamName="s5", ShardCount=1)
    assert isinstance(error, LimitExceededException)
    assert error.message == "Rate exceeded for stream s5 under account 000000000000."
    h.now += 0.2
    h("CreateStream", StreamName="s5", ShardCount=1)
    h.now += 1.0
    h("DescribeLimits")
    error = h.error("DescribeLimits")
    assert isinstance(error, LimitExceededException)
    assert error.message == "Rate exceeded for account 000000000000."
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s1"
    for _ in range(10):
        h("DescribeStream", StreamARN=arn)
    error = h.error("DescribeStream", StreamARN=arn)
    assert error.message == "Rate exceeded for stream s1 under account 000000000000."


def test_get_shard_iterator_is_limited_to_five_per_second_per_shard() -> None:
    h = Harness()
    h("CreateStream", StreamName="s", ShardCount=2)
    h.now += 1

    def iterator(shard: str) -> Any:
        return h(
            "GetShardIterator", StreamName="s", ShardId=shard, ShardIteratorType="LATEST"
        )["ShardIterator"]

    for _ in range(5):
        iterator("shardId-000000000000")
    error = h.error(
        "GetShardIterator", StreamName="s", ShardId="shardId-000000000000",
        ShardIteratorType="LATEST",
    )
    assert isinstance(error, ProvisionedThroughputExceededException)
    assert error.message == (
        "Rate exceeded for shard shardId-000000000000 in stream s under account 000000000000."
    )
    assert iterator("shardId-000000000001")  # the other shard has its own budget
    h.now += 0.2
    assert iterator("shardId-000000000000")  # one call's worth came back
    # A paced caller (5 per second) is never refused.
    for _ in range(50):
        h.now += 0.2
        iterator("shardId-000000000000")


def test_forget_stream_drops_its_get_shard_iterator_buckets() -> None:
    gate = Throughput()
    for _ in range(5):
        assert gate.admit_control("GetShardIterator", "s/shardId-000000000000", T0)
    assert not gate.admit_control("GetShardIterator", "s/shardId-000000000000", T0)
    gate.forget_stream("s")
    assert gate.admit_control("GetShardIterator", "s/shardId-000000000000", T0)
