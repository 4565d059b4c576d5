"""ProducerCore: records landing on other shards than predicted, reshards, preserve_order."""

from __future__ import annotations

import random
from typing import Any

import orjson

from kpl.config import ProducerConfig
from kpl.core.mispredict import MISPREDICTED, Mispredictions
from kpl.core.pipeline import RecordResult
from kpl.core.records import UserRecord
from kpl.core.results import Attempt
from kpl.core.shard_map import ShardMap
from kpl.errors import AccessDeniedException, NetworkError, RecordFailed
from kpl.protocol.hashing import HASH_KEY_SPACE, MAX_HASH_KEY, hash_key_for
from tests.kpl.core.harness import Harness, even_shards, first_copies, keys


def test_reshard_while_in_flight_keeps_what_fits_and_reroutes_the_rest() -> None:
    # Aggregated for one shard; the map changes (split) before the answer comes back.
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old)
    names = keys(200)
    for key in names:
        h.put(key.encode(), key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.core.set_shard_map(new, h.now)
    h.answer(request)
    answering = h.true_map.shard_id_for(hash_key_for(names[0]))  # the first key's EHK
    fits = {k for k in names if h.true_map.shard_id_for(hash_key_for(k)) == answering}
    assert 0 < len(fits) < 200
    assert {names[handle - 1] for handle in h.outcomes} == fits
    assert all(isinstance(o, RecordResult) and o.shard_id == answering for o in h.outcomes.values())
    assert h.core.metrics()["ShardMapMispredictions"] == 1
    h.run()
    assert len(h.outcomes) == 200
    for handle, outcome in h.outcomes.items():
        assert isinstance(outcome, RecordResult)
        assert outcome.shard_id == h.true_map.shard_id_for(hash_key_for(names[handle - 1]))
        if names[handle - 1] not in fits:
            assert [a.error_code for a in outcome.attempts] == ["Mispredicted", None]
    # The first (mispredicted) aggregate holds strays a reader drops; the resends do not.
    first, *resent = h.stored
    assert first.shard_id == answering
    h.stored = resent
    for shard_id, key, _data, _sub in h.user_records_stored():
        assert h.true_map.shard_id_for(hash_key_for(key)) == shard_id


def test_misprediction_to_an_unknown_shard_waits_for_the_map_one_refresh() -> None:
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old)
    names = keys(50)
    for key in names:
        h.put(key.encode(), key)
    h.core.flush(h.now)
    for request in h.poll().requests:
        h.answer(request)
    # shardId-1/2 are unknown to the core's map: nothing can be confirmed yet.
    assert not h.outcomes
    # New records wait for the new map (record_max_buffered_time at most), which is
    # asked for at once: the last refresh brought a map that changed (the first one).
    fresh = [h.put(b"new", f"fresh{i}") for i in range(30)]
    h.now = 0.05
    poll = h.poll()
    assert poll.refresh_shard_map
    assert poll.requests == []
    for _ in range(5):
        assert not h.poll().refresh_shard_map  # outstanding: no storm
    h.core.set_shard_map(new, h.now)
    h.run()
    assert len(h.outcomes) == 80
    assert h.refreshes == 1
    # The first aggregate, then the rest and the 30 new ones aggregated per new shard.
    assert len(h.stored) == 3
    for handle, outcome in h.outcomes.items():
        assert isinstance(outcome, RecordResult)
        key = names[handle - 1] if handle <= 50 else f"fresh{fresh.index(handle)}"
        assert outcome.shard_id == h.true_map.shard_id_for(hash_key_for(key))


def test_failed_refresh_resends_unconfirmed_records() -> None:
    h = Harness(shards=even_shards(2, first=1), core_map=even_shards(1))
    for key in keys(20):
        h.put(key.encode(), key)
    h.core.flush(h.now)
    for request in h.poll().requests:
        h.answer(request)
    h.now = 1.0
    assert h.poll().refresh_shard_map
    h.core.on_shard_map_error(NetworkError("ListShards failed"), h.now)
    h.run()
    assert len(h.outcomes) == 20
    assert len(h.stored) >= 2  # possibly duplicated, never lost
    h.now = 1.5
    assert not h.poll().refresh_shard_map
    h.now = 2.0
    assert h.poll().refresh_shard_map


