"""The fan-out subscription cursor, sans IO: starting positions, renewals, shard end, back-off."""

from __future__ import annotations

import random

from kpl.consumer.core.reading import StartingPosition, starting_position
from kpl.consumer.core.subscribing import SubscriptionCursor


def test_the_first_subscription_starts_at_the_checkpoint() -> None:
    start = starting_position("49000000000000000000000000000000000000000000000000000012", 3)
    assert start is not None
    cursor = SubscriptionCursor(start)
    assert cursor.starting_position() == {
        "Type": "AT_SEQUENCE_NUMBER",
        "SequenceNumber": "49000000000000000000000000000000000000000000000000000012",
    }


def test_fresh_leases_start_at_their_sentinel() -> None:
    assert SubscriptionCursor(StartingPosition("TRIM_HORIZON")).starting_position() == {
        "Type": "TRIM_HORIZON"
    }
    assert SubscriptionCursor(StartingPosition("LATEST")).starting_position() == {
        "Type": "LATEST"
    }
    at = SubscriptionCursor(StartingPosition("AT_TIMESTAMP", timestamp=1_700_000_000.5))
    assert at.starting_position() == {"Type": "AT_TIMESTAMP", "Timestamp": 1_700_000_000.5}


def test_renewals_continue_after_the_last_continuation() -> None:
    cursor = SubscriptionCursor(StartingPosition("TRIM_HORIZON"))
    assert cursor.on_event({"Records": [{}], "ContinuationSequenceNumber": "17"}) is False
    assert cursor.on_event({"Records": [], "ContinuationSequenceNumber": "18"}) is False
    assert cursor.starting_position() == {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "18"}
    assert not cursor.ended


def test_an_event_without_continuation_is_the_shard_end() -> None:
    cursor = SubscriptionCursor(StartingPosition("LATEST"))
    cursor.on_event({"Records": [], "ContinuationSequenceNumber": "5"})
    ended = cursor.on_event({"Records": [], "ChildShards": [{"ShardId": "shardId-000000000002"}]})
    assert ended is True
    assert cursor.ended


def test_calls_are_a_second_apart() -> None:
    cursor = SubscriptionCursor(StartingPosition("LATEST"))
    assert cursor.delay(10.0) == 0.0
    cursor.on_subscribe(10.0)
    # A subscription that ended at once is renewed no sooner than a second after its call.
    cursor.on_event({"Records": [], "ContinuationSequenceNumber": "3"})
    assert cursor.delay(10.25) == 0.75
    assert cursor.delay(11.0) == 0.0
    # Five minutes later, at once.
    assert cursor.delay(310.0) == 0.0


def test_refusals_back_off_exponentially_and_an_event_ends_the_back_off() -> None:
    cursor = SubscriptionCursor(
        StartingPosition("LATEST"), backoff_base=0.2, backoff_max=1.0, rng=random.Random(3),
        calls_per_second=1000,
    )
    assert cursor.delay(100.0) == 0.0
    ceilings = []
    now = 100.0
    for _ in range(5):
        at = cursor.on_failure(now)
        ceilings.append(at - now)
        assert cursor.delay(now) == at - now
        now = at
    # Jitter over the upper half of 0.2, 0.4, 0.8, 1.0, 1.0.
    for waited, ceiling in zip(ceilings, [0.2, 0.4, 0.8, 1.0, 1.0], strict=True):
        assert ceiling / 2 <= waited <= ceiling
    assert cursor.failures == 5
    cursor.on_event({"Records": [], "ContinuationSequenceNumber": "1"})
    assert cursor.failures == 0
    assert cursor.on_failure(now) - now <= 0.2
