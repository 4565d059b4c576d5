"""Resharding applied: SplitShard, MergeShards and UpdateShardCount change a stream's shards.

Theory of operation
-------------------
``server.core.resharding`` holds the arithmetic (what may be split or merged, the plan
of splits and merges that reaches a uniform target count); :class:`Resharder` applies it
to a stream of the engine's table:

* only an ACTIVE, PROVISIONED stream may be resharded, and only its open shards.
  SplitShard and MergeShards check in the service's order: the stream exists, each
  shard exists (its id resolved by the number it ends with, ``resolve_shard_id``), each
  is open, then the pair's adjacency or the split's hash-key bounds, and only then the
  stream's state and mode and the account's shard limit;
* a split or a merge closes its parents (their ``EndingSequenceNumber`` is the last
  number they handed out, or their first if they took no record) and opens children
  that take the next shard indices; new shards count against the account's shard limit
  while they exist, short-lived ones of an UpdateShardCount plan included;
* the new shards take writes at once (the routing table is rebuilt) and the stream is
  UPDATING for the state delay, during which a second reshard is refused;
* UpdateShardCount's calls per stream and day are counted (:class:`ScalingHistory`)
  when throughput limits are on.
"""

from __future__ import annotations

from typing import Any

from server.core.errors import ResourceInUseException, ValidationException
from server.core.hooks import ThroughputGate
from server.core.render import ms
from server.core.resharding import (
    Merge,
    ScalingHistory,
    check_merge,
    check_split,
    check_target,
    closed_shard_error,
    plan_uniform_scaling,
    shard_not_found,
)
from server.core.seqnum import shard_base
from server.core.streams import Shard, Stream, StreamTable, resolve_shard_id
from server.storage.base import ShardMeta

__all__ = ["Resharder"]



