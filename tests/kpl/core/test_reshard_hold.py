"""Records put while the shard map is being refreshed wait for the new map (bounded by
record_max_buffered_time) so that they are aggregated with it; plain only when the
refresh fails or takes longer."""

from __future__ import annotations

import base64

import orjson

from kpl.config import ProducerConfig
from kpl.core.pipeline import RecordResult
from kpl.protocol.aggregation import MAGIC
from kpl.protocol.hashing import hash_key_for
from tests.kpl.core.harness import Harness, even_shards, keys


def mispredicted(config: ProducerConfig | None = None) -> Harness:
    """A core whose one-shard map is out of date (the stream has two children), after a
    delivery that told it so: a refresh of the map is pending."""
    h = Harness(config=config or ProducerConfig(), shards=even_shards(2, first=1),
                core_map=even_shards(1))
    h.now = 5.0  # the map is older than shard_map_refresh_min_interval
    for key in keys(50):
        h.put(key.encode(), key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request)
    assert h.core.metrics()["ShardMapMispredictions"] == 1
    assert not h.core._fresh
    return h


def entries(h: Harness, skip: int) -> list[bytes]:
    return [base64.b64decode(e["Data"]) for request in h.sent[skip:]
            for e in orjson.loads(request.body)["Records"]]


def test_records_put_during_a_refresh_are_aggregated_with_the_new_map() -> None:
    h = mispredicted()
    sent = len(h.sent)
    names = keys(400)
    handles = [h.put(b"%04d" % i, key) for i, key in enumerate(names)]
    poll = h.poll()
    assert poll.refresh_shard_map
    assert entries(h, sent) == []  # nothing of them left plain
    h.now += 0.01  # ListShards answers within record_max_buffered_time
    h.core.set_shard_map(h.shards, h.now)
    h.run()
    new = entries(h, sent)
    # The 400 records (and the 50 stray ones sent again) in a few aggregated records.
    assert len(new) <= 4
    assert all(data.startswith(MAGIC) for data in new)
    for handle, key in zip(handles, names, strict=True):
        outcome = h.outcomes[handle]
        assert isinstance(outcome, RecordResult)
        assert outcome.shard_id == h.true_map.shard_id_for(hash_key_for(key))
        assert len(outcome.attempts) == 1  # no throttled or mispredicted tries


def test_they_go_plain_once_record_max_buffered_time_has_passed() -> None:
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1))
    sent = len(h.sent)
    h.poll()  # the refresh starts and never answers
    for key in keys(30):
        h.put(key.encode(), key)
    h.now += 0.05
    assert h.poll().requests == []
    h.now += 0.05
    h.poll()
    new = entries(h, sent)
    assert len(new) == 30
    assert not any(data.startswith(MAGIC) for data in new)


def test_they_go_plain_at_once_when_the_refresh_fails() -> None:
    h = mispredicted()
    sent = len(h.sent)
    h.poll()
    for key in keys(30):
        h.put(key.encode(), key)
    h.core.on_shard_map_error(OSError("refused"), h.now)
    h.poll()
    assert len(entries(h, sent)) == 30


def test_close_fails_held_records_too() -> None:
    h = mispredicted()
    h.poll()
    handles = [h.put(key.encode(), key) for key in keys(10)]
    h._resolve(h.core.fail_all(OSError("closing"), h.now))
    assert all(handle in h.outcomes for handle in handles)
    assert h.core.buffered_records == 0


def test_a_refresh_that_changed_nothing_makes_the_next_one_wait_the_interval() -> None:
    h = mispredicted()
    assert h.poll().refresh_shard_map  # at once: the last map installed was a change
    h.now += 0.01
    h.core.set_shard_map(even_shards(1), h.now)  # ListShards lags: the same old map
    assert h.core._refresh.wanted  # the delivery is still unexplained
    refreshed_at = h.now
    while not h.poll().refresh_shard_map:
        h.now += 0.05
    assert h.now >= refreshed_at + h.core.config.shard_map_refresh_min_interval - 1e-9


def test_a_delivery_the_current_map_explains_asks_for_no_refresh() -> None:
    """Answers to records built for a map replaced since say nothing about the new one."""
    h = Harness(shards=even_shards(2, first=1), core_map=even_shards(1))
    h.now = 5.0
    for key in keys(50):
        h.put(key.encode(), key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.core.set_shard_map(h.shards, h.now)  # the new map arrives first
    h.answer(request)
    assert h.core.metrics()["ShardMapMispredictions"] == 1
    assert h.core._fresh
    assert not h.poll().refresh_shard_map


def test_records_flushed_before_a_map_arrives_leave_with_it() -> None:
    """flush() before the first map: the records routed when it comes are still due."""
    h = Harness(config=ProducerConfig(record_max_buffered_time=60.0, record_ttl=120.0),
                core_map=None)
    handles = [h.put(key.encode(), key) for key in keys(20)]
    h.poll()  # the first ListShards starts
    h.core.flush(h.now)
    assert h.poll().requests == []  # held for the map
    h.now += 0.01
    h.core.set_shard_map(h.shards, h.now)
    requests = h.poll().requests
    assert sum(r.user_record_count for r in requests) == 20
    for request in requests:
        h.answer(request)
    assert all(isinstance(h.outcomes[handle], RecordResult) for handle in handles)


def test_held_records_released_plain_after_a_flush_leave_at_once() -> None:
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1))
    sent = len(h.sent)
    h.poll()
    for key in keys(10):
        h.put(key.encode(), key)
    h.core.flush(h.now)
    h.core.on_shard_map_error(OSError("refused"), h.now)
    h.poll()
    assert len(entries(h, sent)) == 10


def test_the_poll_deadline_covers_the_wait_for_a_new_map() -> None:
    """Nothing else due: poll() still asks to be called when held records must go."""
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1))
    h.poll()  # the refresh starts and never answers
    h.put(b"x", "k")
    poll = h.poll()
    assert poll.deadline is not None
    assert poll.deadline <= h.now + 0.1
