"""Shard lineage: parents before children, as plain sync functions."""

from __future__ import annotations

from kpl.consumer.core.lineage import Lineage, ShardInfo, is_ready, roots
from kpl.protocol.hashing import MAX_HASH_KEY

HALF = 2**127


def _listed(
    shard_id: str, *parents: str, start: int = 0, end: int = MAX_HASH_KEY, closed: bool = False
) -> ShardInfo:
    return ShardInfo(shard_id, tuple(parents), start, end, "999" if closed else None)


def test_from_api_reads_a_listshards_entry() -> None:
    shard = ShardInfo.from_api(
        {
            "ShardId": "shardId-000000000003",
            "ParentShardId": "shardId-000000000001",
            "AdjacentParentShardId": "shardId-000000000002",
            "HashKeyRange": {"StartingHashKey": "10", "EndingHashKey": "20"},
            "SequenceNumberRange": {"StartingSequenceNumber": "5", "EndingSequenceNumber": "9"},
        }
    )
    assert shard == ShardInfo(
        "shardId-000000000003", ("shardId-000000000001", "shardId-000000000002"), 10, 20, "9"
    )
    assert not shard.is_open
    assert shard.contains(10)
    assert shard.contains(20)
    assert not shard.contains(9)
    assert not shard.contains(21)


def test_from_api_reads_a_child_shards_entry_and_an_open_shard() -> None:
    child = ShardInfo.from_api(
        {
            "ShardId": "shardId-000000000002",
            "ParentShards": ["shardId-000000000000"],
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(HALF - 1)},
        }
    )
    assert child.parent_shard_ids == ("shardId-000000000000",)
    assert child.is_open
    assert child.ending_hash_key == HALF - 1
    root = ShardInfo.from_api(
        {"ShardId": "s0", "SequenceNumberRange": {"StartingSequenceNumber": "1"}}
    )
    assert root.parent_shard_ids == ()
    assert root.is_open
    assert (root.starting_hash_key, root.ending_hash_key) == (0, MAX_HASH_KEY)


def test_split_children_start_after_their_parent() -> None:
    lineage = Lineage(
        [
            _listed("p", closed=True),
            _listed("a", "p", end=HALF - 1),
            _listed("b", "p", start=HALF),
        ]
    )
    assert lineage.take_ready() == ["p"]
    assert lineage.take_ready() == []  # handed out once
    assert lineage.finish("p") == ["a", "b"]
    assert lineage.finish("a") == []
    assert lineage.finished == {"p", "a"}


def test_merge_child_waits_for_both_parents() -> None:
    lineage = Lineage([_listed("x", closed=True), _listed("y", closed=True)])
    assert lineage.take_ready() == ["x", "y"]
    child = _listed("m", "x", "y")
    assert lineage.finish("x", [child]) == []
    assert not lineage.is_ready("m")
    assert lineage.finish("y", [child]) == ["m"]


def test_children_learnt_from_the_answer_join_the_reading() -> None:
    # Reading from LATEST: only the open shard is read; its children come from ChildShards.
    lineage = Lineage([_listed("p")])
    assert lineage.take_ready() == ["p"]
    kids = [_listed("a", "p", end=HALF - 1), _listed("b", "p", start=HALF)]
    assert lineage.finish("p", kids) == ["a", "b"]
    assert lineage.read == {"p", "a", "b"}
    assert lineage.info("a") == kids[0]


def test_a_parent_that_is_not_read_is_never_waited_for() -> None:
    # From LATEST the closed parent is not read: its open children start at once.
    listing = [_listed("p", closed=True), _listed("a", "p"), _listed("b", "p")]
    lineage = Lineage(s for s in listing if s.is_open)
    assert lineage.take_ready() == ["a", "b"]
    # A merge whose one parent is read and the other not waits only for the read one.
    lineage = Lineage([_listed("x")])
    assert lineage.take_ready() == ["x"]
    assert lineage.finish("x", [_listed("m", "x", "gone")]) == ["m"]


def test_grandchildren_wait_for_the_whole_chain() -> None:
    lineage = Lineage(
        [
            _listed("g", closed=True),
            _listed("p", "g", closed=True),
            _listed("c", "p"),
        ]
    )
    assert lineage.take_ready() == ["g"]
    assert lineage.finish("g") == ["p"]
    assert lineage.finish("p") == ["c"]


def test_is_ready_and_roots() -> None:
    assert is_ready(["a", "b"], finished={"a"}, read={"a"})
    assert not is_ready(["a", "b"], finished={"a"}, read={"a", "b"})
    assert is_ready([], finished=set(), read=set())
    listing = [_listed("p", closed=True), _listed("a", "p"), _listed("q", "trimmed")]
    assert [s.shard_id for s in roots(listing)] == ["p", "q"]