class Resharder:
    """The resharding actions over the engine's stream table.

    ``throughput`` only says whether limits are on (the daily UpdateShardCount quota is
    one of them).
    """

    def __init__(self, table: StreamTable, throughput: ThroughputGate | None = None) -> None:
        self.table = table
        self.storage = table.storage
        self.throughput = throughput
        self._account = table.account
        self._scalings = ScalingHistory()

    def _check_reshardable(self, stream: Stream) -> None:
        """Only an ACTIVE, PROVISIONED stream may be resharded."""
        meta = stream.meta
        if meta.status != "ACTIVE":
            raise ResourceInUseException(
                f"Stream {meta.name} under account {self._account} not ACTIVE, "
                f"instead in state {meta.status}"
            )
        if meta.mode != "PROVISIONED":
            raise ValidationException(
                f"Request is invalid. Stream {meta.name} under account "
                f"{self._account} is in On-Demand mode."
            )

    def _reshardable(self, request: dict[str, Any], now: float) -> Stream:
        """An ACTIVE, PROVISIONED stream (resharding is refused otherwise)."""
        stream = self.table.stream(request, now)
        self._check_reshardable(stream)
        return stream

    def _shards_to_reshard(self, stream: Stream, texts: list[str]) -> list[Shard]:
        """The open shards a SplitShard or MergeShards names, in the service's order: each
        must exist (``Could not find shard``, by the number its id ends with), then each
        must still be open."""
        shards: list[Shard] = []
        for text in texts:
            shard_id = resolve_shard_id(text)
            shard = None if shard_id is None else stream.shards.get(shard_id)
            if shard is None:
                raise shard_not_found(shard_id or text, stream.meta.name, self._account)
            shards.append(shard)
        for shard in shards:
            if not shard.meta.is_open:
                raise closed_shard_error(shard.meta.shard_id, stream.meta.name, self._account)
        return shards

    def _new_shard(
        self, stream: Stream, start: int, end: int, now: float, parent: str, adjacent: str | None
    ) -> Shard:
        meta = stream.meta
        index = meta.next_shard_index
        meta.next_shard_index = index + 1
        created = ms(now)
        shard_meta = ShardMeta(
            shard_id=f"shardId-{index:012d}",
            starting_hash_key=start,
            ending_hash_key=end,
            starting_sequence_number=shard_base(index, int(created)),
            created_at=created,
            parent_shard_id=parent,
            adjacent_parent_shard_id=adjacent,
        )
        meta.shards.append(shard_meta)
        shard = stream.shards[shard_meta.shard_id] = Shard(shard_meta)
        return shard

    def _close_shard(self, stream: Stream, shard: Shard, now: float) -> None:
        # The last number handed out in the shard (its first one if it took no record).
        meta = shard.meta
        meta.ending_sequence_number = shard.last_seq
        meta.closed_at = ms(now)
        # Subscribers at the shard's end now get its ChildShards.
        self.table.shard_changed(stream.meta.name, meta.shard_id)

    def _split(self, stream: Stream, shard: Shard, key: int, now: float) -> list[Shard]:
        meta = shard.meta
        children = [
            self._new_shard(stream, meta.starting_hash_key, key - 1, now, meta.shard_id, None),
            self._new_shard(stream, key, meta.ending_hash_key, now, meta.shard_id, None),
        ]
        self._close_shard(stream, shard, now)
        return children

    def _merge(self, stream: Stream, shard: Shard, adjacent: Shard, now: float) -> Shard:
        a, b = shard.meta, adjacent.meta
        child = self._new_shard(
            stream,
            min(a.starting_hash_key, b.starting_hash_key),
            max(a.ending_hash_key, b.ending_hash_key),
            now,
            a.shard_id,
            b.shard_id,
        )
        self._close_shard(stream, shard, now)
        self._close_shard(stream, adjacent, now)
        return child

    def _resharded(self, stream: Stream, now: float) -> None:
        """The new shards take writes at once; the stream is UPDATING for the state delay."""
        stream.rebuild_routes()
        stream.meta.status = "UPDATING"
        stream.meta.status_since = now
        self.storage.save_stream(stream.meta)

    def split_shard(self, request: dict[str, Any], now: float) -> None:
        """SplitShard: close the shard, open two children at NewStartingHashKey."""
        stream = self.table.stream(request, now)
        [shard] = self._shards_to_reshard(stream, [request["ShardToSplit"]])
        key = int(request["NewStartingHashKey"])
        meta = shard.meta
        check_split(
            meta.shard_id, meta.starting_hash_key, meta.ending_hash_key, key,
            stream.meta.name, self._account,
        )
        self._check_reshardable(stream)
        self.table.check_shard_limit(1, now)
        self._split(stream, shard, key, now)
        self._resharded(stream, now)

    def merge_shards(self, request: dict[str, Any], now: float) -> None:
        """MergeShards: close two adjacent shards, open one child over both ranges."""
        stream = self.table.stream(request, now)
        shard, adjacent = self._shards_to_reshard(
            stream, [request["ShardToMerge"], request["AdjacentShardToMerge"]]
        )
        a, b = shard.meta, adjacent.meta
        check_merge(
            (a.shard_id, a.starting_hash_key, a.ending_hash_key),
            (b.shard_id, b.starting_hash_key, b.ending_hash_key),
            stream.meta.name,
            self._account,
        )
        self._check_reshardable(stream)
        self._merge(stream, shard, adjacent, now)
        self._resharded(stream, now)

    def update_shard_count(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """UpdateShardCount (UNIFORM_SCALING) as a plan of splits then merges."""
        stream = self._reshardable(request, now)
        name = stream.meta.name
        target: int = request["TargetShardCount"]
        open_shards = list(stream.route_shards)
        current = len(open_shards)
        check_target(current, target, name, self._account)
        history_key = f"{name}/{stream.created_ms}"
        if self.throughput is not None:
            self._scalings.check(history_key, name, self._account, now)
        plan = plan_uniform_scaling(
            [(s.meta.starting_hash_key, s.meta.ending_hash_key) for s in open_shards], target
        )
        # Short-lived shards count against the account limit while they exist.
        self.table.check_shard_limit(sum(1 for step in plan if not isinstance(step, Merge)), now)
        handles = open_shards
        for step in plan:
            if isinstance(step, Merge):
                left, right = handles[step.handle], handles[step.adjacent]
                handles.append(self._merge(stream, left, right, now))
            else:
                handles.extend(self._split(stream, handles[step.handle], step.key, now))
        if self.throughput is not None:
            self._scalings.record(history_key, now)
        self._resharded(stream, now)
        return {
            "StreamName": name,
            "CurrentShardCount": current,
            "TargetShardCount": target,
            "StreamARN": stream.meta.arn,
        }
