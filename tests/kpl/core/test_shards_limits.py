"""Shard map lookup and refresh rules, shard limiters, collection limits, request bodies."""

from __future__ import annotations

import orjson
import pytest

from kpl.core.collector import Collector, put_records_body
from kpl.core.ratelimit import ShardLimiter
from kpl.core.shard_map import RefreshPolicy, ShardMap
from kpl.protocol.hashing import MAX_HASH_KEY

THIRD = 113427455640312821154458202477256070484
THREE = [
    ("shardId-000000000002", 2 * THIRD + 2, MAX_HASH_KEY),
    ("shardId-000000000000", 0, THIRD),
    ("shardId-000000000001", THIRD + 1, 2 * THIRD + 1),
]


@pytest.mark.parametrize(
    ("hash_key", "shard"),
    [
        (0, "shardId-000000000000"),
        (THIRD, "shardId-000000000000"),
        (THIRD + 1, "shardId-000000000001"),
        (2 * THIRD + 2, "shardId-000000000002"),
        (MAX_HASH_KEY, "shardId-000000000002"),
    ],
)
def test_lookup_boundaries(hash_key: int, shard: str) -> None:
    assert ShardMap(THREE).shard_id_for(hash_key) == shard


def test_gaps_and_indexes() -> None:
    shard_map = ShardMap([("a", 10, 20), ("b", 30, 40)])
    assert [shard_map.lookup(k) for k in (0, 10, 20, 25, 30, 40, 41)] == [-1, 0, 0, -1, 1, 1, -1]
    assert shard_map.index_of("b") == 1
    assert shard_map.index_of("zzz") == -1
    assert shard_map.range_of(1) == (30, 40)
    assert shard_map.shards() == [("a", 10, 20), ("b", 30, 40)]
    assert len(shard_map) == 2


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ([("a", 0, 10), ("b", 5, 20)], "overlap"),
        ([("a", 10, 5)], "invalid hash key range"),
        ([("a", 0, MAX_HASH_KEY + 1)], "invalid hash key range"),
        ([("a", 0, 5), ("a", 6, 9)], "duplicate"),
    ],
)
def test_bad_maps_are_rejected(shards: list[tuple[str, int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShardMap(shards)


def test_refresh_at_most_once_per_interval_never_a_storm() -> None:
    policy = RefreshPolicy(min_interval=1.0)
    assert policy.due(0.0)  # no map yet
    policy.start(0.0)
    for _ in range(100):  # a storm of mispredictions while the call is outstanding
        policy.invalidate()
        assert not policy.due(0.1)
    policy.installed(0.2)
    assert policy.wanted  # the answer may predate the mispredictions: one more
    assert not policy.due(0.5)
    assert policy.wake_at() == 1.0
    assert policy.due(1.0)
    policy.start(1.0)
    policy.installed(1.1)
    assert not policy.wanted
    assert not policy.due(5.0)


def test_failed_refresh_is_retried_after_the_interval() -> None:
    policy = RefreshPolicy(min_interval=2.0)
    policy.start(0.0)
    policy.failed()
    assert not policy.due(1.9)
    assert policy.due(2.0)


def test_unasked_map_counts_as_fresh() -> None:
    policy = RefreshPolicy(min_interval=1.0)
    policy.installed(5.0)
    assert not policy.wanted
    policy.invalidate()
    assert not policy.due(5.5)
    assert policy.due(6.0)


# --- token buckets ----------------------------------------------------------------------


def test_shard_limiter_at_150_percent() -> None:
    limiter = ShardLimiter(150.0, now=0.0)
    taken = 0
    while limiter.take(1, 10, 0.0) == 0.0:
        taken += 1
    assert taken == 1500  # records bucket: 1.5 x 1000/s
    assert limiter.take(1, 10, 0.0) == pytest.approx(1 / 1500)


def test_shard_limiter_bytes_bucket() -> None:
    limiter = ShardLimiter(100.0, now=0.0)
    assert limiter.take(1, 1024 * 1024, 0.0) == 0.0
    wait = limiter.take(1, 512 * 1024, 0.0)
    assert wait == pytest.approx(0.5)
    assert limiter.records.tokens == 999  # refused: neither bucket changed
    assert limiter.take(1, 512 * 1024, 0.5) == 0.0


# --- collection -----------------------------------------------------------------------


def test_collector_count_limit() -> None:
    collector = Collector(max_count=500, max_size=5 * 1024 * 1024)
    assert all(collector.try_add(10) for _ in range(500))
    assert not collector.try_add(10)
    assert collector.full()


def test_collector_byte_limit() -> None:
    collector = Collector(max_count=500, max_size=1000)
    assert collector.try_add(600)
    assert not collector.try_add(401)
    assert collector.try_add(400)
    assert collector.size == 1000
    assert collector.full()
    collector.reset()
    assert (collector.count, collector.size) == (0, 0)


def test_collector_first_entry_always_fits() -> None:
    collector = Collector(max_count=500, max_size=100)
    assert collector.try_add(150)
    assert not collector.try_add(1)


def test_put_records_body() -> None:
    entries = [{"Data": "AA==", "PartitionKey": "k"}]
    assert orjson.loads(put_records_body("s", None, entries)) == {
        "StreamName": "s",
        "Records": entries,
    }
    assert orjson.loads(put_records_body("s", "arn:aws:kinesis:x", entries)) == {
        "StreamARN": "arn:aws:kinesis:x",
        "Records": entries,
    }
