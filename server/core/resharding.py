"""Resharding arithmetic: SplitShard and MergeShards checks, UpdateShardCount plans.

Theory of operation
-------------------
A stream's open shards always tile the hash space ``[0, 2^128 - 1]``: sorted by start,
each range begins one past the previous end, the first at 0, the last ending at
``MAX_HASH_KEY``. Every reshard keeps that true by construction:

* **SplitShard(S, K)** closes S ``[a, b]`` and opens two children ``[a, K-1]`` and
  ``[K, b]`` with ``ParentShardId = S``. The service requires ``a + 1 < K < b``.
* **MergeShards(S, T)** closes two *adjacent* open shards (one ends where the other
  begins, in either order) and opens one child over their union with
  ``ParentShardId = S`` and ``AdjacentParentShardId = T``.
* **UpdateShardCount(N, UNIFORM_SCALING)** is planned here as a sequence of such
  splits and merges, as the service says it performs them ("splits or merges on
  individual shards ... short-lived shards"), so every shard's lineage stays honest
  (a child's parents are exactly the shards whose hash keys it took over, which is what
  lets a consumer finish parents before children and keep per-key order):

  1. for every boundary of the uniform target set (``i * (2^128 // N)``) that is not
     already a boundary of the open shards, split the open shard containing it there;
  2. then, for every target range, merge the open shards inside it left to right until
     one remains.

  Doubling is then N/2 splits at the midpoints, halving N/2 pairwise merges; other
  ratios create short-lived shards (4 -> 5 makes 11 new shards, as observed on the
  service by other emulators' authors). The result is exactly the uniform set
  ``CreateStream`` would make for N shards.

The engine applies a plan and owns everything stateful (sequence numbers, storage); this
module only decides. Children always take the stream's next shard indices, in plan
order. The engine closes a parent with ``EndingSequenceNumber`` = the last sequence
number it handed out in that shard (its starting number if it never took a record).

Validation messages are the service's as recorded by other emulators (kinesalite, moto):
``Could not find shard ...``, ``NewStartingHashKey ... is not both greater than one plus
the shard's StartingHashKey ... and less than the shard's EndingHashKey ...``,
``Shards ... are not an adjacent pair of shards eligible for merging``, ``Shard ... has
already been merged or split, and thus is not eligible for merging or splitting.``
The UpdateShardCount limit messages are our own wording (the service's texts were not
found); the limits are the documented ones.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from kpl.protocol.hashing import MAX_HASH_KEY, uniform_ranges
from server.core.errors import (
    InvalidArgumentException,
    LimitExceededException,
    ResourceNotFoundException,
)

__all__ = [
    "MAX_SCALINGS_PER_DAY",
    "MAX_SHARDS_PER_STREAM",
    "Merge",
    "ScalingHistory",
    "Split",
    "check_merge",
    "check_split",
    "check_target",
    "closed_shard_error",
    "open_ranges_tile",
    "plan_uniform_scaling",
    "shard_not_found",
    "uniform_ranges",
]

#: UpdateShardCount: "Scale more than ten times per rolling 24-hour period per stream".
MAX_SCALINGS_PER_DAY: Final = 10
#: UpdateShardCount: "Scale up to more than 10000 shards in a stream".
MAX_SHARDS_PER_STREAM: Final = 10_000
_DAY: Final = 86_400.0


def open_ranges_tile(ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether ``ranges`` (in any order) tile ``[0, MAX_HASH_KEY]`` exactly, without overlap."""
    expected = 0
    for start, end in sorted(ranges):
        if start != expected or end < start:
            return False
        expected = end + 1
    return expected == MAX_HASH_KEY + 1


# -- errors ---------------------------------------------------------------------------


def shard_not_found(shard_id: str, stream: str, account: str) -> ResourceNotFoundException:
    """A reshard call naming a shard the stream does not have."""
    return ResourceNotFoundException(
        f"Could not find shard {shard_id} in stream {stream} under account {account}."
    )


def closed_shard_error(shard_id: str, stream: str, account: str) -> InvalidArgumentException:
    """A reshard call naming a shard that is already closed."""
    return InvalidArgumentException(
        f"Shard {shard_id} in stream {stream} under account {account} has already been "
        "merged or split, and thus is not eligible for merging or splitting."
    )


def check_split(
    shard_id: str, start: int, end: int, new_key: int, stream: str, account: str
) -> None:
    """SplitShard's rule: ``start + 1 < new_key < end``."""
    if not start + 1 < new_key < end:
        raise InvalidArgumentException(
            f"NewStartingHashKey {new_key} used in SplitShard() on shard {shard_id} in stream "
            f"{stream} under account {account} is not both greater than one plus the shard's "
            f"StartingHashKey {start} and less than the shard's EndingHashKey {end}."
        )


