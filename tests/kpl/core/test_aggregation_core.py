"""ProducerCore: aggregation per predicted shard, the key cache, plain records, the first map."""

from __future__ import annotations

import base64
import random

import orjson
import pytest
from aws_kinesis_agg.deaggregator import deaggregate_records as reference_deaggregate

from kpl.config import ProducerConfig
from kpl.core.aggregator import Aggregator
from kpl.core.collector import Shard
from kpl.core.pipeline import FIRST_MAP_WAIT, RecordResult
from kpl.core.records import DATA, aggregated_krecords
from kpl.core.shard_map import ShardMap
from kpl.errors import NetworkError
from kpl.protocol.hashing import HASH_KEY_SPACE, hash_key_for
from kpl.protocol.limits import MIB
from tests.kpl.core.harness import Harness, even_shards, keys


def test_everything_is_delivered_aggregated_into_the_right_shards() -> None:
    h = Harness()
    handles = {h.put(f"payload {i}".encode(), f"user-{i % 97}"): i for i in range(3000)}
    h.run()
    assert len(h.outcomes) == 3000
    assert h.core.buffered_records == 0
    assert h.core.buffered_bytes == 0
    by_sequence: dict[str, list[int]] = {}
    for handle, i in handles.items():
        result = h.outcomes[handle]
        assert isinstance(result, RecordResult)
        assert result.shard_id == h.true_map.shard_id_for(hash_key_for(f"user-{i % 97}"))
        assert len(result.attempts) == 1
        assert result.attempts[0].success
        by_sequence.setdefault(result.sequence_number, []).append(result.sub_sequence_number)
    # Sub-sequence numbers are the positions inside each aggregated record.
    for subs in by_sequence.values():
        assert sorted(subs) == list(range(len(subs)))
    assert max(len(s) for s in by_sequence.values()) > 100
    # Every sub-record's hash key lies in the shard that stored it (the KCL rule).
    stored = h.user_records_stored()
    assert len(stored) == 3000
    for shard_id, key, _data, _sub in stored:
        assert h.true_map.shard_id_for(hash_key_for(key)) == shard_id
    assert sorted(d for _s, _k, d, _ in stored) == sorted(
        f"payload {i}".encode() for i in range(3000)
    )


def test_the_key_cache_is_bounded_and_never_changes_a_placement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("kpl.core.routing.KEY_CACHE_SIZE", 50)
    h = Harness()
    # 300 distinct keys (the cache empties itself five times), each put twice, plus
    # non-ASCII keys whose UTF-8 length differs from their length in characters.
    names = [f"user-{i}" for i in range(300)] + ["ключ-1", "ключ-2", "鍵"]
    handles = {h.put(b"v", key): key for key in names + names}
    assert len(h.core._key_cache) <= 50
    h.run()
    assert len(h.outcomes) == len(handles)
    for handle, key in handles.items():
        result = h.outcomes[handle]
        assert isinstance(result, RecordResult)
        assert result.shard_id == h.true_map.shard_id_for(hash_key_for(key))
    assert sorted(k for _s, k, _d, _ in h.user_records_stored()) == sorted(names + names)
    assert h.core.buffered_bytes == 0


def test_the_key_cache_pauses_while_keys_do_not_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kpl.core.routing.KEY_CACHE_SIZE", 50)
    h = Harness()
    for i in range(60):  # distinct: the cache fills after 50 records, all misses
        h.put(b"v", f"once-{i}")
    assert h.core._key_cache == {}  # paused for 200 records
    for i in range(200):
        h.put(b"v", f"again-{i % 10}")
    assert 0 < len(h.core._key_cache) <= 10  # back on after the pause
    for i in range(500):  # ten keys: always hits, never fills, never pauses
        h.put(b"v", f"again-{i % 10}")
    assert len(h.core._key_cache) == 10
    h.run()
    assert len(h.outcomes) == 760
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())


def test_cached_keys_follow_a_new_shard_map() -> None:
    """The key cache remembers each key's predicted shard; a new map replaces them all."""
    h = Harness(shards=even_shards(4))
    names = keys(200)
    for key in names:
        h.put(b"before", key)
    h.run()
    assert len(h.core._key_cache) == 200  # every key cached with a shard of the old map
    # A reshard into 3 shards with other ids and boundaries: no old prediction holds.
    h.shards = even_shards(3, first=10)
    h.true_map = ShardMap(h.shards)
    h.core.set_shard_map(h.shards, h.now)
    after = {h.put(b"after", key): key for key in names}
    # Cached again with the new map's shards, so these keys take the fast path again.
    current = {id(shard) for shard in h.core._shards}
    assert {id(entry[3]) for entry in h.core._key_cache.values()} <= current
    h.run()
    for handle, key in after.items():
        result = h.outcomes[handle]
        assert isinstance(result, RecordResult)
        assert result.shard_id == h.true_map.shard_id_for(hash_key_for(key))
    assert h.core.metrics()["UserRecordsPut"] == 400