def test_new_map_reroutes_buffered_records() -> None:
    h = Harness(shards=even_shards(4))
    for key in keys(100):
        h.put(key.encode(), key)
    h.core.set_shard_map(even_shards(4, first=4), h.now)  # a reshard replaced every shard
    h.true_map = ShardMap(even_shards(4, first=4))
    h.run()
    assert len(h.outcomes) == 100
    assert {
        o.shard_id  # type: ignore[union-attr]
        for o in h.outcomes.values()
    } <= {s[0] for s in even_shards(4, first=4)}


def test_preserve_order_holds_everything_from_a_misprediction_until_the_new_map() -> None:
    """A split the core learns of from an answer: the sub-records sent again must not be
    overtaken by newer records of their keys, so nothing leaves until the new map."""
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old, config=ProducerConfig(preserve_order=True))
    names = keys(30)
    sent_order: dict[str, list[bytes]] = {k: [] for k in names}

    def put(tag: str, count: int) -> None:
        for i in range(count):
            key = names[i % len(names)]
            data = f"{tag}{i:04d}".encode()
            sent_order[key].append(data)
            h.put(data, key)

    put("a", 300)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request)  # lands on a shard the core's map does not know
    assert not h.outcomes
    put("b", 300)  # newer records of the same keys, while the map is stale
    h.core.flush(h.now)
    poll = h.poll()
    assert h.refreshes == 1  # at once: the last map installed was a change (the first)
    assert poll.requests == []  # held: nothing may overtake the records sent again
    for _ in range(3):  # until the new map comes, however long ListShards takes
        assert poll.deadline is not None
        h.now = poll.deadline
        poll = h.poll()
        assert poll.requests == []
    h.core.set_shard_map(new, h.now)
    h.run()
    assert len(h.outcomes) == 600
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    # What a consumer keeps (sub-records in the shard that owns their hash key), per key,
    # in the order the stream stored them: exactly the put() order.
    assert first_copies(h.user_records_stored(), h.true_map) == sent_order


def test_preserve_order_survives_a_failed_and_a_stale_listshards_after_a_misprediction() -> None:
    """ListShards first fails, then answers with the map from before the split (it can lag
    behind the service): order holds through both, and the new map then settles it."""
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old, config=ProducerConfig(preserve_order=True))
    names = keys(10)
    sent_order: dict[str, list[bytes]] = {k: [] for k in names}

    def put(tag: str, count: int) -> None:
        for i in range(count):
            key = names[i % len(names)]
            data = f"{tag}{i:04d}".encode()
            sent_order[key].append(data)
            h.put(data, key)

    put("a", 100)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request)  # lands on a shard unknown to the map: held
    put("b", 100)  # queued behind, on the old shard
    h.core.on_shard_map_error(NetworkError("ListShards failed"), h.now)
    h.now += 0.5
    assert h.poll().requests == []  # still held: sending now could reorder
    h.core.set_shard_map(old, h.now)  # a stale answer: the same map as before
    # Everything goes again in put() order; the resend lands on an unknown shard again.
    refreshes = h.refreshes
    while h.refreshes == refreshes:
        poll = h.poll()
        for request in list(h.unanswered):
            h.answer(request)
        if not poll.requests and poll.deadline is not None:
            h.now = poll.deadline
    h.core.set_shard_map(new, h.now)
    h.run()
    assert len(h.outcomes) == 200
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    assert first_copies(h.user_records_stored(), h.true_map) == sent_order
    # The stale map did not know the shard that answered, so nothing was sent twice.
    kept = [(k, d) for s_, k, d, _ in h.user_records_stored()
            if h.true_map.shard_id_for(hash_key_for(k)) == s_]
    assert len(kept) == len(set(kept)) == 200


