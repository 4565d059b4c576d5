"""How shards and streams read in responses: the service's JSON shapes, built from metadata.

Theory of operation
-------------------
Pure functions from storage metadata (:class:`~server.storage.base.ShardMeta`,
:class:`~server.storage.base.StreamMeta`) to the dicts the engine answers with. Hash keys
and sequence numbers are decimal strings, timestamps float epoch seconds with millisecond
precision (:func:`ms`); the wire codec turns the dicts into JSON or CBOR. Keys are
inserted in the service's order, so answers read as the service's do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from server.storage.base import ShardMeta, StreamMeta

__all__ = ["child_shards", "ms", "shard_json", "stream_summary", "summary_fields"]


def ms(seconds: float) -> float:
    """Epoch seconds with millisecond precision, as the service answers timestamps."""
    return math.floor(seconds * 1000.0) / 1000.0


def shard_json(meta: ShardMeta) -> dict[str, Any]:
    """A ``Shard`` of DescribeStream and ListShards."""
    shard: dict[str, Any] = {"ShardId": meta.shard_id}
    if meta.parent_shard_id is not None:
        shard["ParentShardId"] = meta.parent_shard_id
    if meta.adjacent_parent_shard_id is not None:
        shard["AdjacentParentShardId"] = meta.adjacent_parent_shard_id
    shard["HashKeyRange"] = {
        "StartingHashKey": str(meta.starting_hash_key),
        "EndingHashKey": str(meta.ending_hash_key),
    }
    seq_range = {"StartingSequenceNumber": str(meta.starting_sequence_number)}
    if meta.ending_sequence_number is not None:
        seq_range["EndingSequenceNumber"] = str(meta.ending_sequence_number)
    shard["SequenceNumberRange"] = seq_range
    return shard


def summary_fields(meta: StreamMeta) -> dict[str, Any]:
    """The members DescribeStream and DescribeStreamSummary share, in their order."""
    fields: dict[str, Any] = {
        "StreamName": meta.name,
        "StreamARN": meta.arn,
        "StreamStatus": meta.status,
        "StreamModeDetails": {"StreamMode": meta.mode},
        "RetentionPeriodHours": meta.retention_hours,
        "StreamCreationTimestamp": meta.created_at,
        "EnhancedMonitoring": [{"ShardLevelMetrics": list(meta.shard_level_metrics)}],
        "EncryptionType": meta.encryption_type,
    }
    if meta.key_id is not None:
        fields["KeyId"] = meta.key_id
    return fields


def stream_summary(meta: StreamMeta) -> dict[str, Any]:
    """One of ListStreams' ``StreamSummaries``."""
    return {
        "StreamName": meta.name,
        "StreamARN": meta.arn,
        "StreamStatus": meta.status,
        "StreamModeDetails": {"StreamMode": meta.mode},
        "StreamCreationTimestamp": meta.created_at,
    }


def child_shards(shards: Iterable[ShardMeta], shard_id: str) -> list[dict[str, Any]]:
    """The ``ChildShards`` a reader at the end of closed shard ``shard_id`` is given."""
    children = []
    for meta in shards:
        parents = [p for p in (meta.parent_shard_id, meta.adjacent_parent_shard_id) if p]
        if shard_id in parents:
            children.append(
                {
                    "ShardId": meta.shard_id,
                    "ParentShards": parents,
                    "HashKeyRange": {
                        "StartingHashKey": str(meta.starting_hash_key),
                        "EndingHashKey": str(meta.ending_hash_key),
                    },
                }
            )
    return children