def test_aggregates_stay_below_the_record_limit_with_their_partition_key() -> None:
    """aggregation_max_size may equal max_record_size; the aggregate's data and its
    one-byte partition key together must still fit a record."""
    limit = 4096
    # Records that fill an aggregate of exactly `limit` bytes of data: 50-byte ones, then
    # one sized (by trial, the size accounting is exact) to land on the limit.
    trial = Aggregator(limit, 10_000)
    payloads: list[bytes] = []
    while trial.try_add("k", None, b"x" * 50):
        payloads.append(b"x" * 50)
    last = next(n for n in range(200, 0, -1) if trial.try_add("k", None, b"y" * n))
    payloads.append(b"y" * last)
    assert trial.size == limit
    config = ProducerConfig(max_record_size=limit, aggregation_max_size=limit,
                            collection_max_size=5 * MIB, max_buffered_bytes=MIB)
    h = Harness(shards=even_shards(1), config=config)
    for data in payloads:
        h.put(data, "k")
    h.run()
    assert len(h.outcomes) == len(payloads)
    sizes = [len(base64.b64decode(s.entry["Data"])) + len(s.entry["PartitionKey"])
             for s in h.stored]
    assert max(sizes) <= limit


def test_the_inlined_fast_path_builds_the_same_bytes_and_exact_sizes_as_aggregator() -> None:
    """add() inlines Aggregator.try_add's common case: same bytes, same exact size."""
    rng = random.Random(7)
    config = ProducerConfig(aggregation_max_size=1_000_000, record_max_buffered_time=10.0)
    h = Harness(config=config, shards=even_shards(1))
    reference = Aggregator(config.aggregation_max_size, config.aggregation_max_count)
    for i in range(2000):
        # Data lengths around the one/two-byte varint edges, 300+ distinct keys (indexes
        # past 127), keys repeated, non-ASCII keys, long keys.
        key = rng.choice([f"k{rng.randrange(400)}", f"ключ{rng.randrange(5)}", "x" * 200])
        data = rng.randbytes(rng.choice([0, 1, 120, 123, 124, 127, 128, 300, 1000]))
        h.put(data, key)
        assert reference.try_add(key, None, data)
        if i % 97 == 0:
            agg = h.core._shards[0].agg
            assert agg is not None
            assert agg.size == reference.size == len(agg.serialize())
    agg = h.core._shards[0].agg
    assert agg is not None
    assert agg.count == 2000
    assert agg.serialize() == reference.serialize()


def test_the_reference_deaggregator_reads_what_we_sent() -> None:
    h = Harness()
    for i in range(500):
        h.put(f"r{i}".encode(), f"k{i % 13}", str(i) if i % 50 == 0 else None)
    h.run()
    records = [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "sequenceNumber": s.sequence,
                "approximateArrivalTimestamp": 0,
                "partitionKey": s.entry["PartitionKey"],
                "data": s.entry["Data"],
            }
        }
        for s in h.stored
    ]
    theirs = reference_deaggregate(records)
    assert sorted(base64.b64decode(r["kinesis"]["data"]) for r in theirs) == sorted(
        f"r{i}".encode() for i in range(500)
    )


def test_aggregated_records_use_the_first_hash_key_and_a_placeholder_key() -> None:
    h = Harness(shards=even_shards(1))
    h.put(b"a", "first")
    h.put(b"b", "second")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    (entry,) = orjson.loads(request.body)["Records"]
    assert entry["PartitionKey"] == "a"
    assert entry["ExplicitHashKey"] == str(hash_key_for("first"))
    assert request.record_count == 1
    assert request.user_record_count == 2


def test_a_single_record_is_sent_plain() -> None:
    h = Harness()
    h.put(b"just me", "solo", "12345")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    assert orjson.loads(request.body) == {
        "StreamName": "stream",
        "Records": [
            {
                "Data": base64.b64encode(b"just me").decode(),
                "PartitionKey": "solo",
                "ExplicitHashKey": "12345",
            }
        ],
    }
    h.answer(request)
    (outcome,) = h.outcomes.values()
    assert isinstance(outcome, RecordResult)
    assert outcome.sub_sequence_number == 0