def test_preserve_order_puts_records_sent_again_back_among_newer_ones() -> None:
    """An aggregate lands on another shard of the (stale) map while newer records of its
    keys already wait in its shard's queue, and the next ListShards still answers the
    stale map: the records sent again must go before the newer ones all the same."""
    half, quarter = HASH_KEY_SPACE // 2, HASH_KEY_SPACE // 4
    stale = [("shardId-a", 0, half - 1), ("shardId-b", half, MAX_HASH_KEY)]
    true = [("shardId-a", 0, quarter - 1), ("shardId-b", quarter, MAX_HASH_KEY)]
    h = Harness(shards=true, core_map=stale, config=ProducerConfig(preserve_order=True))
    # Keys predicted for shardId-a; the first truly in shardId-b, so the aggregate (placed
    # by its first record's hash key) lands there.
    moved = [k for k in keys(400) if quarter <= hash_key_for(k) < half][:6]
    stayed = [k for k in keys(400) if hash_key_for(k) < quarter][:6]
    names = moved + stayed
    sent_order: dict[str, list[bytes]] = {k: [] for k in names}

    def put(tag: str, count: int) -> None:
        for i in range(count):
            key = names[i % len(names)]
            data = f"{tag}{i:04d}".encode()
            sent_order[key].append(data)
            h.put(data, key)

    put("a", 60)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    put("b", 60)  # newer records of the same keys, queued while "a" is in flight
    h.core.flush(h.now)
    h.answer(request)  # on shardId-b: every sub-record is sent again
    assert h.poll().requests == []  # held until a map
    h.core.set_shard_map(stale, h.now)  # ListShards lags: the same map again
    while h.core.buffered_records:
        poll = h.poll()
        for request in list(h.unanswered):
            h.answer(request)
        if h.refreshes:
            h.core.set_shard_map(true, h.now)  # the service's map at last
            h.refreshes = 0
        elif not poll.requests and poll.deadline is not None:
            h.now = poll.deadline
    assert len(h.outcomes) == 120
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    assert first_copies(h.user_records_stored(), h.true_map) == sent_order


def test_preserve_order_without_listshards_fails_with_its_reason() -> None:
    """preserve_order sends nothing without a shard map: a ListShards refusal that waiting
    will not fix fails the waiting records at once, with that reason; a passing failure
    lets them wait, and if they expire their message says what was missing."""
    config = ProducerConfig(preserve_order=True, record_ttl=2.0)
    h = Harness(core_map=None, config=config)
    handles = [h.put(b"v%d" % i, f"k{i}") for i in range(5)]
    assert h.poll().refresh_shard_map
    h.core.on_shard_map_error(NetworkError("connection reset"), h.now)
    assert not h.poll().completions  # a network error may pass: they wait
    h.now += 1.0
    assert h.poll().refresh_shard_map
    denied = AccessDeniedException("User is not authorized to perform kinesis:ListShards")
    h.core.on_shard_map_error(denied, h.now)
    h.poll()
    assert set(h.outcomes) == set(handles)
    for handle in handles:
        outcome = h.outcomes[handle]
        assert isinstance(outcome, RecordFailed)
        assert outcome.code == "AccessDeniedException"
        assert "ListShards failed, and preserve_order needs the shard map" in outcome.message
        assert "not authorized" in outcome.message
    assert h.core.buffered_records == 0
    # Later records wait for the next ListShards; a passing error lets them expire.
    late = h.put(b"late", "k-late")
    h.now += 1.0
    h.poll()
    h.core.on_shard_map_error(NetworkError("connection reset"), h.now)
    h.now += 2.5
    h.poll()
    expired = h.outcomes[late]
    assert isinstance(expired, RecordFailed)
    assert expired.code == "Expired"
    assert "no shard map: ListShards failed: " in expired.message
    assert "connection reset" in expired.message


def test_preserve_order_one_request_per_shard_and_order_under_failures() -> None:
    h = Harness(
        shards=even_shards(3), config=ProducerConfig(preserve_order=True, aggregation_max_size=2000)
    )
    rng = random.Random(3)
    names = keys(12)
    expected: dict[str, list[bytes]] = {k: [] for k in names}
    for i in range(1500):
        key = rng.choice(names)
        data = f"{key}:{i}".encode()
        expected[key].append(data)
        h.put(data, key)
        if i % 100 == 0:
            h.now += 0.03
            poll = h.poll()
            shards_used = [
                h.true_map.shard_id_for(hash_key_for(e["PartitionKey"], e.get("ExplicitHashKey")))
                for r in poll.requests
                for e in orjson.loads(r.body)["Records"]
            ]
            assert len(shards_used) == len(set(shards_used))  # one record, one request
            for request in poll.requests:
                h.answer(
                    request, inject=lambda _e, _i: "InternalFailure" if rng.random() < 0.3 else None
                )

    def flaky(_entry: dict[str, Any], _index: int) -> str | None:
        return "ProvisionedThroughputExceededException" if rng.random() < 0.3 else None

    h.run(inject=flaky)
    assert len(h.outcomes) == 1500
    got: dict[str, list[bytes]] = {k: [] for k in names}
    for _shard, key, data, _sub in h.user_records_stored():
        got[key].append(data)
    assert got == expected


