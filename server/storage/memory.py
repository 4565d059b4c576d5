"""In-memory storage: every shard's records in three parallel Python lists.

A shard log keeps ``_seqs`` (sequence numbers) and ``_arrivals`` (arrival times) as
sorted lists for :mod:`bisect`, and ``_records`` with the :data:`StoredRecord` tuples
themselves. Trimming advances a ``_start`` offset instead of deleting from the front
(which would be O(n) per trim) and compacts the lists once the dead prefix is at least
half of them, so trimming is amortised O(1) per record.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections.abc import Sequence

from server.storage.base import StoredRecord, StreamMeta

__all__ = ["MemoryStorage"]


class _ShardLog:
    __slots__ = ("_arrivals", "_records", "_seqs", "_start", "high_water")

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._arrivals: list[float] = []
        self._records: list[StoredRecord] = []
        self._start = 0
        self.high_water: int | None = None

    def append(self, records: Sequence[StoredRecord]) -> None:
        if len(records) == 1:
            record = records[0]
            self._seqs.append(record[0])
            self._arrivals.append(record[1])
            self._records.append(record)
        else:
            self._seqs.extend([r[0] for r in records])
            self._arrivals.extend([r[1] for r in records])
            self._records.extend(records)
        self.high_water = records[-1][0]

    def read(self, from_seq: int, limit: int, max_bytes: int) -> list[StoredRecord]:
        lo = bisect_left(self._seqs, from_seq, self._start)
        chunk = self._records[lo : lo + limit]
        if max_bytes <= 0 or not chunk:
            return chunk
        total = 0
        for i, record in enumerate(chunk):
            total += len(record[3]) + len(record[2])
            if total > max_bytes:
                return chunk[: max(i, 1)]
        return chunk

    def seq_at(self, timestamp: float) -> int | None:
        i = bisect_left(self._arrivals, timestamp, self._start)
        return self._seqs[i] if i < len(self._seqs) else None

    def oldest(self) -> int | None:
        return self._seqs[self._start] if self._start < len(self._seqs) else None

    def trim(self, arrived_before: float) -> int:
        cut = bisect_left(self._arrivals, arrived_before, self._start)
        dropped = cut - self._start
        self._start = cut
        if self._start and self._start * 2 >= len(self._seqs):
            del self._seqs[: self._start]
            del self._arrivals[: self._start]
            del self._records[: self._start]
            self._start = 0
        return dropped


class MemoryStorage:
    """Implements :class:`server.storage.base.Storage` in process memory.

    Nothing survives the process. Metadata is deep-copied on save and load so that the
    engine's later in-place changes are only "persisted" by another :meth:`save_stream`,
    exactly as with a durable implementation (tests rely on that to catch a missed save).
    """

    def __init__(self) -> None:
        self._streams: dict[str, StreamMeta] = {}
        self._logs: dict[tuple[str, str], _ShardLog] = {}

    def _log(self, stream_name: str, shard_id: str) -> _ShardLog:
        key = (stream_name, shard_id)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _ShardLog()
        return log

    # -- metadata -------------------------------------------------------------------

    def load_streams(self) -> list[StreamMeta]:
        """Copies of every saved stream."""
        return [copy.deepcopy(s) for s in self._streams.values()]

    def save_stream(self, stream: StreamMeta) -> None:
        """Keep a copy of the stream's metadata."""
        self._streams[stream.name] = copy.deepcopy(stream)

    def delete_stream(self, stream_name: str) -> None:
        """Drop the metadata and every shard log of the stream."""
        self._streams.pop(stream_name, None)
        for key in [k for k in self._logs if k[0] == stream_name]:
            del self._logs[key]

    # -- records --------------------------------------------------------------------

    def append(self, stream_name: str, shard_id: str, records: Sequence[StoredRecord]) -> None:
        """Append to the shard's lists (the tuples are immutable, so no copy is needed)."""
        self._log(stream_name, shard_id).append(records)

    async def wait_durable(self) -> None:
        """Memory is as durable as it gets: nothing to wait for."""

    def read(
        self,
        stream_name: str,
        shard_id: str,
        from_sequence_number: int,
        limit: int,
        max_bytes: int,
    ) -> list[StoredRecord]:
        """Binary search for ``from_sequence_number``, then a slice."""
        log = self._logs.get((stream_name, shard_id))
        if log is None:
            return []
        return log.read(from_sequence_number, limit, max_bytes)

    async def read_ahead(
        self,
        stream_name: str,
        shard_id: str,
        from_sequence_number: int,
        limit: int,
        max_bytes: int,
    ) -> None:
        """Records in memory need no fetching: nothing to do."""

    def sequence_number_at(self, stream_name: str, shard_id: str, timestamp: float) -> int | None:
        """Binary search over arrival times."""
        log = self._logs.get((stream_name, shard_id))
        return None if log is None else log.seq_at(timestamp)

    def oldest_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The first untrimmed record's sequence number."""
        log = self._logs.get((stream_name, shard_id))
        return None if log is None else log.oldest()

    def last_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The highest number ever appended, trimmed or not."""
        log = self._logs.get((stream_name, shard_id))
        return None if log is None else log.high_water

    def sequence_floor(self, stream_name: str, shard_id: str) -> int | None:
        """The highest number ever appended: memory loses nothing while it runs."""
        return self.last_sequence_number(stream_name, shard_id)

    def trim(self, stream_name: str, shard_id: str, arrived_before: float) -> int:
        """Advance the shard's start past records older than ``arrived_before``."""
        log = self._logs.get((stream_name, shard_id))
        return 0 if log is None else log.trim(arrived_before)

    def close(self) -> None:
        """Drop everything."""
        self._streams.clear()
        self._logs.clear()