def test_aggregation_disabled_sends_every_record_plain() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(20):
        h.put(b"d", f"k{i}")
    h.run()
    assert len(h.stored) == 20
    assert all(not base64.b64decode(s.entry["Data"]).startswith(b"\xf3\x89") for s in h.stored)


def test_records_too_large_to_aggregate_go_plain() -> None:
    h = Harness(config=ProducerConfig(aggregation_max_size=1000))
    h.put(b"s" * 10, "k")
    h.put(b"L" * 5000, "k")
    h.put(b"t" * 10, "k")
    h.run()
    assert sorted(d for _s, _k, d, _ in h.user_records_stored()) == sorted(
        [b"s" * 10, b"L" * 5000, b"t" * 10]
    )
    assert any(s.entry["Data"] == base64.b64encode(b"L" * 5000).decode() for s in h.stored)


def test_before_the_first_map_records_are_held_then_aggregated() -> None:
    h = Harness(core_map=None)
    poll = h.poll()
    assert poll.refresh_shard_map
    for i in range(50):
        h.put(b"x" * 10, f"k{i}")
    h.now = 0.5  # well past record_max_buffered_time, within FIRST_MAP_WAIT
    poll = h.poll()
    assert not poll.requests  # held: neither aggregated nor sent plain
    assert poll.deadline == FIRST_MAP_WAIT  # wakes at the end of the wait at the latest
    h.core.set_shard_map(h.shards, h.now)
    h.run()
    assert len(h.outcomes) == 50
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    # One aggregated Kinesis record per shard, never one per user record.
    assert len(h.stored) == len(h.shards)
    assert all(s.entry["PartitionKey"] == "a" for s in h.stored)
    assert h.refreshes == 1


def test_without_a_map_records_go_plain_after_the_wait() -> None:
    h = Harness(core_map=None)
    h.poll()  # asks for the map, which never comes
    for i in range(3):
        h.put(b"x", f"k{i}")
    h.now = FIRST_MAP_WAIT - 0.01
    assert not h.poll().requests
    h.now = FIRST_MAP_WAIT
    poll = h.poll()
    (request,) = poll.requests
    assert request.record_count == 3  # plain: the service places each one itself


def test_a_failed_first_map_sends_held_records_plain_at_once() -> None:
    h = Harness(core_map=None)
    h.poll()
    for i in range(3):
        h.put(b"x", f"k{i}")
    h.now = 0.2
    assert not h.poll().requests
    h.core.on_shard_map_error(NetworkError("refused"), h.now)
    poll = h.poll()
    (request,) = poll.requests
    assert request.record_count == 3
    h.answer(request)
    assert len(h.outcomes) == 3
    # Later records, still without a map, are not held either (only by the buffered time).
    h.put(b"y", "k9")
    h.now += 0.1
    assert h.poll().requests


def test_a_gap_in_the_map_sends_plain() -> None:
    # A map with a hole (mid-reshard): records in the hole are not aggregated.
    half = HASH_KEY_SPACE // 2
    h = Harness(shards=even_shards(1), core_map=[("shardId-000000000000", 0, half - 1)])
    keys_in_hole = [k for k in keys(40) if hash_key_for(k) >= half][:5]
    for key in keys_in_hole:
        h.put(b"hole", key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    assert request.record_count == len(keys_in_hole)


def test_records_packed_again_fill_few_kinesis_records_within_the_limits() -> None:
    """A retry re-aggregated by a new map: as few Kinesis records as the limits allow, in
    order, and a record too large to share one goes alone, plain."""
    shard = Shard("shardId-000000000001", (0, 2**128 - 1), None)
    items = [
        (b"%03d" % i + b"x" * (5000 if i == 7 else 10), f"k{i}", None, hash_key_for(f"k{i}"),
         i, 0.0, i + 1, 13 + len(f"k{i}"))
        for i in range(20)
    ]
    krecords = aggregated_krecords(items, shard, max_size=1000, max_count=5, mbt=0.1)
    assert [len(k.items) for k in krecords] == [5, 2, 1, 5, 5, 2]
    assert [k.aggregated for k in krecords] == [True, True, False, True, True, True]
    assert all(k.size <= 1000 for k in krecords if k.aggregated)
    assert [r[DATA] for k in krecords for r in k.items] == [r[DATA] for r in items]
