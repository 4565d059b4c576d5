"""Fault injection for testing producers: failed entries, failed requests, added latency.

Theory of operation
-------------------
All decisions draw from the engine's ``random.Random`` (seed it with ``--seed`` for a
repeatable run), so this module never reads a clock and never sleeps; the web layer
sleeps the latency it is given.

* Each PutRecord/PutRecords entry that passed the real throughput limits draws once:
  with probability ``throttle_rate`` it fails with
  ``ProvisionedThroughputExceededException``, with probability ``internal_failure_rate``
  with ``InternalFailure``, otherwise it is written. One draw split into two intervals
  keeps the two probabilities exact, so their sum may be at most 1.
* Each request (any action) first gets a latency drawn uniformly from
  ``latency_ms = (low, high)`` and then, with probability ``error_rate``, answers a whole
  500 ``InternalFailure`` instead of running.

Nothing is injected by default (:attr:`FaultSettings.active` is ``False``, and the
server then builds no injector at all).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["FaultSettings", "Faults", "InjectedFault", "parse_latency_ms"]

_THROTTLED = "ProvisionedThroughputExceededException"
_INTERNAL = "InternalFailure"


def parse_latency_ms(text: str) -> tuple[float, float]:
    """``"N"`` or ``"N-M"`` milliseconds as ``(low, high)``; ``ValueError`` if malformed."""
    low_text, sep, high_text = text.strip().partition("-")
    try:
        low = float(low_text)
        high = float(high_text) if sep else low
    except ValueError:
        raise ValueError(f"latency must be N or N-M milliseconds, got {text!r}") from None
    check_latency_ms((low, high))
    return low, high


def check_latency_ms(latency: tuple[float, float]) -> None:
    """Refuse a negative, non-finite or inverted latency range."""
    low, high = latency
    if not (0 <= low <= high < float("inf")):
        raise ValueError(f"latency must satisfy 0 <= N <= M, got {low:g}-{high:g} ms")


def check_rate(name: str, value: float) -> None:
    """Refuse a probability outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """What to inject; every field defaults to nothing."""

    throttle_rate: float = 0.0
    """Probability that a PutRecords entry fails with ProvisionedThroughputExceededException."""
    internal_failure_rate: float = 0.0
    """Probability that a PutRecords entry fails with InternalFailure."""
    error_rate: float = 0.0
    """Probability that a whole request answers 500 InternalFailure."""
    latency_ms: tuple[float, float] = (0.0, 0.0)
    """Added response latency, uniform in ``[low, high]`` milliseconds."""

    def __post_init__(self) -> None:
        check_rate("throttle_rate", self.throttle_rate)
        check_rate("internal_failure_rate", self.internal_failure_rate)
        check_rate("error_rate", self.error_rate)
        if self.throttle_rate + self.internal_failure_rate > 1.0:
            raise ValueError(
                "throttle_rate + internal_failure_rate must be at most 1, got "
                f"{self.throttle_rate + self.internal_failure_rate}"
            )
        check_latency_ms(self.latency_ms)

    @property
    def active(self) -> bool:
        """Whether anything is injected at all."""
        return bool(
            self.throttle_rate
            or self.internal_failure_rate
            or self.error_rate
            or self.latency_ms[1]
        )


@dataclass(slots=True)
class InjectedFault:
    """A :class:`~server.core.hooks.RequestFault`: latency and/or a whole-request error."""

    delay_seconds: float
    error_code: str | None


class Faults:
    """The engine's :class:`~server.core.hooks.FaultInjector` for :class:`FaultSettings`."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._throttle = settings.throttle_rate
        self._failure_edge = settings.throttle_rate + settings.internal_failure_rate

    def entry_error(self, rng: random.Random) -> str | None:
        """One draw per entry: throttled, internal failure, or nothing."""
        if not self._failure_edge:
            return None
        draw = rng.random()
        if draw < self._throttle:
            return _THROTTLED
        if draw < self._failure_edge:
            return _INTERNAL
        return None

    def request_fault(self, action: str, rng: random.Random) -> InjectedFault | None:
        """Latency (uniform in the range) and, with ``error_rate``, a 500 InternalFailure."""
        low, high = self.settings.latency_ms
        delay = (low if low == high else rng.uniform(low, high)) / 1000.0
        error = (
            _INTERNAL
            if self.settings.error_rate and rng.random() < self.settings.error_rate
            else None
        )
        if delay <= 0 and error is None:
            return None
        return InjectedFault(delay, error)
