"""DurableStorage: the Storage protocol over the data dir, the index and group commit.

Theory of operation
-------------------
**Writes.** :meth:`DurableStorage.append` encodes one frame per batch (per segment, when
the batch crosses a rollover) and writes it with ``os.write`` to the shard's active
segment — the page cache, microseconds — then extends the index and notes the segment
for the next sync pass. :meth:`~DurableStorage.save_stream` only encodes the metadata and
queues it. Nothing is acknowledged until :meth:`~DurableStorage.wait_durable` (group
commit) returns, and nothing is readable before that either.

A write error truncates the segment back to its last complete frame and raises
``InternalFailure`` (the engine's request fails, nothing is acknowledged); if even the
truncation fails, the storage stops acknowledging.

**Reads** are synchronous, as the sans-IO engine calls them: the index plans the slices
(:meth:`~server.storage.durable.index.ShardLog.plan_read`) and one ``pread`` per segment
fetches exactly the frames holding them; each frame's CRC is checked again. To keep that
``pread`` off the event loop, the web layer awaits :meth:`~DurableStorage.read_ahead`
with the same arguments before the engine runs GetRecords: it plans the same read and
preads the bytes in a worker thread. :meth:`~DurableStorage.read` then takes the bytes
from there when they cover what it needs and preads on the loop only when they do not
(another request moved the floor or the durable top in between, the read-ahead failed):
what is answered is always decided by :meth:`~DurableStorage.read` from the index.
Read-ahead bytes not taken (the request failed first) are dropped oldest first beyond a
byte cap, and with their segment.

**Trimming** is exact in memory (the shard's floor) and deletes whole segments on disk
once every record in them is below the floor. The ``unlink`` runs in a worker thread,
relative to a duplicate of the shard directory's fd (so a stream deleted and made again
under the same name is never touched), followed by an fsync of that directory;
:meth:`~DurableStorage.wait_durable` also waits for deletions already started. A restart
forgets the floor until the engine trims again (lazily, on its next read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from server.core.errors import InternalFailure
from server.storage.base import StoredRecord, StreamMeta
from server.storage.durable.commit import GroupCommit, write_all
from server.storage.durable.datadir import SEGMENT_SUFFIX, DataDir, DataDirError
from server.storage.durable.format import (
    HEADER_SIZE,
    RECORD_OVERHEAD,
    encode_frame,
    encode_meta,
    frame_at,
)
from server.storage.durable.index import Segment, ShardLog, StreamDir, columns
from server.storage.durable.recovery import RESERVE, RecoveryReport

__all__ = ["DEFAULT_SEGMENT_BYTES", "DurableStorage"]

log = logging.getLogger("server.storage")

#: A shard's active segment rolls over once it reaches this size.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: Threads preading for read-ahead (concurrent GetRecords of different shards).
_READ_THREADS = 4
#: Read-ahead bytes kept for reads still to come; the oldest go beyond this.
_READ_AHEAD_CAP = 64 * 1024 * 1024


def _pread_spans(spans: list[tuple[Path, int, int]]) -> list[bytes | None]:
    """Worker thread: the bytes of each ``(path, offset, length)``, ``None`` on failure.

    Opens by path rather than using the storage's fds, which the loop may close and the
    kernel may reuse meanwhile.
    """
    out: list[bytes | None] = []
    for path, offset, length in spans:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            out.append(None)
            continue
        try:
            out.append(os.pread(fd, length, offset))
        except OSError:
            out.append(None)
        finally:
            os.close(fd)
    return out


def _delete_segments(dir_fd: int, where: Path, names: list[str]) -> None:
    """Worker thread: unlink trimmed segments, fsync their directory, close ``dir_fd``."""
    try:
        for name in names:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass  # the shard or stream was dropped meanwhile and its trash removed
            except OSError as error:  # it stays hidden; a later trim or restart retries
                log.warning("deleting %s failed: %s", where / name, error)
        try:
            os.fsync(dir_fd)
        except OSError as error:  # a deletion lost in a crash is redone by the next trim
            log.warning("syncing %s failed: %s", where, error)
    finally:
        os.close(dir_fd)


class DurableStorage:
    """Implements :class:`server.storage.base.Storage` in files under ``data_dir``.

    The constructor creates ``data_dir`` if needed, locks it against a second server,
    checks it is writable and recovers what a previous process left (see
    ``server.storage.durable.datadir``); it raises :class:`DataDirError` with a one-line
    message when the directory cannot be used. ``segment_bytes`` is the rollover size of
    a shard's active segment.

    Records appended are visible to :meth:`read` once a :meth:`wait_durable` covering
    them has returned (that is, once they may be acknowledged).

    :attr:`iterator_secret` is this directory's shard-iterator signing key, the same
    on every start.
    """

    def __init__(self, data_dir: Path | str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be >= 1, got {segment_bytes}")
        self.data_dir = Path(data_dir)
        self.segment_bytes = segment_bytes
        self._streams: dict[str, StreamDir] = {}
        self._commit = GroupCommit()
        self._dir = DataDir(self.data_dir, self._commit)
        self._closed = False
        self._io: ThreadPoolExecutor | None = None
        self._deleter: ThreadPoolExecutor | None = None
        self._deleting: Future[None] | None = None
        """The last deletion handed to ``_deleter`` (one thread: earlier ones are done)."""
        self._ahead: OrderedDict[tuple[Segment, int], bytes] = OrderedDict()
        self._ahead_bytes = 0
        self._loaded: list[StreamMeta] = []
        try:
            self._loaded = self._dir.open(self._streams)
        except DataDirError:
            self.close()
            raise
        self.iterator_secret = self._dir.iterator_secret

    # -- helpers ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._commit.failed is not None:
            raise InternalFailure()
        if self._closed:
            raise RuntimeError("the storage is closed")

    def _stream_dir(self, stream_name: str) -> StreamDir:
        stream = self._streams.get(stream_name)
        if stream is None:
            stream = self._streams[stream_name] = self._dir.new_stream_dir(stream_name)
        return stream

    def _shard_log(self, stream: StreamDir, shard_id: str) -> ShardLog:
        shard = stream.shards.get(shard_id)
        if shard is None:
            shard = stream.shards[shard_id] = self._dir.new_shard_dir(stream, shard_id)
        return shard

    def _new_segment(self, shard: ShardLog) -> Segment:
        if shard.segments:
            old = shard.segments[-1]
            if old.fd is not None:
                # Sealed: the next pass fsyncs it (it is dirty) and then closes it.
                self._commit.retired.append(old.fd)
                old.fd = None
        # Above every number the shard ever had: a damaged segment kept in place, or one
        # lost, is never reused.
        number = shard.top_segment + 1
        name = f"{number:020d}{SEGMENT_SUFFIX}"
        fd = os.open(
            name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644, dir_fd=shard.dir_fd
        )
        segment = Segment(shard.path / name, number, fd)
        shard.segments.append(segment)
        shard.top_segment = number
        shard.sealed = False
        self._commit.dirty_dirs[shard.dir_fd] = None
        # The mark names the highest segment, so a lost last segment is noticed.
        self._commit.pending_hwm[shard] = None
        return segment

    def _active(self, shard: ShardLog) -> Segment:
        segments = shard.segments
        if segments and not shard.sealed and segments[-1].number == shard.top_segment:
            segment = segments[-1]
            if segment.fd is None:  # recovered: reopen the last segment for appends
                segment.fd = os.open(segment.path, os.O_RDWR | os.O_APPEND)
            return segment
        return self._new_segment(shard)

    def _find_shard(self, stream_name: str, shard_id: str) -> ShardLog | None:
        stream = self._streams.get(stream_name)
        return None if stream is None else stream.shards.get(shard_id)

    # -- metadata ---------------------------------------------------------------------

    def load_streams(self) -> list[StreamMeta]:
        """The streams recovered at start-up (as of their last durable save)."""
        loaded, self._loaded = self._loaded, []
        return loaded

    def save_stream(self, stream: StreamMeta) -> None:
        """Queue the metadata for the next sync pass, which replaces it atomically.

        Shard directories of shards no longer in ``stream.shards`` are removed.
        """
        self._check_usable()
        try:
            directory = self._stream_dir(stream.name)
            for shard in stream.shards:
                self._shard_log(directory, shard.shard_id)
            known = {s.shard_id for s in stream.shards}
            for shard_id in [s for s in directory.shards if s not in known]:
                self._drop_shard(directory, shard_id)
        except OSError as error:
            log.error("saving stream %s failed: %s", stream.name, error)
            raise InternalFailure() from error
        self._commit.pending_meta[stream.name] = (directory.dir_fd, encode_meta(stream))
        self._commit.changes += 1

    def _drop_shard(self, directory: StreamDir, shard_id: str) -> None:
        shard = directory.shards.pop(shard_id)
        self._retire_shard(shard)
        self._dir.to_trash(shard.path, directory.dir_fd)

    def _retire_shard(self, shard: ShardLog) -> None:
        commit = self._commit
        for segment in shard.segments:
            if segment.fd is not None:
                commit.retired.append(segment.fd)
                segment.fd = None
        self._forget_read_ahead(shard.segments)
        commit.retired.append(shard.dir_fd)
        commit.dirty_shards.pop(shard, None)
        commit.pending_hwm.pop(shard, None)

    def delete_stream(self, stream_name: str) -> None:
        """Move the stream's directory to the trash (atomic); its files go in the next pass."""
        self._check_usable()
        directory = self._streams.pop(stream_name, None)
        self._commit.pending_meta.pop(stream_name, None)
        if directory is None:
            return
        for shard in directory.shards.values():
            self._retire_shard(shard)
        self._commit.retired.append(directory.dir_fd)
        try:
            self._dir.to_trash(directory.path, self._dir.streams_fd)
        except OSError as error:
            log.error("deleting stream %s failed: %s", stream_name, error)
            self._commit.failed = error
            raise InternalFailure() from error
        self._commit.changes += 1

    # -- records ----------------------------------------------------------------------

    def append(self, stream_name: str, shard_id: str, records: Sequence[StoredRecord]) -> None:
        """Write the records' frames to the shard's active segment (rolling over as needed).

        Raises ``InternalFailure`` (after cutting the segment back to its last complete
        frame) if the write fails, e.g. on a full disk.
        """
        self._check_usable()
        stream = self._streams.get(stream_name)
        if stream is None:
            raise InternalFailure(f"append to unknown stream {stream_name}")
        try:
            shard = self._shard_log(stream, shard_id)
            segment = self._active(shard)
        except OSError as error:
            log.error("opening the log of %s/%s failed: %s", stream_name, shard_id, error)
            raise InternalFailure() from error
        if shard.last_seq is not None and records[0][0] <= shard.last_seq:
            # Recovery would take such a frame for damage: refuse it rather than lose it.
            log.error("append to %s/%s out of sequence order", stream_name, shard_id)
            raise InternalFailure()
        # One frame per append (per segment, when the batch spans a rollover): one msgpack
        # call and one CRC for up to 500 records is what keeps durability cheap.
        limit = self.segment_bytes
        size = segment.size
        frame = encode_frame(records)
        if size + len(frame) <= limit or (size == 0 and len(records) == 1):
            self._write_frame(shard, segment, frame, records)
            return
        # The batch crosses the rollover size (rare): split it by an upper bound of each
        # record's bytes in a frame (a key character is at most 4 bytes of UTF-8).
        estimate = HEADER_SIZE + 5
        first = 0
        for index, record in enumerate(records):
            cost = len(record[3]) + 4 * len(record[2]) + RECORD_OVERHEAD
            if size + estimate + cost > limit and (size > 0 or index > first):
                if index > first:
                    part = records[first:index]
                    self._write_frame(shard, segment, encode_frame(part), part)
                segment = self._new_segment_or_fail(shard)
                size = 0
                estimate = HEADER_SIZE + 5
                first = index
            estimate += cost
        part = records[first:]
        self._write_frame(shard, segment, encode_frame(part), part)

    def _new_segment_or_fail(self, shard: ShardLog) -> Segment:
        try:
            return self._new_segment(shard)
        except OSError as error:
            log.error("rolling over %s failed: %s", shard.path, error)
            raise InternalFailure() from error

    def _write_frame(
        self, shard: ShardLog, segment: Segment, frame: bytes, records: Sequence[StoredRecord]
    ) -> None:
        fd = segment.fd
        assert fd is not None
        before = segment.size
        try:
            write_all(fd, frame)
        except OSError as error:
            log.error("writing to %s failed: %s", segment.path, error)
            try:
                os.ftruncate(fd, before)
            except OSError:
                # The log now ends in a partial frame we cannot remove: stop acknowledging.
                self._commit.failed = error
            raise InternalFailure() from error
        segment.add_frame(before, before + len(frame), columns(records))
        last = shard.last_seq = records[-1][0]
        commit = self._commit
        if last > shard.reserved:
            # Durable in the same pass as the records: no acknowledged number is ever
            # at or above a mark a restart can see lost.
            shard.reserved = last + RESERVE
            commit.pending_hwm[shard] = None
        commit.dirty_data[fd] = None
        commit.dirty_shards[shard] = None
        commit.changes += 1

    async def wait_durable(self) -> None:
        """Return once everything appended or saved before this call is on disk.

        One sync pass at a time runs in a worker thread; later callers share the next
        (see ``server.storage.durable.commit``). Also waits for the deletions of
        segments trimmed before this call. Raises ``InternalFailure`` if a pass failed
        (now or earlier).
        """
        deleting = self._deleting
        if deleting is not None:
            if not deleting.done():
                await asyncio.wrap_future(deleting)
            if self._deleting is deleting:
                self._deleting = None
        await self._commit.wait_durable()

    # -- reads ------------------------------------------------------------------------

    def read(
        self,
        stream_name: str,
        shard_id: str,
        from_sequence_number: int,
        limit: int,
        max_bytes: int,
    ) -> list[StoredRecord]:
        """Durable records from ``from_sequence_number`` on, found by binary search.

        The index gives the records' positions and sizes, so one ``pread`` per segment
        (or the bytes :meth:`read_ahead` fetched) covers exactly the frames holding
        them; each frame's CRC is checked again.
        """
        shard = self._find_shard(stream_name, shard_id)
        if shard is None:
            return []
        out: list[StoredRecord] = []
        for segment, i, j in shard.plan_read(from_sequence_number, limit, max_bytes):
            out.extend(self._read_frames(segment, i, j))
        return out

    async def read_ahead(
        self,
        stream_name: str,
        shard_id: str,
        from_sequence_number: int,
        limit: int,
        max_bytes: int,
    ) -> None:
        """Fetch, in a worker thread, the bytes a :meth:`read` with these arguments needs.

        A later :meth:`read` takes them instead of reading the disk on the event loop.
        Failures are ignored: that read then reads (and reports) for itself.
        """
        if self._closed:
            return
        shard = self._find_shard(stream_name, shard_id)
        if shard is None:
            return
        plan = shard.plan_read(from_sequence_number, limit, max_bytes)
        if not plan:
            return
        wanted = [(segment, *segment.span(i, j)) for segment, i, j in plan]
        if self._io is None:
            self._io = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="storage-read")
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            self._io, _pread_spans, [(s.path, begin, length) for s, begin, length in wanted]
        )
        for (segment, begin, length), buf in zip(wanted, found, strict=True):
            if buf is not None and len(buf) == length:
                self._keep_read_ahead(segment, begin, buf)

    def _keep_read_ahead(self, segment: Segment, begin: int, buf: bytes) -> None:
        if self._closed:  # closed while the worker read
            return
        ahead = self._ahead
        old = ahead.pop((segment, begin), None)
        if old is not None:
            self._ahead_bytes -= len(old)
        ahead[segment, begin] = buf
        self._ahead_bytes += len(buf)
        while self._ahead_bytes > _READ_AHEAD_CAP and len(ahead) > 1:
            self._ahead_bytes -= len(ahead.popitem(last=False)[1])

    def _forget_read_ahead(self, segments: Sequence[Segment]) -> None:
        if not self._ahead:
            return
        gone = set(segments)
        for key in [k for k in self._ahead if k[0] in gone]:
            self._ahead_bytes -= len(self._ahead.pop(key))

    def _read_frames(self, segment: Segment, i: int, j: int) -> list[StoredRecord]:
        """Records ``i`` to ``j - 1`` of the segment, from one buffer of their frames."""
        first, last = segment.frames_of(i, j)
        begin = segment.frame_starts[first]
        length = segment.frame_ends[last] - begin
        buf: bytes | None = None
        if self._ahead:
            buf = self._ahead.pop((segment, begin), None)
            if buf is not None:
                self._ahead_bytes -= len(buf)
                if len(buf) < length:
                    buf = None  # more became readable since: read it all here
        if buf is None:
            buf = self._pread(segment, begin, length)
        out: list[StoredRecord] = []
        # Frames are parsed at their indexed offsets: damage recovery skipped may lie between.
        for f in range(first, last + 1):
            found = frame_at(buf, segment.frame_starts[f] - begin)
            if found is None:
                # Index and file disagree: the disk changed under us.
                log.error("%s: bad frame at offset %d", segment.path, segment.frame_starts[f])
                raise InternalFailure()
            base = segment.frame_first[f]
            out.extend(found[0][max(i - base, 0) : j - base])
        return out

    @staticmethod
    def _pread(segment: Segment, begin: int, length: int) -> bytes:
        if segment.fd is not None:
            return os.pread(segment.fd, length, begin)
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            return os.pread(fd, length, begin)
        finally:
            os.close(fd)

    def sequence_number_at(self, stream_name: str, shard_id: str, timestamp: float) -> int | None:
        """Binary search over the arrival times of the kept records."""
        shard = self._find_shard(stream_name, shard_id)
        return None if shard is None else shard.seq_at(timestamp)

    def oldest_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The first record at or above the trim floor."""
        shard = self._find_shard(stream_name, shard_id)
        return None if shard is None else shard.oldest()

    def last_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The highest number ever appended (after a restart: the highest in the log)."""
        shard = self._find_shard(stream_name, shard_id)
        return None if shard is None else shard.last_seq

    def sequence_floor(self, stream_name: str, shard_id: str) -> int | None:
        """The shard's durable high-water mark: new numbers go above it.

        At least :meth:`last_sequence_number`; above every number ever acknowledged,
        even when recovery found records lost.
        """
        shard = self._find_shard(stream_name, shard_id)
        if shard is None:
            return None
        if shard.last_seq is None:
            return shard.reserved if shard.reserved >= 0 else None
        return max(shard.reserved, shard.last_seq)

    @property
    def recovery(self) -> RecoveryReport:
        """What recovery found at start-up: damage, records lost, streams set aside."""
        return self._dir.report

    def trim(self, stream_name: str, shard_id: str, arrived_before: float) -> int:
        """Hide records older than ``arrived_before``; delete segments wholly below.

        A segment is deleted only if a later segment holds a durable record, so the
        shard's highest sequence number always stays on disk. The files are unlinked in
        a worker thread.
        """
        shard = self._find_shard(stream_name, shard_id)
        if shard is None or not shard.segments:
            return 0
        dropped = shard.trim_floor(arrived_before)
        removable = shard.removable()
        if removable:
            gone = shard.segments[:removable]
            del shard.segments[:removable]
            for segment in gone:
                if segment.fd is not None:
                    self._commit.retired.append(segment.fd)
                    segment.fd = None
            self._forget_read_ahead(gone)
            self._delete_off_loop(shard, [segment.path.name for segment in gone])
        return dropped

    def _delete_off_loop(self, shard: ShardLog, names: list[str]) -> None:
        try:
            # The worker's own handle on the directory: the shard's may be closed first.
            dir_fd = os.dup(shard.dir_fd)
        except OSError as error:  # the segments stay hidden; a restart retries
            log.warning("deleting segments of %s failed: %s", shard.path, error)
            return
        if self._deleter is None:
            self._deleter = ThreadPoolExecutor(1, thread_name_prefix="storage-trim")
        self._deleting = self._deleter.submit(_delete_segments, dir_fd, shard.path, names)

    def close(self) -> None:
        """Sync what is still pending (a clean shutdown loses nothing), close every file.

        Waits for a sync pass still running in its worker thread, and for deletions and
        read-aheads under way.
        """
        if self._closed:
            return
        self._closed = True
        for pool in (self._deleter, self._io):
            if pool is not None:
                pool.shutdown()
        self._deleter = self._io = None
        self._deleting = None
        self._ahead.clear()
        self._ahead_bytes = 0
        commit = self._commit
        with commit.pass_lock:
            commit.final_pass()
            fds = commit.take_retired()
            for stream in self._streams.values():
                for shard in stream.shards.values():
                    fds.extend(s.fd for s in shard.segments if s.fd is not None)
                    for segment in shard.segments:
                        segment.fd = None
                    fds.append(shard.dir_fd)
                fds.append(stream.dir_fd)
            self._streams.clear()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._dir.close()
        commit.shutdown()
