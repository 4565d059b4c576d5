"""One shard's enhanced fan-out subscriptions, sans IO: where each starts, when to retry.

A shard is read through a chain of SubscribeToShard subscriptions: the service ends each
after five minutes (or when the connection drops, or another subscription of the same
consumer takes the shard over), and the reader subscribes again where the last one
stopped. :class:`SubscriptionCursor` keeps that place:

- the first subscription of a lease term starts where the term starts (the
  :class:`~kpl.consumer.core.reading.StartingPosition` of the lease's checkpoint: a
  sentinel, or AT_SEQUENCE_NUMBER of the checkpointed record, whose processed
  sub-records the :class:`~kpl.consumer.core.reading.ShardCursor` skips);
- every event names a ``ContinuationSequenceNumber`` (its last record, or where an idle
  subscription stands); the next subscription starts AFTER_SEQUENCE_NUMBER of the last
  one seen, so nothing is repeated or skipped across subscriptions;
- an event without one (it carries ``ChildShards``) is the shard's end;
- a refused or failed subscription (``ResourceInUseException`` while another
  subscription of the consumer still holds the shard, throttles, a dropped connection)
  is tried again after an exponential back-off with jitter; the first event ends it;
- calls are spaced by at least a second (the service takes one SubscribeToShard call a
  second per consumer and shard).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from kpl.consumer.core.reading import AFTER_SEQUENCE_NUMBER, StartingPosition
from kpl.protocol.limits import SUBSCRIBE_TO_SHARD_CALLS_PER_SECOND

__all__ = ["SubscriptionCursor"]


class SubscriptionCursor:
    """Where one shard's next subscription starts, and when (times on the caller's clock)."""

    def __init__(
        self,
        start: StartingPosition,
        *,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        calls_per_second: float = SUBSCRIBE_TO_SHARD_CALLS_PER_SECOND,
        rng: random.Random | None = None,
    ) -> None:
        self._start = start
        self._spacing = 1.0 / calls_per_second
        self._last_call = float("-inf")
        #: The last ContinuationSequenceNumber received (``None`` before the first).
        self.continuation: str | None = None
        #: Whether the shard's end was reached (no more subscriptions).
        self.ended = False
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()
        self._failures = 0
        self._next = float("-inf")

    @property
    def failures(self) -> int:
        """Subscriptions refused or failed since the last event."""
        return self._failures

    def starting_position(self) -> dict[str, Any]:
        """SubscribeToShard's ``StartingPosition`` for the next subscription."""
        if self.continuation is not None:
            return {"Type": AFTER_SEQUENCE_NUMBER, "SequenceNumber": self.continuation}
        start = self._start
        position: dict[str, Any] = {"Type": start.iterator_type}
        if start.sequence_number is not None:
            position["SequenceNumber"] = start.sequence_number
        if start.timestamp is not None:
            position["Timestamp"] = start.timestamp
        return position

    def on_subscribe(self, now: float) -> None:
        """A SubscribeToShard call starts now."""
        self._last_call = now

    def on_event(self, event: Mapping[str, Any]) -> bool:
        """An event arrived; returns whether it is the shard's last."""
        self._failures = 0
        continuation = event.get("ContinuationSequenceNumber")
        if continuation is None:
            self.ended = True
        else:
            self.continuation = str(continuation)
        return self.ended

    def on_failure(self, now: float) -> float:
        """A subscription was refused or broke off; returns when to try again."""
        self._failures += 1
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (self._failures - 1))
        self._next = now + ceiling * self._rng.uniform(0.5, 1.0)
        return self._next

    def delay(self, now: float) -> float:
        """Seconds to wait before subscribing again (0 at once)."""
        return max(0.0, self._next - now, self._last_call + self._spacing - now)