def check_merge(
    first: tuple[str, int, int], second: tuple[str, int, int], stream: str, account: str
) -> None:
    """MergeShards' rule: two different shards whose ranges touch (either order).

    Each argument is ``(shard_id, start, end)``.
    """
    id_a, start_a, end_a = first
    id_b, start_b, end_b = second
    if id_a == id_b or not (end_a + 1 == start_b or end_b + 1 == start_a):
        raise InvalidArgumentException(
            f"Shards {id_a} and {id_b} in stream {stream} under account {account} are not an "
            "adjacent pair of shards eligible for merging"
        )


def check_target(current: int, target: int, stream: str, account: str) -> None:
    """UpdateShardCount's documented bounds: within [half, double] and at most 10,000."""
    prefix = f"UpdateShardCount failed for stream {stream} under account {account}."
    if target > 2 * current:
        raise LimitExceededException(
            f"{prefix} Cannot scale up to more than double the current open shard count "
            f"({current}); requested {target}."
        )
    if 2 * target < current:
        raise LimitExceededException(
            f"{prefix} Cannot scale down to less than half the current open shard count "
            f"({current}); requested {target}."
        )
    if target > MAX_SHARDS_PER_STREAM:
        raise LimitExceededException(
            f"{prefix} Cannot scale up to more than {MAX_SHARDS_PER_STREAM} shards in a "
            f"stream; requested {target}."
        )


# -- UpdateShardCount plans -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Split:
    """Split shard ``handle`` at ``key``; the children get the next two handles."""

    handle: int
    key: int


@dataclass(frozen=True, slots=True)
class Merge:
    """Merge shards ``handle`` and ``adjacent`` (left, right); the child gets the next handle."""

    handle: int
    adjacent: int


def plan_uniform_scaling(
    open_ranges: Sequence[tuple[int, int]], target: int
) -> list[Split | Merge]:
    """The splits then merges that turn ``open_ranges`` into ``uniform_ranges(target)``.

    Handles: the open shards are ``0 .. n-1`` in the order given; each operation's new
    shards take the next handles in order (two for a split, one for a merge). The engine
    maps handles to shards as it applies the plan.
    """
    if not open_ranges_tile(open_ranges):
        raise ValueError("the open shards do not tile the hash space")
    # Current open shards as (start, end, handle), kept sorted by start.
    shards = sorted((start, end, handle) for handle, (start, end) in enumerate(open_ranges))
    next_handle = len(shards)
    plan: list[Split | Merge] = []
    goal = uniform_ranges(target)
    for boundary, _ in goal[1:]:
        starts = [s[0] for s in shards]
        i = bisect_right(starts, boundary) - 1
        start, end, handle = shards[i]
        if start == boundary:
            continue
        plan.append(Split(handle, boundary))
        shards[i : i + 1] = [
            (start, boundary - 1, next_handle),
            (boundary, end, next_handle + 1),
        ]
        next_handle += 2
    # Every goal range is now a run of whole shards; fold each run left to right.
    position = 0
    for _, goal_end in goal:
        _, end, current = shards[position]
        position += 1
        while end != goal_end:
            _, end, right = shards[position]
            position += 1
            plan.append(Merge(current, right))
            current = next_handle
            next_handle += 1
    return plan


class ScalingHistory:
    """UpdateShardCount calls per stream over a rolling 24 hours (at most 10)."""

    def __init__(self, per_day: int = MAX_SCALINGS_PER_DAY) -> None:
        self.per_day = per_day
        self._calls: dict[str, deque[float]] = {}

    def check(self, key: str, stream: str, account: str, now: float) -> None:
        """Raise ``LimitExceededException`` if stream ``key`` already scaled ``per_day`` times.

        ``key`` tells a stream from an earlier one of the same name (``stream`` is the name
        for the message).
        """
        calls = self._calls.get(key)
        if calls is None:
            return
        while calls and calls[0] <= now - _DAY:
            calls.popleft()
        if len(calls) >= self.per_day:
            raise LimitExceededException(
                f"UpdateShardCount failed for stream {stream} under account {account}. "
                f"Cannot scale more than {self.per_day} times in a rolling 24-hour period."
            )

    def record(self, key: str, now: float) -> None:
        """Count one successful scaling of stream ``key``."""
        self._calls.setdefault(key, deque()).append(now)
