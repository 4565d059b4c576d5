"""Resharding, sans IO: plans, the engine's split/merge/scale, lineage, tiling, reading across."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpl.protocol.hashing import MAX_HASH_KEY
from server.core.engine import Engine, EngineConfig
from server.core.errors import (
    InvalidArgumentException,
    KinesisError,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from server.core.resharding import (
    Merge,
    Split,
    open_ranges_tile,
    plan_uniform_scaling,
    uniform_ranges,
)
from server.core.throughput import Throughput
from server.storage.memory import MemoryStorage

T0 = 1_800_000_000.0
HALF = 2**127
ACCOUNT = "000000000000"


class Harness:
    def __init__(
        self, state_delay: float = 0.0, throughput: Throughput | None = None, **config: Any
    ) -> None:
        self.now = T0
        self.engine = Engine(
            EngineConfig(state_delay_seconds=state_delay, **config),
            MemoryStorage(),
            random.Random(11),
            throughput=throughput,
        )

    def __call__(self, action: str, **body: Any) -> Any:
        return self.engine.handle(action, body, self.now).body

    def error(self, action: str, **body: Any) -> KinesisError:
        with pytest.raises(KinesisError) as info:
            self.engine.handle(action, body, self.now)
        return info.value

    def stream(self, name: str = "s", shards: int = 1) -> str:
        self("CreateStream", StreamName=name, ShardCount=shards)
        self.now += 1.0
        return name

    def shards(self, name: str = "s") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self("ListShards", StreamName=name)["Shards"]
        return result

    def open_shards(self, name: str = "s") -> list[dict[str, Any]]:
        return [
            s for s in self.shards(name) if "EndingSequenceNumber" not in s["SequenceNumberRange"]
        ]

    def put(self, name: str, hash_key: int, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self(
            "PutRecord", StreamName=name, Data=_b64(data), PartitionKey="k",
            ExplicitHashKey=str(hash_key),
        )
        return result

    def read(self, name: str, shard_id: str) -> tuple[list[bytes], dict[str, Any]]:
        """Every record of a shard from TRIM_HORIZON, and the last page."""
        it = self(
            "GetShardIterator", StreamName=name, ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        out: list[bytes] = []
        while True:
            page = self("GetRecords", ShardIterator=it)
            out += [r["Data"] for r in page["Records"]]
            if "NextShardIterator" not in page or not page["Records"]:
                return out, page
            it = page["NextShardIterator"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ranges(shards: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    ]


# -- plans -----------------------------------------------------------------------------


def test_doubling_is_one_split_per_shard_at_its_midpoint() -> None:
    assert plan_uniform_scaling(uniform_ranges(2), 4) == [Split(0, 2**126), Split(1, 3 * 2**126)]


def test_halving_is_pairwise_merges() -> None:
    assert plan_uniform_scaling(uniform_ranges(4), 2) == [Merge(0, 1), Merge(2, 3)]


@pytest.mark.parametrize(
    ("initial", "target", "new_shards"),
    # 2->4, 4->5 and 4->2 create 4, 11 and 2 shards, as other emulators report from the service.
    [(2, 4, 4), (4, 5, 11), (4, 2, 2), (3, 3, 0), (1, 2, 2), (5, 3, 8)],
)
def test_plans_reach_the_uniform_set(initial: int, target: int, new_shards: int) -> None:
    plan = plan_uniform_scaling(uniform_ranges(initial), target)
    assert sum(2 if isinstance(step, Split) else 1 for step in plan) == new_shards


def test_plan_refuses_a_set_that_does_not_tile() -> None:
    with pytest.raises(ValueError, match="tile"):
        plan_uniform_scaling([(0, 10)], 2)


def test_open_ranges_tile() -> None:
    assert open_ranges_tile(uniform_ranges(7))
    assert open_ranges_tile([(HALF, MAX_HASH_KEY), (0, HALF - 1)])
    assert not open_ranges_tile([(0, HALF), (HALF, MAX_HASH_KEY)])  # overlap
    assert not open_ranges_tile([(0, HALF - 2), (HALF, MAX_HASH_KEY)])  # gap
    assert not open_ranges_tile([(0, HALF - 1)])  # short


# -- SplitShard ------------------------------------------------------------------------


def test_split_children_take_the_next_indices_and_the_parent_closes() -> None:
    h = Harness(state_delay=0.5)
    h.stream("s", 2)
    last = h.put("s", 0, b"a")["SequenceNumber"]
    h("SplitShard", StreamName="s", ShardToSplit="shardId-000000000000", NewStartingHashKey="1000")
    shards = {s["ShardId"]: s for s in h.shards()}
    assert list(shards) == [f"shardId-{i:012d}" for i in range(4)]
    parent = shards["shardId-000000000000"]
    assert parent["SequenceNumberRange"]["EndingSequenceNumber"] == last
    for child_id, (start, end) in (
        ("shardId-000000000002", (0, 999)),
        ("shardId-000000000003", (1000, HALF - 1)),
    ):
        child = shards[child_id]
        assert child["ParentShardId"] == "shardId-000000000000"
        assert "AdjacentParentShardId" not in child
        assert _ranges([child]) == [(start, end)]
        assert "EndingSequenceNumber" not in child["SequenceNumberRange"]
    assert open_ranges_tile(_ranges(h.open_shards()))
    # UPDATING for the state delay: a second reshard is refused, data keeps flowing.
    summary = h("DescribeStreamSummary", StreamName="s")["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "UPDATING"
    assert summary["OpenShardCount"] == 3
    error = h.error(
        "SplitShard", StreamName="s", ShardToSplit="shardId-000000000001",
        NewStartingHashKey=str(HALF + 10),
    )
    assert isinstance(error, ResourceInUseException)
    assert error.message == (
        f"Stream s under account {ACCOUNT} not ACTIVE, instead in state UPDATING"
    )
    assert h.put("s", 5, b"b")["ShardId"] == "shardId-000000000002"
    h.now += 0.5
    summary = h("DescribeStreamSummary", StreamName="s")["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"


def test_a_parent_that_never_took_a_record_ends_at_its_starting_number() -> None:
    h = Harness()
    h.stream("s", 1)
    h("SplitShard", StreamName="s", ShardToSplit="shardId-000000000000", NewStartingHashKey="7")
    numbers = h.shards()[0]["SequenceNumberRange"]
    assert numbers["EndingSequenceNumber"] == numbers["StartingSequenceNumber"]


@pytest.mark.parametrize("key", ["0", "1", str(HALF - 1), str(HALF)])
def test_split_key_out_of_range(key: str) -> None:
    h = Harness()
    h.stream("s", 2)
    error = h.error(
        "SplitShard", StreamName="s", ShardToSplit="shardId-000000000000", NewStartingHashKey=key
    )
    assert isinstance(error, InvalidArgumentException)
    assert error.message == (
        f"NewStartingHashKey {key} used in SplitShard() on shard shardId-000000000000 in stream "
        f"s under account {ACCOUNT} is not both greater than one plus the shard's "
        f"StartingHashKey 0 and less than the shard's EndingHashKey {HALF - 1}."
    )
    assert len(h.shards()) == 2


def test_split_of_an_unknown_or_closed_shard() -> None:
    h = Harness()
    h.stream("s", 1)
    error = h.error(
        "SplitShard", StreamName="s", ShardToSplit="shardId-000000000009", NewStartingHashKey="9"
    )
    assert isinstance(error, ResourceNotFoundException)
    assert error.message == (
        f"Could not find shard shardId-000000000009 in stream s under account {ACCOUNT}."
    )
    h("SplitShard", StreamName="s", ShardToSplit="shardId-000000000000", NewStartingHashKey="9")
    error = h.error(
        "SplitShard", StreamName="s", ShardToSplit="shardId-000000000000", NewStartingHashKey="5"
    )
    assert isinstance(error, InvalidArgumentException)
    assert error.message == (
        f"Shard shardId-000000000000 in stream s under account {ACCOUNT} has already been "
        "merged or split, and thus is not eligible for merging or splitting."
    )


def test_split_beyond_the_account_shard_limit() -> None:
    h = Harness(shard_limit=2)
    h.stream("s", 2)
    error = h.error(
        "SplitShard", StreamName="s", ShardToSplit="shardId-000000000000", NewStartingHashKey="9"
    )
    assert isinstance(error, LimitExceededException)
    assert "Current shard count for the account: 2. Limit: 2." in error.message
    assert len(h.shards()) == 2


def test_resharding_an_on_demand_stream_is_refused() -> None:
    h = Harness()
    h("CreateStream", StreamName="od", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    h.now += 1
    error = h.error(
        "SplitShard", StreamName="od", ShardToSplit="shardId-000000000000", NewStartingHashKey="9"
    )
    assert isinstance(error, ValidationException)
    assert error.message == (
        "Request is invalid. Stream od under account 000000000000 is in On-Demand mode."
    )


# -- MergeShards -----------------------------------------------------------------------


def test_merge_makes_one_child_with_both_parents() -> None:
    h = Harness()
    h.stream("s", 3)
    h("MergeShards", StreamName="s", ShardToMerge="shardId-000000000002",
      AdjacentShardToMerge="shardId-000000000001")
    child = h.shards()[-1]
    assert child["ShardId"] == "shardId-000000000003"
    assert child["ParentShardId"] == "shardId-000000000002"
    assert child["AdjacentParentShardId"] == "shardId-000000000001"
    ranges = uniform_ranges(3)
    assert _ranges([child]) == [(ranges[1][0], MAX_HASH_KEY)]
    assert open_ranges_tile(_ranges(h.open_shards()))


def test_merge_of_shards_that_are_not_adjacent() -> None:
    h = Harness()
    h.stream("s", 3)
    for a, b in (("0", "2"), ("1", "1")):
        error = h.error(
            "MergeShards", StreamName="s", ShardToMerge=f"shardId-00000000000{a}",
            AdjacentShardToMerge=f"shardId-00000000000{b}",
        )
        assert isinstance(error, InvalidArgumentException)
        assert error.message == (
            f"Shards shardId-00000000000{a} and shardId-00000000000{b} in stream s under account "
            f"{ACCOUNT} are not an adjacent pair of shards eligible for merging"
        )
    error = h.error(
        "MergeShards", StreamName="s", ShardToMerge="shardId-000000000000",
        AdjacentShardToMerge="shardId-000000000007",
    )
    assert isinstance(error, ResourceNotFoundException)
    assert len(h.shards()) == 3


# -- UpdateShardCount ------------------------------------------------------------------


@pytest.mark.parametrize(("initial", "target"), [(1, 2), (2, 4), (4, 2), (3, 5), (5, 3), (4, 4)])
def test_update_shard_count_ends_uniform(initial: int, target: int) -> None:
    h = Harness()
    h.stream("s", initial)
    result = h(
        "UpdateShardCount", StreamName="s", TargetShardCount=target,
        ScalingType="UNIFORM_SCALING",
    )
    assert result["CurrentShardCount"] == initial
    assert result["TargetShardCount"] == target
    assert result["StreamName"] == "s"
    assert sorted(_ranges(h.open_shards())) == uniform_ranges(target)
    ids = [s["ShardId"] for s in h.shards()]
    assert ids == [f"shardId-{i:012d}" for i in range(len(ids))]


def test_update_shard_count_bounds() -> None:
    h = Harness(shard_limit=10)
    h.stream("s", 4)
    for target, words in ((
        (9, "Cannot scale up to more than double the current open shard count (4); "
            "requested 9."),
        (1, "Cannot scale down to less than half the current open shard count (4); "
            "requested 1."),
    )):
        error = h.error(
            "UpdateShardCount", StreamName="s", TargetShardCount=target,
            ScalingType="UNIFORM_SCALING",
        )
        assert isinstance(error, LimitExceededException)
        assert error.message == (
            "UpdateShardCount failed for stream s under account 000000000000. " + words
        )
    h.stream("t", 4)
    # 4 -> 7 needs short-lived shards: the account limit (10) counts them.
    error = h.error(
        "UpdateShardCount", StreamName="s", TargetShardCount=7, ScalingType="UNIFORM_SCALING"
    )
    assert isinstance(error, LimitExceededException)
    assert error.message == (
        "This request would exceed the shard limit for the account 000000000000 in us-east-1. "
        "Current shard count for the account: 8. Limit: 10. Number of additional shards that "
        "would have resulted from this request: 6. Refer to the AWS Service Limits page "
        "(http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current "
        "limits and how to request higher limits."
    )
    assert len(h.open_shards("s")) == 4


def test_update_shard_count_at_most_ten_times_a_day_when_limits_are_on() -> None:
    h = Harness(throughput=Throughput())
    h.stream("s", 2)
    for i in range(10):
        h.now += 1.0
        h("UpdateShardCount", StreamName="s", TargetShardCount=(3 if i % 2 == 0 else 2),
          ScalingType="UNIFORM_SCALING")
    h.now += 1.0
    error = h.error(
        "UpdateShardCount", StreamName="s", TargetShardCount=3, ScalingType="UNIFORM_SCALING"
    )
    assert isinstance(error, LimitExceededException)
    assert error.message == (
        "UpdateShardCount failed for stream s under account 000000000000. "
        "Cannot scale more than 10 times in a rolling 24-hour period."
    )
    h.now += 86_400.0
    h("UpdateShardCount", StreamName="s", TargetShardCount=3, ScalingType="UNIFORM_SCALING")


# -- reading across a reshard ----------------------------------------------------------


def test_reading_from_parent_to_children_loses_nothing() -> None:
    h = Harness()
    h.stream("s", 1)
    before = [f"before-{i}".encode() for i in range(5)]
    for i, data in enumerate(before):
        h.put("s", i * (MAX_HASH_KEY // 5), data)
    h("SplitShard", StreamName="s", ShardToSplit="shardId-000000000000",
      NewStartingHashKey=str(HALF))
    after = {
        "shardId-000000000001": [b"low-1", b"low-2"],
        "shardId-000000000002": [b"high-1"],
    }
    for shard_id, items in after.items():
        for data in items:
            key = 10 if shard_id.endswith("1") else HALF + 10
            assert h.put("s", key, data)["ShardId"] == shard_id
    records, last = h.read("s", "shardId-000000000000")
    assert records == before
    assert "NextShardIterator" not in last
    assert sorted(c["ShardId"] for c in last["ChildShards"]) == list(after)
    for child in last["ChildShards"]:
        assert child["ParentShards"] == ["shardId-000000000000"]
        records, page = h.read("s", child["ShardId"])
        assert records == after[child["ShardId"]]
        assert "NextShardIterator" in page  # open shards never end


def test_a_closed_shard_read_from_latest_ends_at_once() -> None:
    h = Harness()
    h.stream("s", 2)
    h("MergeShards", StreamName="s", ShardToMerge="shardId-000000000000",
      AdjacentShardToMerge="shardId-000000000001")
    it = h("GetShardIterator", StreamName="s", ShardId="shardId-000000000001",
           ShardIteratorType="LATEST")["ShardIterator"]
    page = h("GetRecords", ShardIterator=it)
    assert page["Records"] == []
    assert "NextShardIterator" not in page
    assert page["ChildShards"][0]["ShardId"] == "shardId-000000000002"
    assert page["ChildShards"][0]["ParentShards"] == [
        "shardId-000000000000",
        "shardId-000000000001",
    ]


# -- property: open shards always tile the hash space ----------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["split", "merge", "scale"]),
        st.integers(min_value=0, max_value=2**20),
        st.integers(min_value=0, max_value=MAX_HASH_KEY),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(initial=st.integers(min_value=1, max_value=6), ops=_OPS)
def test_random_reshards_keep_the_hash_space_tiled(
    initial: int, ops: list[tuple[str, int, int]]
) -> None:
    h = Harness(shard_limit=10_000)
    h.stream("s", initial)
    for kind, pick, key in ops:
        open_shards = sorted(
            h.open_shards(), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"])
        )
        if kind == "split":
            shard = open_shards[pick % len(open_shards)]
            (start, end), = _ranges([shard])
            if end - start < 3:
                continue
            new_key = start + 2 + key % (end - start - 2)
            h("SplitShard", StreamName="s", ShardToSplit=shard["ShardId"],
              NewStartingHashKey=str(new_key))
        elif kind == "merge":
            if len(open_shards) < 2:
                continue
            i = pick % (len(open_shards) - 1)
            left, right = open_shards[i], open_shards[i + 1]
            if key % 2:
                left, right = right, left
            h("MergeShards", StreamName="s", ShardToMerge=left["ShardId"],
              AdjacentShardToMerge=right["ShardId"])
        else:
            n = len(open_shards)
            low, high = (n + 1) // 2, min(2 * n, 40)
            target = low + pick % (high - low + 1)
            h("UpdateShardCount", StreamName="s", TargetShardCount=target,
              ScalingType="UNIFORM_SCALING")
            assert sorted(_ranges(h.open_shards())) == uniform_ranges(target)
        shards = h.shards()
        assert open_ranges_tile(_ranges(h.open_shards()))
        by_id = {s["ShardId"]: s for s in shards}
        for shard in shards:
            parents = [by_id[p] for p in (shard.get("ParentShardId"),
                                          shard.get("AdjacentParentShardId")) if p]
            for parent in parents:
                # Lineage: parents are closed, and a child covers only its parents' keys.
                assert "EndingSequenceNumber" in parent["SequenceNumberRange"]
            if parents:
                (start, end), = _ranges([shard])
                spans = sorted(_ranges(parents))
                assert spans[0][0] <= start
                assert end <= spans[-1][1]
        # Every hash key still routes to the open shard that owns it.
        probe = key % (MAX_HASH_KEY + 1)
        shard_id = h.put("s", probe, b"p")["ShardId"]
        (start, end), = _ranges([by_id[shard_id]])
        assert start <= probe <= end
