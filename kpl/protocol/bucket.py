"""A token bucket refilled continuously: pure arithmetic on ``now``.

``rate`` tokens come back every second, up to ``capacity``; a new bucket starts full.
The producer paces itself per shard with these buckets and the server enforces the
service's per-shard and control-plane rates with the same ones, so both sides count
the same way.

Rules:

* ``take(n, now)`` either takes ``n`` tokens and returns 0.0, or takes nothing and
  returns the seconds until it could; ``delay`` is the same question without taking.
* A request larger than the whole bucket passes once the bucket is full and leaves it in
  debt (``tokens`` below zero): an oversized request is slowed, never refused forever,
  and the average stays at ``rate``.
* ``charge`` takes unconditionally (a cost known only afterwards, such as the bytes a
  read returned), possibly into debt.
* A clock that steps back refills nothing and never takes back a refill.
* ``slack`` counts that many seconds of refill as already there: a caller whose ``now``
  is a large epoch timestamp (about 0.2 us of float precision) uses it so that a request
  made exactly on time is not refused by rounding.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity``; starts full at ``now``."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if not (rate > 0 and capacity > 0):
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        #: Tokens available at ``updated`` (negative: debt).
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> float:
        """Bring ``tokens`` up to ``now`` and return it."""
        if now > self.updated:
            tokens = self.tokens + (now - self.updated) * self.rate
            self.tokens = tokens if tokens < self.capacity else self.capacity
            self.updated = now
        return self.tokens

    def delay(self, n: float, now: float, slack: float = 0.0) -> float:
        """Seconds until ``n`` tokens can be taken (0.0: now). Takes nothing."""
        tokens = self.refill(now)
        if slack:
            tokens += self.rate * slack
        need = n if n < self.capacity else self.capacity
        if tokens >= need:
            return 0.0
        return (need - tokens) / self.rate

    def take(self, n: float, now: float, slack: float = 0.0) -> float:
        """Take ``n`` tokens and return 0.0, or take none and return the wait in seconds."""
        wait = self.delay(n, now, slack)
        if wait == 0.0:
            self.tokens -= n
        return wait

    def charge(self, n: float, now: float) -> None:
        """Take ``n`` tokens unconditionally, into debt if need be."""
        self.refill(now)
        self.tokens -= n

    def set_rate(self, rate: float, capacity: float, now: float) -> None:
        """Refill at the old rate up to ``now``, then change the rate and the capacity
        (tokens above the new capacity are dropped; debt is kept)."""
        if not (rate > 0 and capacity > 0):
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.refill(now)
        self.rate = rate
        self.capacity = capacity
        if self.tokens > capacity:
            self.tokens = capacity
