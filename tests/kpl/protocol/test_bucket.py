"""The token bucket both sides count with: plain functions, a fake clock."""

from __future__ import annotations

import pytest

from kpl.protocol.bucket import TokenBucket

T0 = 1_800_000_000.0  # an epoch timestamp, as the server's clock gives


def test_take_and_delay() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10.0, now=0.0)
    assert bucket.take(10, 0.0) == 0.0
    assert bucket.take(1, 0.0) == pytest.approx(0.1)
    assert bucket.tokens == 0.0  # a refused take takes nothing
    assert bucket.take(5, 0.5) == 0.0
    assert bucket.take(1, 0.5) == pytest.approx(0.1)


def test_refill_caps_at_capacity() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10.0, now=0.0)
    assert bucket.delay(1, 100.0) == 0.0
    assert bucket.tokens == 10.0
    assert bucket.take(10, T0) == 0.0
    assert bucket.refill(T0 + 1000) == 10.0


def test_starts_full_and_refills_continuously() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10.0, now=T0)
    assert bucket.take(10, T0) == 0.0
    assert bucket.delay(1, T0) > 0
    assert bucket.delay(1, T0 + 0.09) > 0
    assert bucket.delay(1, T0 + 0.1, slack=1e-6) == 0.0


def test_oversized_take_passes_when_full_and_goes_negative() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10.0, now=0.0)
    assert bucket.take(25, 0.0) == 0.0
    assert bucket.tokens == -15.0
    assert bucket.take(1, 0.0) == pytest.approx(1.6)


def test_oversized_take_needs_a_full_bucket() -> None:
    bucket = TokenBucket(rate=100.0, capacity=100.0, now=T0)
    assert bucket.take(1, T0) == 0.0
    assert bucket.take(300, T0) > 0
    assert bucket.take(300, T0 + 0.01, slack=1e-6) == 0.0  # full again
    assert bucket.tokens == pytest.approx(-200)
    assert bucket.delay(1, T0 + 2.0, slack=1e-6) > 0
    assert bucket.delay(1, T0 + 2.02, slack=1e-6) == 0.0


def test_slack_admits_a_request_made_exactly_on_time() -> None:
    # 0.1 s after an epoch timestamp is not exactly 0.1 s later in floating point.
    strict = TokenBucket(rate=10.0, capacity=1.0, now=T0)
    lenient = TokenBucket(rate=10.0, capacity=1.0, now=T0)
    for bucket in (strict, lenient):
        assert bucket.take(1, T0) == 0.0
    on_time = T0 + 0.1
    assert (on_time - T0) * 10.0 < 1.0
    assert strict.delay(1, on_time) > 0
    assert lenient.delay(1, on_time, slack=1e-6) == 0.0


def test_charge_goes_into_debt() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, now=0.0)
    bucket.charge(8, 0.0)
    assert bucket.tokens == -6.0
    assert bucket.delay(1, 3.0) == pytest.approx(0.5)
    assert bucket.refill(3.5) == 1.0


def test_a_clock_that_steps_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1.0, capacity=1.0, now=T0)
    assert bucket.take(1, T0) == 0.0
    assert bucket.refill(T0 - 50) == 0
    assert bucket.updated == T0
    assert bucket.take(1, T0 + 1, slack=1e-6) == 0.0


@pytest.mark.parametrize(("rate", "capacity"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_rejects_nonsense(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate, capacity, 0.0)


def test_set_rate_refills_at_the_old_rate_then_changes_rate_and_capacity() -> None:
    bucket = TokenBucket(10.0, 10.0, 0.0)
    bucket.take(10, 0.0)
    bucket.set_rate(100.0, 5.0, 0.2)  # 2 tokens came back at the old rate
    assert bucket.tokens == 2.0
    assert bucket.delay(5, 0.2) == 3.0 / 100.0
    bucket.set_rate(1.0, 1.0, 10.0)  # full at 5, dropped to the new capacity
    assert bucket.tokens == 1.0
    bucket.charge(3, 10.0)
    bucket.set_rate(2.0, 2.0, 10.0)  # debt is kept
    assert bucket.tokens == -2.0
