"""Retention rules: which records and which closed shards a stream no longer keeps.

Theory of operation
-------------------
A record is kept while ``arrival > now - retention``; older records are trimmed lazily
(the engine calls ``Storage.trim`` with :func:`cutoff` before it positions or serves a
read, so nothing expired is ever returned). Hence:

* ``TRIM_HORIZON`` starts at the oldest kept record;
* ``AT_TIMESTAMP`` before the trim horizon starts there too (the service documents
  this);
* ``AT_SEQUENCE_NUMBER`` / ``AFTER_SEQUENCE_NUMBER`` with a number that has been
  trimmed are accepted and read on from the oldest kept record: the service does not
  refuse an expired checkpoint, the expired records are simply gone.

Retention changes take effect on what is still kept: before a change, the engine trims
with the *old* retention, so an increase never revives records that had already
expired (as the service documents for IncreaseStreamRetentionPeriod).

A closed shard takes no new records, so once retention has passed its closing time all
its records are gone; the service then stops listing it (ListShards, DescribeStream)
and GetShardIterator no longer finds it. Its children keep their ``ParentShardId``.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.storage.base import ShardMeta

__all__ = ["cutoff", "expired_shards"]


def cutoff(retention_hours: int, now: float) -> float:
    """Records that arrived before this instant (epoch seconds) have expired."""
    return now - retention_hours * 3600.0


def expired_shards(
    shards: Iterable[ShardMeta], retention_hours: int, now: float
) -> list[ShardMeta]:
    """The closed shards whose every record has expired (closed before the cutoff)."""
    limit = cutoff(retention_hours, now)
    return [s for s in shards if s.closed_at is not None and s.closed_at < limit]