def test_preserve_order_holds_a_shard_while_its_request_is_in_flight() -> None:
    h = Harness(
        shards=even_shards(1), config=ProducerConfig(preserve_order=True, aggregation_enabled=False)
    )
    for i in range(5):
        h.put(f"{i}".encode(), "same")
    h.core.flush(h.now)
    poll = h.poll()
    assert [r.record_count for r in poll.requests] == [1]
    assert not h.poll().requests
    h.answer(poll.requests[0], inject=lambda _e, _i: "InternalFailure")
    h.run()
    assert [d for _s, _k, d, _ in h.user_records_stored()] == [b"0", b"1", b"2", b"3", b"4"]


def test_preserve_order_retry_after_refresh_goes_first() -> None:
    h = Harness(
        shards=even_shards(1),
        config=ProducerConfig(preserve_order=True, aggregation_enabled=False),
    )
    for i in range(4):
        h.put(f"{i}".encode(), "same")
    h.core.flush(h.now)
    (first,) = h.poll().requests
    h.answer(first, inject=lambda _e, _i: "ResourceInUseException")
    h.run()
    assert [d for _s, _k, d, _ in h.user_records_stored()] == [b"0", b"1", b"2", b"3"]
    assert h.outcomes[1].attempts[0].error_code == "ResourceInUseException"


# --- the decisions alone (Mispredictions, no core) ----------------------------------------


def _user_records(hash_keys: list[int]) -> list[UserRecord]:
    return [(b"d", f"k{i}", None, h, f"handle{i}", 0.5 * i, i + 1, 3)
            for i, h in enumerate(hash_keys)]


def test_a_known_answering_shard_keeps_what_it_owns_and_sends_the_rest_again() -> None:
    half = HASH_KEY_SPACE // 2
    shard_map = ShardMap([("shardId-a", 0, half - 1), ("shardId-b", half, MAX_HASH_KEY)])
    records = _user_records([half, 5, half + 1, 7])
    ok = Attempt(1.0, 1.2, True, None, None)
    mispredictions = Mispredictions(preserve_order=True)
    delivered, again = mispredictions.landed(records, "shardId-b", "42", ok, 1.2, shard_map)
    assert delivered == [
        (records[0], "shardId-b", "42", 0, ok), (records[2], "shardId-b", "42", 2, ok),
    ]
    assert [r for r, _ in again] == [records[1], records[3]]
    for _, attempt in again:
        assert attempt == Attempt(
            1.0, 1.2, False, MISPREDICTED,
            "aggregated record landed on shardId-b, outside this record's hash key",
        )
    assert mispredictions.reorder  # preserve_order: hold everything until a new map
    assert not mispredictions.unverified


def test_an_unknown_answering_shard_holds_the_records_until_a_map_knows_it() -> None:
    half = HASH_KEY_SPACE // 2
    stale = ShardMap([("shardId-a", 0, MAX_HASH_KEY)])
    records = _user_records([1, half + 1])
    ok = Attempt(0.0, 0.1, True, None, None)
    mispredictions = Mispredictions(preserve_order=False)
    assert mispredictions.landed(records, "shardId-c", "9", ok, 0.1, stale) == ([], [])
    assert not mispredictions.reorder
    # A map that still does not know shardId-c decides nothing.
    assert mispredictions.confirm(stale, 0.5) == ([], [])
    assert len(mispredictions.unverified) == 2
    # One that does: shardId-c owns the upper half.
    new = ShardMap([("shardId-b", 0, half - 1), ("shardId-c", half, MAX_HASH_KEY)])
    delivered, again = mispredictions.confirm(new, 1.0)
    assert delivered == [(records[1], "shardId-c", "9", 1, ok)]
    assert again == [(records[0], Attempt(
        0.0, 1.0, False, MISPREDICTED,
        "aggregated record landed on shardId-c, outside this record's hash key",
    ))]
    assert not mispredictions.unverified


def test_a_failed_refresh_sends_every_held_record_again_and_expiry_takes_the_old() -> None:
    records = _user_records([1, 2, 3])
    ok = Attempt(0.0, 0.1, True, None, None)
    mispredictions = Mispredictions(preserve_order=False)
    mispredictions.landed(records, "shardId-z", "1", ok, 0.1, None)
    assert mispredictions.expire(0.5) == records[:2]  # arrived at 0.0 and 0.5
    (again,) = mispredictions.give_up(NetworkError("refused"), 2.0)
    record, attempt = again
    assert record == records[2]
    assert attempt.error_code == MISPREDICTED
    assert attempt.error_message is not None
    assert attempt.error_message.startswith(
        "landed on unknown shard shardId-z; shard map refresh failed: "
    )
    assert mispredictions.take_all() == []
