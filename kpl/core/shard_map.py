"""The shard map: which open shard stores a hash key, and when to ask again.

Theory of operation
-------------------
ListShards gives the open shards as ``(shard_id, starting_hash_key, ending_hash_key)``.
Their ranges are disjoint and, outside a reshard's brief window, cover ``[0, 2**128)``.
:class:`ShardMap` keeps the starting keys in a sorted ``list[int]`` and finds a hash
key's shard with one :func:`bisect.bisect_right` — no per-lookup allocation.

:class:`RefreshPolicy` holds the rules for asking ListShards again:

* a refresh is *wanted* when there is no map yet, or after a misprediction (a shard
  other than the predicted one answered) or an error that names the map;
* at most one ListShards is outstanding, and a new one starts at most once per
  ``min_interval`` seconds after the previous one *started* — a burst of mispredictions
  gives one refresh, never a storm;
* a failed refresh is retried after ``min_interval`` too.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise

from kpl.protocol.hashing import MAX_HASH_KEY

__all__ = ["RefreshPolicy", "ShardMap"]


class ShardMap:
    """Open shards sorted by starting hash key; ``lookup(hash_key)`` by bisection."""

    __slots__ = ("_ends", "_index", "_starts", "ids")

    def __init__(self, shards: Sequence[tuple[str, int, int]]) -> None:
        ordered = sorted(shards, key=lambda shard: shard[1])
        for shard_id, start, end in ordered:
            if not 0 <= start <= end <= MAX_HASH_KEY:
                raise ValueError(f"shard {shard_id} has an invalid hash key range {start}-{end}")
        for previous, current in pairwise(ordered):
            if current[1] <= previous[2]:
                raise ValueError(f"shards {previous[0]} and {current[0]} overlap")
        self.ids: list[str] = [shard[0] for shard in ordered]
        self._starts: list[int] = [shard[1] for shard in ordered]
        self._ends: list[int] = [shard[2] for shard in ordered]
        self._index: dict[str, int] = {shard_id: i for i, shard_id in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError("duplicate shard ids in the shard map")

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, hash_key: int) -> int:
        """Index of the shard whose range holds ``hash_key``, or -1 (a gap)."""
        i = bisect_right(self._starts, hash_key) - 1
        if i >= 0 and hash_key <= self._ends[i]:
            return i
        return -1

    def shard_id_for(self, hash_key: int) -> str | None:
        """The id of the shard that stores ``hash_key``, or ``None``."""
        i = self.lookup(hash_key)
        return self.ids[i] if i >= 0 else None

    def index_of(self, shard_id: str) -> int:
        """Index of a shard by id, or -1 when it is not in this map."""
        return self._index.get(shard_id, -1)

    def range_of(self, index: int) -> tuple[int, int]:
        """``(starting_hash_key, ending_hash_key)`` of the shard at ``index``."""
        return self._starts[index], self._ends[index]

    def shards(self) -> list[tuple[str, int, int]]:
        """The map as ``(shard_id, start, end)`` tuples, sorted by start."""
        return list(zip(self.ids, self._starts, self._ends, strict=True))


class RefreshPolicy:
    """When to call ListShards: wanted, not outstanding, not sooner than ``min_interval``
    after the last call, unless that call brought a changed map (a reshard seldom comes
    alone: a split and a merge a moment apart should not leave the second one unknown
    for the whole interval). Every refresh past the first needs a reason
    (:meth:`invalidate`), so the exception cannot make a storm."""

    __slots__ = ("_last_started", "_other", "min_interval", "outstanding", "wanted")

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self.wanted = True  # no map yet
        self.outstanding = False
        self._last_started: float | None = None
        # An invalidation other than a delivery's evidence since the last call started.
        self._other = False

    def invalidate(self, evidence: bool = False) -> None:
        """The map is (possibly) stale: ask for a refresh when the rules allow.

        ``evidence``: because of a delivery on a shard the map did not predict, which
        the next map may explain (see :meth:`installed`).
        """
        self.wanted = True
        if not evidence:
            self._other = True

    def next_allowed(self) -> float | None:
        """The earliest ``now`` a refresh may start (``None``: no limit)."""
        if self._last_started is None:
            return None
        return self._last_started + self.min_interval

    def due(self, now: float) -> bool:
        """Whether a refresh should start now."""
        if not self.wanted or self.outstanding:
            return False
        allowed = self.next_allowed()
        return allowed is None or now >= allowed

    def start(self, now: float) -> None:
        """A ListShards call was started."""
        self.outstanding = True
        self.wanted = False
        self._other = False
        self._last_started = now

    def installed(self, now: float, *, changed: bool = False, explained: bool = False) -> None:
        """A map was installed: the answer to our call, or one the shell fetched unasked.

        A misprediction seen while our call was outstanding keeps ``wanted`` set: the
        answer may predate it, so one more refresh follows after the interval, unless
        the new map ``explained`` every such delivery and nothing else asked for a
        refresh. A ``changed`` map lets the next refresh start without waiting.
        """
        if self.outstanding:
            self.outstanding = False
            if explained and not self._other:
                self.wanted = False
        else:
            self.wanted = False
            self._last_started = now
        if changed:
            self._last_started = None

    def failed(self) -> None:
        """The ListShards call failed: want another one after the interval."""
        self.outstanding = False
        self.wanted = True

    def wake_at(self) -> float | None:
        """When a wanted-but-postponed refresh becomes due (for the pipeline deadline)."""
        if not self.wanted or self.outstanding:
            return None
        return self.next_allowed()
