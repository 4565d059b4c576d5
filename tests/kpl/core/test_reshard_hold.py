"""Records put while the shard map is being refreshed wait for the new map (at most
shard_map_hold_time from the start of the hold, never less than record_max_buffered_time
after their put, never past record_ttl) so that they are aggregated with it; plain only
when the refresh fails or takes longer."""

from __future__ import annotations

import base64

import orjson

from kpl.config import ProducerConfig
from kpl.core.pipeline import RecordResult
from kpl.errors import RecordFailed
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


def test_a_slow_refresh_still_aggregates_what_was_put_meanwhile() -> None:
    """ListShards answers well after record_max_buffered_time (a busy machine): the
    records held for it are aggregated with the new map, not sent plain."""
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1, shard_map_hold_time=1.0))
    sent = len(h.sent)
    assert h.poll().refresh_shard_map
    handles = [h.put(b"%04d" % i, key) for i, key in enumerate(keys(300))]
    for _ in range(9):
        h.now += 0.1
        assert h.poll().requests == []
    h.core.set_shard_map(h.shards, h.now)  # 0.9 s after the refresh started
    h.run()
    new = entries(h, sent)
    assert len(new) <= 4
    assert all(data.startswith(MAGIC) for data in new)
    assert all(isinstance(h.outcomes[handle], RecordResult) for handle in handles)


def held_plain(h: Harness, sent: int) -> list[bytes]:
    return [data for data in entries(h, sent) if not data.startswith(MAGIC)]


def test_they_go_plain_once_the_hold_time_has_passed() -> None:
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1, shard_map_hold_time=0.5))
    sent = len(h.sent)
    h.poll()  # the refresh starts and never answers
    for key in keys(30):
        h.put(key.encode(), key)
    h.now += 0.2
    for key in [f"late-{i}" for i in range(30)]:
        h.put(key.encode(), key)
    h.now += 0.29
    assert h.poll().requests == []
    h.now += 0.01  # 0.5 s after the first was held: the later ones go with them
    h.poll()
    new = held_plain(h, sent)
    assert len(new) == 60
    assert entries(h, sent) == new


def test_a_hold_time_of_zero_waits_record_max_buffered_time_only() -> None:
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1, shard_map_hold_time=0.0))
    sent = len(h.sent)
    h.poll()
    for key in keys(30):
        h.put(key.encode(), key)
    h.now += 0.05
    assert h.poll().requests == []
    h.now += 0.05
    h.poll()
    assert len(held_plain(h, sent)) >= 30


def test_the_hold_never_outlasts_record_ttl() -> None:
    config = ProducerConfig(record_max_buffered_time=0.1, record_ttl=0.3, shard_map_hold_time=5.0)
    h = mispredicted(config)
    h.poll()
    handles = [h.put(key.encode(), key) for key in keys(10)]
    poll = h.poll()
    assert poll.deadline is not None
    assert poll.deadline <= h.now + 0.3
    h.now += 0.3
    h.poll()
    assert h.core._held == []
    h.now += 0.01
    h.run(inject=lambda entry, i: "InternalFailure")  # sent at their TTL: too late
    for handle in handles:
        outcome = h.outcomes[handle]
        assert isinstance(outcome, RecordFailed)
        assert outcome.code == "Expired"


def test_they_go_plain_at_once_when_the_refresh_fails() -> None:
    h = mispredicted()
    sent = len(h.sent)
    h.poll()
    for key in keys(30):
        h.put(key.encode(), key)
    h.core.on_shard_map_error(OSError("refused"), h.now)
    h.poll()
    # The 30 and the 50 strays the answering shard could not confirm: all plain.
    assert len(held_plain(h, sent)) == 80
    assert entries(h, sent) == held_plain(h, sent)


def test_after_a_failed_refresh_records_wait_record_max_buffered_time_only() -> None:
    """The next ListShards is an interval away: holding them for it would only delay."""
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1, shard_map_hold_time=1.0))
    h.poll()
    h.core.on_shard_map_error(OSError("refused"), h.now)
    h.run(until=h.now + 0.01)
    sent = len(h.sent)
    for key in keys(20):
        h.put(key.encode(), key)
    h.now += 0.1
    h.poll()
    assert len(held_plain(h, sent)) == 20


