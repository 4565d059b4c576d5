"""The adaptive per-shard rate (ShardLimiter) on a fake clock against a simulated shard.

The simulated shard is the server's own accounting: a TokenBucket at the shard's real
rate holding one second of burst. The producer side sends a Kinesis record whenever its
limiter lets it, the shard decides when the record arrives (half a round trip later) and
the answer comes back a round trip after the send.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from kpl.config import ProducerConfig
from kpl.core.pipeline import ProducerCore
from kpl.core.ratelimit import MIN_SCALE, ShardLimiter
from kpl.protocol.bucket import TokenBucket
from kpl.protocol.limits import SHARD_WRITE_RECORDS_PER_SECOND as PUBLISHED
from tests.kpl.core.harness import even_shards

RTT = 0.02
TICK = 0.001


class Shard:
    """A shard whose real rate (records/s) is ``rate(now)``."""

    def __init__(self, rate: Callable[[float], float]) -> None:
        self.rate = rate
        self.bucket = TokenBucket(rate(0.0), rate(0.0), 0.0)

    def accepts(self, now: float) -> bool:
        rate = self.rate(now)
        if rate != self.bucket.rate:
            self.bucket.set_rate(rate, rate, now)
        return self.bucket.take(1, now) == 0.0


def run(limiter: ShardLimiter, shard: Shard, start: float, end: float,
        window: float) -> tuple[int, int]:
    """Send as fast as the limiter allows from ``start`` to ``end``; return (stored,
    throttled) among the records sent in the last ``window`` seconds."""
    answers: list[tuple[float, float, bool]] = []  # (answered at, sent at, stored)
    stored = throttled = 0
    now = start
    while now < end:
        while answers and answers[0][0] <= now:
            answered, sent, ok = heapq.heappop(answers)
            if ok:
                limiter.delivered(answered)
            else:
                limiter.throttled(sent, answered)
        while limiter.take(1, 100, now) == 0.0:
            ok = shard.accepts(now + RTT / 2)
            heapq.heappush(answers, (now + RTT, now, ok))
            if now >= end - window:
                stored += ok
                throttled += not ok
        now += TICK
    return stored, throttled


def test_converges_from_above_to_the_shards_real_rate() -> None:
    limiter = ShardLimiter(150.0, 0.0)  # the KPL's default ceiling: 150 % of the limit
    stored, throttled = run(limiter, Shard(lambda now: PUBLISHED), 0.0, 30.0, window=20.0)
    assert 0.9 * PUBLISHED <= stored / 20.0 <= 1.05 * PUBLISHED
    assert throttled <= 0.05 * stored
    assert 0.7 <= limiter.scale <= 1.3


def test_converges_to_a_share_of_the_limit_taken_by_others() -> None:
    """Another producer takes 60 % of the shard: this one settles near the 40 % left."""
    limiter = ShardLimiter(150.0, 0.0)
    real = 0.4 * PUBLISHED
    stored, throttled = run(limiter, Shard(lambda now: real), 0.0, 30.0, window=20.0)
    assert 0.85 * real <= stored / 20.0 <= 1.05 * real
    assert throttled <= 0.05 * stored


def test_recovers_from_below_when_the_shard_takes_more_again() -> None:
    limiter = ShardLimiter(150.0, 0.0)
    busy = 0.1 * PUBLISHED
    shard = Shard(lambda now: busy if now < 10.0 else PUBLISHED)
    run(limiter, shard, 0.0, 10.0, window=0.0)
    assert limiter.scale < 0.2  # cut down to what the busy shard took
    stored, throttled = run(limiter, shard, 10.0, 40.0, window=20.0)
    assert 0.9 * PUBLISHED <= stored / 20.0 <= 1.05 * PUBLISHED
    assert throttled <= 0.05 * stored


def busy(limiter: ShardLimiter, now: float) -> ShardLimiter:
    """``limiter`` with its byte bucket empty at ``now``: its rate paces the sends."""
    limiter.bytes.charge(limiter.bytes.refill(now), now)
    return limiter


def test_a_throttle_cuts_nothing_while_the_rate_paces_nothing() -> None:
    """Well below its rate the producer is not what fills the shard (others are, or the
    refusal is not about the rate): a lower rate would not send less."""
    limiter = ShardLimiter(150.0, 0.0)
    limiter.take(1, 100_000, 1.0)
    limiter.throttled(1.0, 1.02)
    assert limiter.scale == 1.5
    assert limiter.throttles == 0
    busy(limiter, 1.03).throttled(1.01, 1.03)
    assert limiter.scale == 1.5 * 0.75


def test_never_above_the_ceiling_nor_below_the_floor() -> None:
    limiter = ShardLimiter(80.0, 0.0)
    for second in range(1, 30):
        limiter.delivered(float(second))
    assert limiter.scale == 0.8
    assert limiter.records.rate == 0.8 * PUBLISHED
    for second in range(30, 100):
        busy(limiter, second + 0.01).throttled(float(second), float(second) + 0.01)
    assert limiter.scale == MIN_SCALE
    assert limiter.records.rate == MIN_SCALE * PUBLISHED


def test_one_cut_per_round_trip() -> None:
    """Answers to records sent before the last cut say nothing about the new rate."""
    limiter = ShardLimiter(100.0, 0.0)
    busy(limiter, 1.02).throttled(1.0, 1.02)
    for sent in (1.0, 1.01, 1.019):
        busy(limiter, 1.03).throttled(sent, 1.03)
    assert limiter.scale == 0.75
    assert limiter.throttles == 1
    busy(limiter, 1.04).throttled(1.021, 1.04)  # sent after the cut: too high as well
    assert limiter.scale == 0.75 * 0.75


def test_a_reshard_gives_the_new_shards_a_fresh_rate_and_keeps_the_others() -> None:
    core = ProducerCore("s", ProducerConfig(), rng=random.Random(1))
    core.set_shard_map(even_shards(2), 0.0)
    for shard in core._shards:
        assert shard.limiter is not None
        for step in range(10):
            busy(shard.limiter, step + 0.5).throttled(float(step), step + 0.5)
    kept = core._shards[1].limiter
    assert kept is not None
    learned = kept.scale
    assert learned < 0.1
    # Split shard 0 into two children; shard 1 is unchanged.
    (_, start, end), unchanged = even_shards(2)
    middle = (start + end) // 2
    core.set_shard_map([("shardId-000000000002", start, middle),
                        ("shardId-000000000003", middle + 1, end), unchanged], 20.0)
    scales = {shard.shard_id: shard.limiter.scale for shard in core._shards
              if shard.limiter is not None}
    assert scales == {"shardId-000000000002": 1.5, "shardId-000000000003": 1.5,
                      "shardId-000000000001": learned}
    assert core._shards[2].limiter is kept
