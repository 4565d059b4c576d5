"""Shard ids on the wire: how a ShardId is resolved, and MergeShards/SplitShard's check
order and texts."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from server.core.engine import Engine
from server.core.errors import InvalidArgumentException, KinesisError, ResourceInUseException
from server.core.streams import EngineConfig, resolve_shard_id
from server.storage.memory import MemoryStorage
from tests.server.wire_support import answer, error
from tests.support import ServerThread

ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ServerThread(state_delay_seconds=0.0, limits="off", metrics=False) as thread:
        created = answer(thread.url, "CreateStream", {"StreamName": "three", "ShardCount": 3})
        assert created == (200, None)
        yield thread.url


def test_resolve_shard_id() -> None:
    for text, resolved in (
        ("shardId-000000000002", "shardId-000000000002"),
        ("shardId-2", "shardId-000000000002"),
        ("anything-2", "shardId-000000000002"),
        ("a-b-c-0002", "shardId-000000000002"),
        ("2", "shardId-000000000002"),
        ("-2147483647", "shardId-002147483647"),
    ):
        assert resolve_shard_id(text) == resolved, text
    for text in ("x", "shardId-", "shardId-2147483648", "2-x", "shardId-1.5", "shardId-٣", ""):
        assert resolve_shard_id(text) is None, text


def iterator(url: str, stream: str, shard: str) -> tuple[int, dict[str, str]]:
    return answer(url, "GetShardIterator", {
        "StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"
    })


def test_get_shard_iterator_resolves_ids_after_finding_the_stream(url: str) -> None:
    for shard in ("anything-2", "2", "x-y-02", "shardId-000000000002"):
        status, body = iterator(url, "three", shard)
        assert status == 200, shard
        assert body["ShardIterator"]
    for shard in ("x", "shardId-2147483648", "shardId-"):
        assert iterator(url, "three", shard) == error(
            "ResourceNotFoundException",
            f"Could not find shard {shard} in stream three under account {ACCOUNT}.",
        )
    assert iterator(url, "three", "shardId-7") == error(
        "ResourceNotFoundException",
        f"Shard shardId-000000000007 in stream three under account {ACCOUNT} does not exist",
    )
    # The stream is looked up first.
    for shard, named in (("x", "x"), ("1", "shardId-000000000001")):
        assert iterator(url, "absent", shard) == error(
            "ResourceNotFoundException",
            f"Shard {named} in stream absent under account {ACCOUNT} does not exist",
        )


def test_merge_shards_check_order(url: str) -> None:
    def merge(stream: str, first: str, second: str) -> tuple[int, dict[str, str]]:
        body = {"StreamName": stream, "ShardToMerge": first, "AdjacentShardToMerge": second}
        answered = answer(url, "MergeShards", body)
        if answered[0] != 200:  # the same refusal in CBOR
            assert answer(url, "MergeShards", body, cbor=True) == answered
        return answered

    assert merge("absent", "x", "y") == error(
        "ResourceNotFoundException", f"Stream absent under account {ACCOUNT} not found."
    )
    assert merge("three", "x", "shardId-9") == error(
        "ResourceNotFoundException",
        f"Could not find shard x in stream three under account {ACCOUNT}.",
    )
    assert merge("three", "0", "shardId-9") == error(
        "ResourceNotFoundException",
        f"Could not find shard shardId-000000000009 in stream three under account {ACCOUNT}.",
    )
    assert merge("three", "shardId-0", "anything-2") == error(
        "InvalidArgumentException",
        "Shards shardId-000000000000 and shardId-000000000002 in stream three under account "
        f"{ACCOUNT} are not an adjacent pair of shards eligible for merging",
    )
    assert merge("three", "shardId-0", "x-1") == (200, None)


def test_split_shard_check_order(url: str) -> None:
    def split(stream: str, shard: str, key: str) -> tuple[int, dict[str, str]]:
        return answer(url, "SplitShard", {
            "StreamName": stream, "ShardToSplit": shard, "NewStartingHashKey": key
        })

    assert split("absent", "x", "1") == error(
        "ResourceNotFoundException", f"Stream absent under account {ACCOUNT} not found."
    )
    assert split("three", "shardId-2147483648", "1") == error(
        "ResourceNotFoundException",
        f"Could not find shard shardId-2147483648 in stream three under account {ACCOUNT}.",
    )
    assert split("three", "2", "1") == error(
        "InvalidArgumentException",
        "NewStartingHashKey 1 used in SplitShard() on shard shardId-000000000002 in stream "
        f"three under account {ACCOUNT} is not both greater than one plus the shard's "
        "StartingHashKey 226854911280625642308916404954512140970 and less than the shard's "
        "EndingHashKey 340282366920938463463374607431768211455.",
    )


def test_shard_checks_come_before_the_stream_state() -> None:
    engine = Engine(EngineConfig(state_delay_seconds=10.0), MemoryStorage(), random.Random(1))
    now = 1_000.0
    engine.handle("CreateStream", {"StreamName": "s", "ShardCount": 4}, now)
    now += 11
    engine.handle("SplitShard", {
        "StreamName": "s", "ShardToSplit": "0", "NewStartingHashKey": str(2**100)
    }, now)  # UPDATING for 10 s

    def refusal(action: str, **body: str) -> KinesisError:
        with pytest.raises(KinesisError) as info:
            engine.handle(action, {"StreamName": "s", **body}, now)
        return info.value

    assert isinstance(refusal("MergeShards", ShardToMerge="1", AdjacentShardToMerge="3"),
                      InvalidArgumentException)
    assert isinstance(refusal("SplitShard", ShardToSplit="1", NewStartingHashKey="1"),
                      InvalidArgumentException)
    assert refusal("MergeShards", ShardToMerge="1", AdjacentShardToMerge="2").message == (
        f"Stream s under account {ACCOUNT} not ACTIVE, instead in state UPDATING"
    )
    inside = str(2**126 + 2**120)
    assert isinstance(refusal("SplitShard", ShardToSplit="1", NewStartingHashKey=inside),
                      ResourceInUseException)