def test_a_mid_reshard_answer_re_holds_without_extending_the_wait() -> None:
    """ListShards answers with the map the misprediction proved out of date (the reshard
    not visible to it yet): the records stay held, the wait still counts from the first
    hold, and the next refresh waits the interval (no storm)."""
    config = ProducerConfig(record_max_buffered_time=0.1, shard_map_hold_time=0.5)
    h = mispredicted(config)
    sent = len(h.sent)
    assert h.poll().refresh_shard_map
    for key in keys(30):
        h.put(key.encode(), key)
    h.now += 0.3
    h.core.set_shard_map(even_shards(1), h.now)  # still the one parent shard
    assert h.core._refresh.wanted
    assert not h.core._fresh
    assert held_plain(h, sent) == []
    h.now += 0.19
    assert not h.poll().refresh_shard_map
    assert entries(h, sent) == []
    h.now += 0.01  # 0.5 s after the hold began, not after the answer
    assert not h.poll().refresh_shard_map
    assert len(held_plain(h, sent)) == 30
    refreshes = 0
    while h.now < 5.3 + config.shard_map_refresh_min_interval:
        h.now += 0.05
        refreshes += h.poll().refresh_shard_map
    assert refreshes == 1


def test_a_throttled_aggregate_of_a_replaced_shard_is_aggregated_again() -> None:
    """Its shard was split while it was in flight: the retry goes out aggregated by the
    new map, not as one plain Kinesis record per user record."""
    h = Harness(shards=even_shards(2, first=1), core_map=even_shards(1))
    handles = [h.put(b"%04d" % i, key) for i, key in enumerate(keys(300))]
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.core.set_shard_map(h.shards, h.now)  # the new map comes first
    h.now += 0.01
    h.answer(request, inject=lambda entry, i: "ProvisionedThroughputExceededException")
    sent = len(h.sent)
    h.run()
    new = entries(h, sent)
    assert len(new) == 2
    assert all(data.startswith(MAGIC) for data in new)
    for handle, key in zip(handles, keys(300), strict=True):
        outcome = h.outcomes[handle]
        assert isinstance(outcome, RecordResult)
        assert outcome.shard_id == h.true_map.shard_id_for(hash_key_for(key))


def test_while_a_refresh_is_pending_it_waits_for_the_new_map() -> None:
    h = Harness(shards=even_shards(2, first=1), core_map=even_shards(1))
    h.now = 5.0
    for i, key in enumerate(keys(300)):
        h.put(b"%04d" % i, key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.core.set_shard_map(h.shards, h.now)  # its shard is replaced...
    h.core._invalidate_map()  # ...and a refresh is pending when the throttle comes back
    h.now += 0.01
    h.answer(request, inject=lambda entry, i: "ProvisionedThroughputExceededException")
    sent = len(h.sent)
    assert h.poll().refresh_shard_map
    h.now += 0.5
    assert h.poll().requests == []
    h.core.set_shard_map(h.shards, h.now)
    h.run()
    new = entries(h, sent)
    assert len(new) == 2
    assert all(data.startswith(MAGIC) for data in new)
    assert len(h.outcomes) == 300


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
    assert len(entries(h, sent)) == 10 + 50  # and the strays no map confirmed


def test_the_poll_deadline_covers_the_wait_for_a_new_map() -> None:
    """Nothing else due: poll() still asks to be called when held records must go."""
    h = mispredicted(ProducerConfig(record_max_buffered_time=0.1, shard_map_hold_time=0.4))
    h.poll()  # the refresh starts and never answers
    h.put(b"x", "k")
    poll = h.poll()
    assert poll.deadline is not None
    assert poll.deadline <= h.now + 0.4


def test_once_the_next_refresh_starts_records_wait_for_it_again() -> None:
    config = ProducerConfig(record_max_buffered_time=0.1, shard_map_hold_time=1.0)
    h = mispredicted(config)
    h.poll()
    h.core.on_shard_map_error(OSError("refused"), h.now)
    h.now += config.shard_map_refresh_min_interval
    h.run(until=h.now)
    assert h.poll().refresh_shard_map  # the next try
    sent = len(h.sent)
    for key in keys(20):
        h.put(key.encode(), key)
    h.now += 0.5
    assert h.poll().requests == []
    h.core.set_shard_map(h.shards, h.now)
    h.run()
    new = entries(h, sent)
    assert new
    assert all(data.startswith(MAGIC) for data in new)


def test_without_aggregation_a_replaced_shards_retry_keeps_its_backoff() -> None:
    config = ProducerConfig(aggregation_enabled=False, record_max_buffered_time=0.0,
                            min_backoff=0.5, max_backoff=0.5)
    h = Harness(config=config, shards=even_shards(2, first=1), core_map=even_shards(1))
    for key in keys(10):
        h.put(key.encode(), key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.core.set_shard_map(h.shards, h.now)
    h.now += 0.01
    h.answer(request, inject=lambda entry, i: "ProvisionedThroughputExceededException")
    poll = h.poll()
    assert poll.requests == []  # not before the backoff
    assert poll.deadline is not None
    assert poll.deadline > h.now
    h.run()
    assert all(isinstance(outcome, RecordResult) for outcome in h.outcomes.values())
    assert len(h.outcomes) == 10
