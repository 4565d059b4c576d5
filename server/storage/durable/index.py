"""The durable storage's in-memory index: where every kept record lives on disk.

Theory of operation
-------------------
Recovery builds the index once from the segment files; every append extends it. It is
what lets reads touch the disk only for the bytes they return:

* per **segment**, per record: the sequence numbers and arrival times (sorted, for
  bisect) and the running sum of ``len(data) + len(partition_key)``, so a read's byte
  budget is settled before anything is read; per frame: where it starts and ends and
  the index of its first record, so one ``pread`` fetches exactly the frames holding the
  records a read returns;
* per **shard**: its segments in order, the highest sequence number appended
  (``last_seq``), the highest one a completed sync pass made durable (``durable_seq``:
  reads never go above it, so no reader sees a record a crash could take back), and the
  trim ``floor`` (records below it are hidden; it lives only in memory).

:meth:`ShardLog.plan_read` turns a read into ``(segment, i, j)`` slices and
:meth:`ShardLog.trim_floor` / :meth:`ShardLog.removable` decide what retention hides and
which whole segments may go. A segment may be deleted only when a *later* segment
already holds a durable record, so the shard's highest durable sequence number always
survives on disk however much is trimmed (the next start continues above it).

Nothing here does IO: the storage opens, reads and deletes the files.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import add
from pathlib import Path

from server.storage.base import StoredRecord

__all__ = ["Columns", "Segment", "ShardLog", "StreamDir", "columns"]

#: A batch of records as columns: sequence numbers, arrivals, keys, data (``zip(*records)``).
Columns = tuple[Sequence[int], Sequence[float], Sequence[str], Sequence[bytes]]


def columns(records: Sequence[StoredRecord]) -> Columns:
    """The records of a batch as four parallel columns."""
    seqs, arrivals, keys, datas = zip(*records, strict=True)
    return seqs, arrivals, keys, datas


class Segment:
    """One segment file and its index."""

    __slots__ = (
        "arrivals", "costs", "fd", "frame_ends", "frame_first", "frame_starts", "number",
        "path", "seqs", "size",
    )

    def __init__(self, path: Path, number: int, fd: int | None) -> None:
        self.path = path
        self.number = number
        self.fd = fd
        """Open (read-write, append) while the segment is active; sealed ones reopen to read."""
        self.seqs: list[int] = []
        self.arrivals = array("d")
        self.costs = array("q", [0])
        """``costs[i]``: the summed cost of records ``0 .. i-1``."""
        self.frame_starts = array("q")
        self.frame_ends = array("q")
        self.frame_first = array("q")
        self.size = 0
        """Bytes of the file (the end of its last good frame)."""

    def add_frame(self, start: int, end: int, cols: Columns) -> None:
        """Index a frame written (or recovered) at ``start .. end`` holding ``cols``."""
        seqs, arrivals, keys, datas = cols
        self.frame_starts.append(start)
        self.frame_ends.append(end)
        self.frame_first.append(len(self.seqs))
        self.seqs.extend(seqs)
        self.arrivals.extend(arrivals)
        costs = self.costs
        it = accumulate(map(add, map(len, datas), map(len, keys)), initial=costs[-1])
        next(it)
        costs.extend(it)
        self.size = end

    def frames_of(self, i: int, j: int) -> tuple[int, int]:
        """The first and last frame holding records ``i`` to ``j - 1``."""
        first = bisect_right(self.frame_first, i) - 1
        last = bisect_right(self.frame_first, j - 1) - 1
        return first, last

    def span(self, i: int, j: int) -> tuple[int, int]:
        """``(offset, length)`` of the bytes of the frames holding records ``i .. j-1``."""
        first, last = self.frames_of(i, j)
        begin = self.frame_starts[first]
        return begin, self.frame_ends[last] - begin


class ShardLog:
    """A shard's directory, its segments and the sequence-number marks reads obey."""

    __slots__ = (
        "dir_fd", "durable_seq", "floor", "last_seq", "path", "reserved", "sealed",
        "segments", "top_segment",
    )

    def __init__(self, path: Path, dir_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.segments: list[Segment] = []
        self.last_seq: int | None = None
        """Highest sequence number ever appended (durable or not)."""
        self.durable_seq = -1
        """Highest sequence number a completed sync pass made durable."""
        self.floor = -1
        """Records below this sequence number are trimmed (hidden from reads)."""
        self.reserved = -1
        """The high-water mark: no number at or below it may be issued again. Raised a
        block ahead of ``last_seq`` and made durable with the records that pass it."""
        self.top_segment = 0
        """The highest segment number this shard ever had (new segments go above it)."""
        self.sealed = False
        """Whether the last segment takes no more appends (it ends in damage kept for
        the operator): the next append starts a new segment."""

    def plan_read(
        self, from_seq: int, limit: int, max_bytes: int
    ) -> list[tuple[Segment, int, int]]:
        """The ``(segment, i, j)`` slices a read returns, oldest first.

        At most ``limit`` records at or above ``from_seq`` and the floor, none above the
        durable top, stopping before the record that would take the summed cost over
        ``max_bytes`` (when positive) but always at least one.
        """
        segments = self.segments
        if not segments or limit <= 0:
            return []
        start = max(from_seq, self.floor)
        top = self.durable_seq
        k = max(0, bisect_right([s.seqs[0] if s.seqs else -1 for s in segments], start) - 1)
        plan: list[tuple[Segment, int, int]] = []
        count = 0
        budget = max_bytes
        while k < len(segments) and count < limit:
            segment = segments[k]
            k += 1
            seqs = segment.seqs
            i = bisect_left(seqs, start)
            j = min(len(seqs), i + limit - count, bisect_right(seqs, top))
            if i >= j:
                if j < len(seqs):
                    break  # stopped at the durable top
                continue
            if max_bytes > 0:
                costs = segment.costs
                # The last m with costs[m] - costs[i] <= budget: records i .. m-1 fit.
                m = bisect_right(costs, costs[i] + budget, i, j + 1) - 1
                if m == i:
                    if plan:
                        return plan
                    m = i + 1  # always at least one record
                cut = min(j, m)
                budget -= costs[cut] - costs[i]
                j = cut
            plan.append((segment, i, j))
            count += j - i
            if j < len(seqs) or (max_bytes > 0 and budget <= 0):
                break  # cut by the limit, the byte budget or the durable top
        return plan

    def oldest(self) -> int | None:
        """The first sequence number at or above the floor, or ``None``."""
        for segment in self.segments:
            i = bisect_left(segment.seqs, self.floor)
            if i < len(segment.seqs):
                return segment.seqs[i]
        return None

    def seq_at(self, timestamp: float) -> int | None:
        """The first kept record with ``arrival >= timestamp`` (binary search), or ``None``."""
        for segment in self.segments:
            if not segment.arrivals or segment.arrivals[-1] < timestamp:
                continue
            seq = segment.seqs[bisect_left(segment.arrivals, timestamp)]
            return seq if seq >= self.floor else self.oldest()
        return None

    def trim_floor(self, arrived_before: float) -> int:
        """Raise the floor above every record older than ``arrived_before``; how many."""
        dropped = 0
        new_floor = self.floor
        for segment in self.segments:
            lo = bisect_left(segment.seqs, self.floor)
            cut = bisect_left(segment.arrivals, arrived_before)
            if cut > lo:
                dropped += cut - lo
            if cut < len(segment.seqs):
                new_floor = max(new_floor, segment.seqs[cut])
                break
            if segment.seqs:
                new_floor = max(new_floor, segment.seqs[-1] + 1)
        self.floor = new_floor
        return dropped

    def removable(self) -> int:
        """How many leading segments are wholly below the floor and may be deleted.

        Never the last, and only those followed by a segment that holds a durable record.
        """
        segments = self.segments
        count = 0
        while count < len(segments) - 1:
            segment = segments[count]
            later = segments[count + 1]
            below_floor = not segment.seqs or segment.seqs[-1] < self.floor
            later_durable = bool(later.seqs) and later.seqs[0] <= self.durable_seq
            if not (below_floor and later_durable):
                break
            count += 1
        return count


class StreamDir:
    """A stream's directory and the logs of its shards."""

    __slots__ = ("dir_fd", "path", "shards")

    def __init__(self, path: Path, dir_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.shards: dict[str, ShardLog] = {}
