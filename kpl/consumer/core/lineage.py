"""Shard lineage: parents before children, across splits and merges.

Theory of operation:

- A reshard closes its parents and opens children. A split has one parent and two
  children; a merge has two parents and one child. A partition key's records are in
  its parent shard up to the reshard and in a child after it, so a reader that wants
  a key's records in order must read every parent to its end before the child.
- A child is *ready* when every parent that will be read has finished. A parent that
  will never be read (trimmed by retention, or older than where reading began, such as
  closed shards under LATEST) is never waited for: waiting on it would stall the
  child for ever.
- :class:`ShardInfo` is one shard as the service describes it, from a ListShards or
  DescribeStream entry (``ParentShardId`` / ``AdjacentParentShardId``) or a GetRecords
  ``ChildShards`` entry (``ParentShards``).
- :class:`Lineage` tracks the shards a reader will read and hands out each one once,
  when it becomes ready. It does no IO: the shell tells it what it listed and what it
  finished, and starts the shards it returns.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kpl.protocol.hashing import MAX_HASH_KEY

__all__ = ["Lineage", "ShardInfo", "is_ready", "roots"]

_NO_PARENTS: Final[tuple[str, ...]] = ()


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard: its id, its parents, its hash key range and, once closed, its end."""

    shard_id: str
    #: One parent after a split, two after a merge, none for a shard of the first layout.
    parent_shard_ids: tuple[str, ...] = _NO_PARENTS
    starting_hash_key: int = 0
    ending_hash_key: int = MAX_HASH_KEY
    #: Set once the shard is closed by a reshard (``None`` while it is open).
    ending_sequence_number: str | None = None

    @classmethod
    def from_api(cls, shard: Mapping[str, Any]) -> ShardInfo:
        """A ListShards / DescribeStream shard, or a GetRecords ``ChildShards`` entry."""
        parents: tuple[str, ...]
        if "ParentShards" in shard:
            parents = tuple(str(p) for p in shard["ParentShards"] or ())
        else:
            parents = tuple(
                str(p)
                for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
                if p
            )
        hash_range = shard.get("HashKeyRange") or {}
        sequence_range = shard.get("SequenceNumberRange") or {}
        ending = sequence_range.get("EndingSequenceNumber")
        return cls(
            shard_id=str(shard["ShardId"]),
            parent_shard_ids=parents,
            starting_hash_key=int(hash_range.get("StartingHashKey", 0)),
            ending_hash_key=int(hash_range.get("EndingHashKey", MAX_HASH_KEY)),
            ending_sequence_number=str(ending) if ending is not None else None,
        )

    @property
    def is_open(self) -> bool:
        """Whether the shard still takes new records."""
        return self.ending_sequence_number is None

    def contains(self, hash_key: int) -> bool:
        """Whether ``hash_key`` lies in this shard's range."""
        return self.starting_hash_key <= hash_key <= self.ending_hash_key


def is_ready(
    parent_ids: Iterable[str], *, finished: Collection[str], read: Collection[str]
) -> bool:
    """Whether a shard may start: every parent in ``read`` is in ``finished``."""
    return all(p in finished for p in parent_ids if p in read)


def roots(shards: Iterable[ShardInfo]) -> list[ShardInfo]:
    """The shards of a listing none of whose parents are in it: where reading starts."""
    listed = list(shards)
    ids = {s.shard_id for s in listed}
    return [s for s in listed if not any(p in ids for p in s.parent_shard_ids)]


class Lineage:
    """The shards one reader will read, each handed out once it is ready.

    ``Lineage(shards)`` reads every shard given (a whole listing, to read from the
    oldest record; or only the open shards, to read from LATEST). Children learnt later
    (from ``ChildShards`` or a new listing) join through :meth:`finish` or :meth:`add`.
    """

    def __init__(self, shards: Iterable[ShardInfo] = ()) -> None:
        self._parents: dict[str, set[str]] = {}
        self._info: dict[str, ShardInfo] = {}
        self._started: set[str] = set()
        self._finished: set[str] = set()
        for shard in shards:
            self.add(shard)

    def add(self, shard: ShardInfo) -> None:
        """Read ``shard`` too (its parents are merged with any already known)."""
        self._parents.setdefault(shard.shard_id, set()).update(shard.parent_shard_ids)
        self._info.setdefault(shard.shard_id, shard)

    def info(self, shard_id: str) -> ShardInfo | None:
        """What was learnt of a shard being read, if anything."""
        return self._info.get(shard_id)

    @property
    def read(self) -> frozenset[str]:
        """Every shard that is or will be read."""
        return frozenset(self._parents)

    @property
    def finished(self) -> frozenset[str]:
        """The shards read to their end."""
        return frozenset(self._finished)

    def is_ready(self, shard_id: str) -> bool:
        """Whether every parent of ``shard_id`` that is read has finished."""
        return is_ready(
            self._parents.get(shard_id, ()), finished=self._finished, read=self._parents
        )

    def take_ready(self) -> list[str]:
        """The shards that may start now and were not handed out before (in id order)."""
        ready = sorted(
            shard_id
            for shard_id in self._parents
            if shard_id not in self._started and self.is_ready(shard_id)
        )
        self._started.update(ready)
        return ready

    def finish(self, shard_id: str, children: Iterable[ShardInfo] = ()) -> list[str]:
        """``shard_id`` was read to its end and has ``children``: the shards that may
        start now (each child once all its parents that are read have finished)."""
        self._finished.add(shard_id)
        self._started.add(shard_id)
        for child in children:
            self.add(child)
        return self.take_ready()
