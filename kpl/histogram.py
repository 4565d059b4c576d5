"""Latencies in logarithmic buckets: about 1 % relative error, memory bounded by the
bucket count rather than the run's length; the count, sum and maximum are exact."""

from __future__ import annotations

import math
from typing import Final

__all__ = ["LatencyHistogram"]

#: Relative width of one latency bucket.
_BUCKET_GROWTH: Final = 1.01
_LOG_GROWTH: Final = math.log(_BUCKET_GROWTH)
_INV_LOG_GROWTH: Final = 1 / _LOG_GROWTH
#: Latencies below this (seconds) share bucket 0; nothing real is that fast.
_MIN_LATENCY_S: Final = 1e-6
_LOG_MIN_SCALED: Final = math.log(_MIN_LATENCY_S) * _INV_LOG_GROWTH


class LatencyHistogram:
    """Latencies (seconds) in log buckets ~1 % wide; exact count, sum and maximum."""

    __slots__ = ("_buckets", "count", "maximum", "total")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0

    @staticmethod
    def _upper(index: int) -> float:
        return float(_MIN_LATENCY_S * _BUCKET_GROWTH**index)

    def add(self, value: float, weight: int = 1) -> None:
        """Record one latency in seconds (negative values count as zero), standing for
        ``weight`` records (a sample of one in ``weight``)."""
        # Called once per acknowledged record: one log, one dict update.
        if value > _MIN_LATENCY_S:
            index = 1 + int(math.log(value) * _INV_LOG_GROWTH - _LOG_MIN_SCALED)
        else:
            index = 0
            value = max(0.0, value)
        buckets = self._buckets
        buckets[index] = buckets.get(index, 0) + weight
        self.count += weight
        self.total += value * weight
        if value > self.maximum:
            self.maximum = value

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of ``other`` to this histogram."""
        for index, n in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) in seconds; 0.0 when empty.

        Reported as the upper edge of the bucket holding the sample of that rank, capped
        at the exact maximum, so it overstates by at most one bucket (~1 %).
        """
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within 0-100, got {p}")
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(self._upper(index), self.maximum)
        return self.maximum  # pragma: no cover - ranks never exceed the count

    @property
    def mean(self) -> float:
        """Mean latency in seconds (0.0 when empty)."""
        return self.total / self.count if self.count else 0.0
