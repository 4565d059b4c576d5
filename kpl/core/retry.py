"""Retry policy: error code -> RETRY / RETRY_AFTER_REFRESH / FAIL, and backoff.

The decision for every code lives in ONE table, :data:`ACTIONS`, built once from the
error classes of :mod:`kpl.errors` (each class states ``retryable`` and
``refresh_shard_map``); :func:`classify` reads it. Codes nobody registered are retried
when the service said 5xx and failed otherwise. ``fail_if_throttled`` turns every
throttling code into FAIL.

Backoff is exponential with jitter drawn from an injected :class:`random.Random`:

* ``full``: ``uniform(0, min(max, min_backoff * 2**(attempt-1)))`` — spreads retries
  widely (AWS architecture blog, "Exponential Backoff And Jitter");
* ``decorrelated``: ``min(max, uniform(min_backoff, 3 * previous))``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from types import MappingProxyType

from kpl.config import Jitter
from kpl.errors import KinesisError

__all__ = ["ACTIONS", "Action", "Backoff", "action_for_error", "classify", "error_parts"]


class Action(enum.Enum):
    """What to do with a record whose attempt failed."""

    RETRY = "retry"
    RETRY_AFTER_REFRESH = "retry_after_refresh"
    FAIL = "fail"


def _action_of(cls: type[KinesisError]) -> Action:
    if not cls.retryable:
        return Action.FAIL
    return Action.RETRY_AFTER_REFRESH if cls.refresh_shard_map else Action.RETRY


#: The one table: wire code -> action (throttling codes are listed in THROTTLING_CODES).
ACTIONS: Mapping[str, Action] = MappingProxyType(
    {code: _action_of(cls) for code, cls in sorted(KinesisError.registered().items())}
)
THROTTLING_CODES: frozenset[str] = frozenset(
    code for code, cls in KinesisError.registered().items() if cls.throttling
)


def classify(code: str, *, status: int = 400, fail_if_throttled: bool = False) -> Action:
    """The action for an error code (``status`` decides codes not in the table)."""
    action = ACTIONS.get(code)
    if action is None:
        return Action.RETRY if status >= 500 else Action.FAIL
    if fail_if_throttled and code in THROTTLING_CODES:
        return Action.FAIL
    return action


def action_for_error(error: BaseException, *, fail_if_throttled: bool = False) -> Action:
    """The action for a whole-request failure; non-Kinesis exceptions are bugs: FAIL."""
    if isinstance(error, KinesisError):
        return classify(
            error.error_code, status=error.http_status, fail_if_throttled=fail_if_throttled
        )
    return Action.FAIL


class Backoff:
    """Retry delays: exponential from ``minimum`` to ``maximum`` with random jitter."""

    __slots__ = ("jitter", "maximum", "minimum", "rng")

    def __init__(self, minimum: float, maximum: float, jitter: Jitter, rng: random.Random) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.jitter = jitter
        self.rng = rng

    def delay(self, attempt: int, previous: float = 0.0) -> float:
        """The wait before retry number ``attempt`` (1 = first retry).

        ``previous`` is the last delay used, for decorrelated jitter.
        """
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        if self.jitter == "decorrelated":
            upper = max(self.minimum, 3.0 * previous)
            return min(self.maximum, self.rng.uniform(self.minimum, upper))
        # Cap the exponent: 2**60 seconds is already far past any maximum.
        cap = min(self.maximum, self.minimum * 2.0 ** min(attempt - 1, 60))
        return self.rng.uniform(0.0, cap)


def error_parts(error: BaseException, code: str | None = None) -> tuple[str, str, int]:
    """The code, message and HTTP status a failed record reports for ``error``: a Kinesis
    error's own; for anything else ``code`` (its class name by default), its text (or
    class name) and status 0."""
    if isinstance(error, KinesisError):
        return error.error_code, error.message, error.http_status
    return code or type(error).__name__, str(error) or type(error).__name__, 0

