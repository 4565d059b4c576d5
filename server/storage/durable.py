"""Durable storage: per-shard log segments on disk, group-committed fsyncs, crash recovery.

Theory of operation
-------------------
Layout under ``data_dir``::

    LOCK                                   flock'ed while a server uses the directory
    iterator-secret                        32 random bytes signing shard iterators (0600)
    streams/s-<name>/meta                  the stream's StreamMeta (msgpack), replaced atomically
    streams/s-<name>/<shard id>/<n>.seg    the shard's log segments, n = 1, 2, 3 ...
    trash/                                 deleted streams/shards, removed in the background

**Frames.** A segment is a run of frames, one per :meth:`~DurableStorage.append` (a batch
that crosses a rollover is split, one frame per segment)::

    magic (2 bytes "KR") | payload length (u32 LE) | crc32 of payload (u32 LE) | payload

and the payload is a msgpack list of ``[seq (24-byte big-endian bin), arrival,
partition_key, data]``. One msgpack call and one CRC per PutRecords shard batch rather
than per record is most of what keeps durability cheap. The magic lets recovery find the
next frame after a damaged one without trusting a damaged length; the CRC tells a
complete frame from a torn or corrupted one.

**Writes and group commit.** :meth:`DurableStorage.append` encodes the frame and writes
it with ``os.write`` to the shard's active segment (the page cache: microseconds), then
updates the in-memory index. :meth:`DurableStorage.save_stream` only encodes the
metadata and queues it. Nothing is acknowledged yet: the web layer awaits
:meth:`DurableStorage.wait_durable`, which runs ONE *sync pass* in a worker thread for
everything changed since the previous pass — write queued metadata (temp file, fsync,
rename), fsync every dirty segment, fsync every directory whose entries changed. Callers
arriving while a pass is in flight wait for it and then, if their changes came after its
snapshot, share the next one. So N concurrent PutRecords cost one fsync per dirty file,
not N.

**Reads see only durable records.** Each shard remembers the highest sequence number
made durable by a completed pass; :meth:`DurableStorage.read` never returns a record
above it, so no reader can see a record that a crash could still take back (and whose
sequence number could then be handed out again). An acknowledged record is durable, so
it is readable as soon as it is acknowledged.

**Failures.** A write error in :meth:`~DurableStorage.append` truncates the segment back
to its last complete frame and raises ``InternalFailure`` (the engine's request fails,
nothing is acknowledged). A failed fsync is not retryable — after it, the kernel may
have dropped the dirty pages and a later fsync would "succeed" — so it *poisons* the
storage: that and every later :meth:`~DurableStorage.wait_durable` raises
``InternalFailure`` until the server is restarted and recovery has re-read the disk.

**Recovery.** At start-up every segment is scanned once to rebuild the index. The first
bad frame (short, wrong magic, implausible length, CRC mismatch, undecodable, or a
sequence number not above the previous one) starts a damaged region; recovery searches
for the next good frame. With none after it, the damage is a torn tail — the part of the
log no completed pass synced, so never an acknowledged record — and the file is
truncated there. With good frames after it (corruption in the middle), only the damaged
frame's bytes are skipped and logged; the records after them stay readable.

**Sequence numbers after a restart.** :meth:`~DurableStorage.last_sequence_number` is
the highest number in the log. Retention deletes a segment only when a *later* segment
already holds a durable record, so the shard's highest durable number always survives on
disk, however much is trimmed.

**Trimming** is exact in memory (a per-shard floor below which reads see nothing) and
deletes whole segments on disk once every record in them is below the floor. A restart
forgets the floor until the engine trims again (lazily, on its next read).

**The iterator secret.** Shard iterators are signed tokens (``server.core.iterators``);
a consumer holding one across a restart must be able to read on, so the signing key
lives here: made once from ``os.urandom`` (temp file with mode 0600, fsync, rename,
fsync of the directory, all under the LOCK so two servers never race to make it) and
read back on every later start. A secret file of the wrong size or one that cannot be
read is a :class:`DataDirError`, not a quietly replaced key: replacing it would refuse
every iterator already handed out, which the operator should decide (delete the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import struct
import threading
import uuid
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from itertools import accumulate
from operator import add
from pathlib import Path
from typing import Any

import msgpack

from server.core.errors import InternalFailure
from server.storage.base import ShardMeta, StoredRecord, StreamMeta

__all__ = ["DEFAULT_SEGMENT_BYTES", "SECRET_BYTES", "DataDirError", "DurableStorage"]

log = logging.getLogger("server.storage")

#: A shard's active segment rolls over once it reaches this size.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

_MAGIC = b"KR"
_HEADER = struct.Struct("<2sII")
_HEADER_SIZE = _HEADER.size
_SEQ_BYTES = 24  # 10**56 < 2**192: every sequence number of our layout fits
#: Upper bound of a record's bytes in a frame beyond its data and UTF-8 key (msgpack
#: array/bin/str headers, the 24-byte sequence number, the float): for rollover sizing.
_RECORD_OVERHEAD = 48
#: Larger payloads are taken as a damaged length field (records are at most a few MiB).
_MAX_PAYLOAD = 64 * 1024 * 1024
_META_FILE = "meta"
_SECRET_FILE = "iterator-secret"
_SECRET_TMP = "iterator-secret.tmp"
#: Bytes of the iterator secret (an HMAC-SHA256 key as long as the hash's output).
SECRET_BYTES = 32
_META_TMP = "meta.tmp"
_SEGMENT_SUFFIX = ".seg"
_BIG_INT_EXT = 1
_FSYNC_THREADS = 8
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


class DataDirError(OSError):
    """The data directory cannot be used (not a directory, not writable, in use)."""


# -- metadata encoding ------------------------------------------------------------------


def _pack_value(value: Any) -> Any:
    # msgpack ints stop at 64 bits; hash keys and sequence numbers go far beyond.
    if isinstance(value, int) and not isinstance(value, bool) and not (
        -(2**63) <= value < 2**64
    ):
        return msgpack.ExtType(_BIG_INT_EXT, str(value).encode())
    return value


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _BIG_INT_EXT:
        return int(data)
    return msgpack.ExtType(code, data)


def encode_meta(meta: StreamMeta) -> bytes:
    """The msgpack form of a stream's metadata (field names as keys)."""
    body: dict[str, Any] = {}
    for f in fields(meta):
        value = getattr(meta, f.name)
        if f.name == "shards":
            value = [
                {sf.name: _pack_value(getattr(s, sf.name)) for sf in fields(s)} for s in value
            ]
        body[f.name] = _pack_value(value)
    packed: bytes = msgpack.packb({"v": 1, "stream": body}, use_bin_type=True)
    return packed


def decode_meta(raw: bytes) -> StreamMeta:
    """Inverse of :func:`encode_meta`; unknown keys (from a newer version) are ignored."""
    doc = msgpack.unpackb(raw, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    body = dict(doc["stream"])
    shard_names = {f.name for f in fields(ShardMeta)}
    shards = [
        ShardMeta(**{k: v for k, v in s.items() if k in shard_names}) for s in body["shards"]
    ]
    stream_names = {f.name for f in fields(StreamMeta)}
    body = {k: v for k, v in body.items() if k in stream_names}
    body["shards"] = shards
    return StreamMeta(**body)


# -- frames -----------------------------------------------------------------------------


def encode_frame(records: Sequence[StoredRecord]) -> bytes:
    """A batch of records (one append to one segment) as one checksummed frame."""
    payload: bytes = msgpack.packb(
        [[r[0].to_bytes(_SEQ_BYTES, "big"), r[1], r[2], r[3]] for r in records],
        use_bin_type=True,
    )
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes, after_seq: int) -> list[StoredRecord] | None:
    out: list[StoredRecord] = []
    last = after_seq
    for seq_raw, arrival, key, data in msgpack.unpackb(payload, raw=False):
        seq = int.from_bytes(seq_raw, "big")
        if seq <= last or not isinstance(key, str) or not isinstance(data, bytes):
            return None
        out.append((seq, float(arrival), key, data))
        last = seq
    return out or None


def _frame_at(
    buf: bytes | memoryview, pos: int, after_seq: int = -1
) -> tuple[list[StoredRecord], int] | None:
    """The records of a good frame at ``pos`` and the frame's end, or ``None``.

    Good: magic, a plausible length, the CRC, msgpack that decodes to records whose
    sequence numbers increase strictly from above ``after_seq``.
    """
    if len(buf) - pos < _HEADER_SIZE:
        return None
    magic, length, crc = _HEADER.unpack_from(buf, pos)
    end = pos + _HEADER_SIZE + length
    if magic != _MAGIC or length > _MAX_PAYLOAD or end > len(buf):
        return None
    payload = bytes(buf[pos + _HEADER_SIZE : end])
    if zlib.crc32(payload) != crc:
        return None
    try:
        records = _decode_payload(payload, after_seq)
    except Exception:  # a CRC collision on garbage: treat as damaged
        return None
    return None if records is None else (records, end)


@dataclass(slots=True)
class ScanResult:
    """What :func:`scan_segment` found in one segment's bytes."""

    frames: list[tuple[int, int, list[StoredRecord]]] = field(default_factory=list)
    """``(start, end, records)`` of each good frame."""
    good_end: int = 0
    """End of the last good frame: the file is truncated here when the tail is damaged."""
    skipped: list[tuple[int, int]] = field(default_factory=list)
    """Damaged ``(start, end)`` byte ranges followed by good frames (kept, not truncated)."""

    @property
    def records(self) -> list[StoredRecord]:
        """Every record of the good frames, in order."""
        return [r for frame in self.frames for r in frame[2]]


def scan_segment(buf: bytes, after_seq: int) -> ScanResult:
    """Parse a segment's frames; records must have sequence numbers above ``after_seq``."""
    result = ScanResult()
    pos = 0
    last = after_seq
    size = len(buf)
    while pos < size:
        found = _frame_at(buf, pos, last)
        if found is not None:
            records, end = found
            result.frames.append((pos, end, records))
            last = records[-1][0]
            pos = result.good_end = end
            continue
        # Damaged region: look for the next frame that checks out.
        probe = pos + 1
        resume = -1
        while True:
            probe = buf.find(_MAGIC, probe)
            if probe < 0:
                break
            if _frame_at(buf, probe, last) is not None:
                resume = probe
                break
            probe += 1
        if resume < 0:
            break  # a torn or damaged tail: everything from pos is cut
        result.skipped.append((pos, resume))
        pos = resume
    return result


# -- in-memory index --------------------------------------------------------------------


#: A batch of records as columns: sequence numbers, arrivals, keys, data (``zip(*records)``).
_Columns = tuple[Sequence[int], Sequence[float], Sequence[str], Sequence[bytes]]


def _columns(records: Sequence[StoredRecord]) -> _Columns:
    seqs, arrivals, keys, datas = zip(*records, strict=True)
    return seqs, arrivals, keys, datas


class _Segment:
    """One segment file and its index.

    Per record: sequence numbers and arrivals (for bisect) and the running sum of
    ``len(data) + len(partition_key)`` (so a read's byte budget is known before reading).
    Per frame: where it starts and ends and its first record, so one ``pread`` fetches
    exactly the frames holding the records a read returns.
    """

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

    def add_frame(self, start: int, end: int, columns: _Columns) -> None:
        seqs, arrivals, keys, datas = columns
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


class _ShardLog:
    __slots__ = ("dir_fd", "durable_seq", "floor", "last_seq", "path", "segments")

    def __init__(self, path: Path, dir_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.segments: list[_Segment] = []
        self.last_seq: int | None = None
        """Highest sequence number ever appended (durable or not)."""
        self.durable_seq = -1
        """Highest sequence number a completed sync pass made durable."""
        self.floor = -1
        """Records below this sequence number are trimmed (hidden from reads)."""


class _StreamDir:
    __slots__ = ("dir_fd", "path", "shards")

    def __init__(self, path: Path, dir_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.shards: dict[str, _ShardLog] = {}


@dataclass(slots=True)
class _Job:
    """One sync pass, snapshotted on the event loop and run in a worker thread."""

    metas: list[tuple[int, bytes]]
    data_fds: list[int]
    dir_fds: list[int]
    close_fds: list[int]
    remove_paths: list[Path]
    marks: list[tuple[_ShardLog, int]]


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _dir_name(stream_name: str) -> str:
    # Stream names are [a-zA-Z0-9_.-]{1,128}; the prefix keeps "." and ".." safe.
    return "s-" + stream_name


class DurableStorage:
    """Implements :class:`server.storage.base.Storage` in files under ``data_dir``.

    The constructor creates ``data_dir`` if needed, locks it against a second server,
    checks it is writable and recovers what a previous process left (see the module
    docstring); it raises :class:`DataDirError` with a one-line message when the
    directory cannot be used. ``segment_bytes`` is the rollover size of a shard's active
    segment.

    Records appended are visible to :meth:`read` once a :meth:`wait_durable` covering
    them has returned (that is, once they may be acknowledged).

    :attr:`iterator_secret` is this directory's shard-iterator signing key, the same
    on every start (see the module docstring).
    """

    def __init__(self, data_dir: Path | str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be >= 1, got {segment_bytes}")
        self.data_dir = Path(data_dir)
        self.segment_bytes = segment_bytes
        self._streams: dict[str, _StreamDir] = {}
        self._loaded: list[StreamMeta] = []
        # Everything changed since the last snapshot, for the next sync pass.
        self._pending_meta: dict[str, tuple[int, bytes]] = {}
        self._dirty_data: dict[int, None] = {}
        self._dirty_dirs: dict[int, None] = {}
        self._dirty_shards: dict[_ShardLog, None] = {}
        self._retired: list[int] = []
        self._remove: list[Path] = []
        self._changes = 0
        self._synced = 0
        self._inflight: asyncio.Future[None] | None = None
        self._failed: BaseException | None = None
        self._pass_lock = threading.Lock()
        self._closed = False
        self._packer = msgpack.Packer(use_bin_type=True)
        self._fsync_pool: ThreadPoolExecutor | None = None
        self._lock_fd = -1
        self._root_fd = -1
        self._streams_fd = -1
        self._trash_fd = -1
        self.iterator_secret = b""
        self._open()

    # -- start-up ---------------------------------------------------------------------

    def _open(self) -> None:
        where = str(self.data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if not self.data_dir.is_dir():
                raise DataDirError(f"data dir {where} is not a directory")
            self._lock_fd = os.open(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except DataDirError:
            raise
        except OSError as error:
            reason = error.strerror or error
            raise DataDirError(f"data dir {where} is not usable: {reason}") from error
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise DataDirError(f"data dir {where} is in use by another server") from error
        try:
            for sub in ("streams", "trash"):
                (self.data_dir / sub).mkdir(exist_ok=True)
            self._root_fd = os.open(self.data_dir, _O_DIR)
            self._streams_fd = os.open(self.data_dir / "streams", _O_DIR)
            self._trash_fd = os.open(self.data_dir / "trash", _O_DIR)
            self._probe()
            self.iterator_secret = self._load_or_create_secret()
            self._recover()
        except DataDirError:
            self.close()
            raise
        except OSError as error:
            self.close()
            raise DataDirError(
                f"data dir {where} is not writable: {error.strerror or error}"
            ) from error

    def _probe(self) -> None:
        """Fail at start-up, not at the first write, if the disk refuses writes or fsync."""
        probe = self.data_dir / ".probe"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
        os.fsync(self._root_fd)

    def _load_or_create_secret(self) -> bytes:
        """The directory's iterator secret, made (durably, 0600) on its first use."""
        path = self.data_dir / _SECRET_FILE
        try:
            secret = path.read_bytes()
        except FileNotFoundError:
            return self._create_secret()
        except OSError as error:
            raise DataDirError(
                f"iterator secret {path} is unreadable: {error.strerror or error}"
            ) from error
        if len(secret) != SECRET_BYTES:
            raise DataDirError(
                f"iterator secret {path} is corrupt ({len(secret)} bytes, expected "
                f"{SECRET_BYTES}); delete it to make a new one (iterators handed out "
                "before are then refused)"
            )
        return secret

    def _create_secret(self) -> bytes:
        secret = os.urandom(SECRET_BYTES)
        tmp = self.data_dir / _SECRET_TMP
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a start that died before its rename
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask, only the owner may read the key
            _write_all(fd, secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.data_dir / _SECRET_FILE)
        os.fsync(self._root_fd)
        return secret

    def _recover(self) -> None:
        for leftover in list((self.data_dir / "trash").iterdir()):
            shutil.rmtree(leftover, ignore_errors=True)
        streams_dir = self.data_dir / "streams"
        for path in sorted(streams_dir.iterdir()):
            if not path.is_dir() or not path.name.startswith("s-"):
                continue
            meta_path = path / _META_FILE
            with contextlib.suppress(FileNotFoundError):
                (path / _META_TMP).unlink()
            if not meta_path.exists():
                # Created but never saved durably: nothing in it was ever acknowledged.
                self._to_trash(path, self._streams_fd)
                continue
            try:
                meta = decode_meta(meta_path.read_bytes())
            except OSError:
                raise
            except Exception as error:
                raise DataDirError(f"stream metadata {meta_path} is unreadable: {error}") from error
            stream = _StreamDir(path, os.open(path, _O_DIR))
            self._streams[meta.name] = stream
            known = {s.shard_id for s in meta.shards}
            for shard_path in sorted(path.iterdir()):
                if not shard_path.is_dir():
                    continue
                if shard_path.name not in known:
                    self._to_trash(shard_path, stream.dir_fd)
                    continue
                stream.shards[shard_path.name] = self._recover_shard(shard_path)
            self._loaded.append(meta)
        self._flush_recovery()

    def _recover_shard(self, path: Path) -> _ShardLog:
        shard = _ShardLog(path, os.open(path, _O_DIR))
        numbered = sorted(
            (int(p.name[: -len(_SEGMENT_SUFFIX)]), p)
            for p in path.iterdir()
            if p.name.endswith(_SEGMENT_SUFFIX) and p.name[: -len(_SEGMENT_SUFFIX)].isdigit()
        )
        last = -1
        for number, seg_path in numbered:
            buf = seg_path.read_bytes()
            scan = scan_segment(buf, last)
            for start, end in scan.skipped:
                log.warning(
                    "%s: skipped %d damaged bytes at offset %d", seg_path, end - start, start
                )
            if scan.good_end < len(buf):
                log.warning(
                    "%s: cut a torn or damaged tail of %d bytes at offset %d",
                    seg_path, len(buf) - scan.good_end, scan.good_end,
                )
                os.truncate(seg_path, scan.good_end)
                self._dirty_data[self._keep_fd(os.open(seg_path, os.O_RDONLY))] = None
            if not scan.frames:
                seg_path.unlink()
                self._dirty_dirs[shard.dir_fd] = None
                continue
            segment = _Segment(seg_path, number, None)
            for start, end, frame in scan.frames:
                segment.add_frame(start, end, _columns(frame))
            shard.segments.append(segment)
            last = segment.seqs[-1]
        if last >= 0:
            shard.last_seq = shard.durable_seq = last
        return shard

    def _keep_fd(self, fd: int) -> int:
        """Close ``fd`` after the next sync pass (it is in that pass's fsync list)."""
        self._retired.append(fd)
        return fd

    def _flush_recovery(self) -> None:
        """Make the recovered state (truncations, removals) durable before serving."""
        self._dirty_dirs[self._streams_fd] = None
        self._dirty_dirs[self._trash_fd] = None
        job = self._snapshot()
        self._run_job(job)
        self._changes = self._synced = 0

    def _to_trash(self, path: Path, parent_fd: int) -> None:
        """Rename ``path`` out of the way at once; delete its files in the next sync pass."""
        target = self.data_dir / "trash" / uuid.uuid4().hex
        os.rename(path, target)
        self._dirty_dirs[parent_fd] = None
        self._dirty_dirs[self._trash_fd] = None
        self._remove.append(target)

    # -- helpers ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise InternalFailure()
        if self._closed:
            raise RuntimeError("the storage is closed")

    def _stream_dir(self, stream_name: str) -> _StreamDir:
        stream = self._streams.get(stream_name)
        if stream is None:
            path = self.data_dir / "streams" / _dir_name(stream_name)
            path.mkdir()
            stream = self._streams[stream_name] = _StreamDir(path, os.open(path, _O_DIR))
            self._dirty_dirs[self._streams_fd] = None
        return stream

    def _shard_log(self, stream: _StreamDir, shard_id: str) -> _ShardLog:
        shard = stream.shards.get(shard_id)
        if shard is None:
            path = stream.path / shard_id
            path.mkdir()
            shard = stream.shards[shard_id] = _ShardLog(path, os.open(path, _O_DIR))
            self._dirty_dirs[stream.dir_fd] = None
        return shard

    def _new_segment(self, shard: _ShardLog) -> _Segment:
        if shard.segments:
            old = shard.segments[-1]
            if old.fd is not None:
                # Sealed: the next pass fsyncs it (it is dirty) and then closes it.
                self._retired.append(old.fd)
                old.fd = None
        number = shard.segments[-1].number + 1 if shard.segments else 1
        name = f"{number:020d}{_SEGMENT_SUFFIX}"
        fd = os.open(
            name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644, dir_fd=shard.dir_fd
        )
        segment = _Segment(shard.path / name, number, fd)
        shard.segments.append(segment)
        self._dirty_dirs[shard.dir_fd] = None
        return segment

    def _active(self, shard: _ShardLog) -> _Segment:
        if shard.segments:
            segment = shard.segments[-1]
            if segment.fd is None:  # recovered: reopen the last segment for appends
                segment.fd = os.open(segment.path, os.O_RDWR | os.O_APPEND)
            return segment
        return self._new_segment(shard)

    def _find_shard(self, stream_name: str, shard_id: str) -> _ShardLog | None:
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
        self._pending_meta[stream.name] = (directory.dir_fd, encode_meta(stream))
        self._changes += 1

    def _drop_shard(self, directory: _StreamDir, shard_id: str) -> None:
        shard = directory.shards.pop(shard_id)
        self._retire_shard(shard)
        self._to_trash(shard.path, directory.dir_fd)

    def _retire_shard(self, shard: _ShardLog) -> None:
        for segment in shard.segments:
            if segment.fd is not None:
                self._retired.append(segment.fd)
                segment.fd = None
        self._retired.append(shard.dir_fd)
        self._dirty_shards.pop(shard, None)

    def delete_stream(self, stream_name: str) -> None:
        """Move the stream's directory to the trash (atomic); its files go in the next pass."""
        self._check_usable()
        directory = self._streams.pop(stream_name, None)
        self._pending_meta.pop(stream_name, None)
        if directory is None:
            return
        for shard in directory.shards.values():
            self._retire_shard(shard)
        self._retired.append(directory.dir_fd)
        try:
            self._to_trash(directory.path, self._streams_fd)
        except OSError as error:
            log.error("deleting stream %s failed: %s", stream_name, error)
            self._failed = error
            raise InternalFailure() from error
        self._changes += 1

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
        columns = _columns(records)
        frame = self._encode(columns)
        if size + len(frame) <= limit or (size == 0 and len(records) == 1):
            self._write_frame(shard, segment, frame, columns)
            return
        # The batch crosses the rollover size (rare): split it by an upper bound of each
        # record's bytes in a frame (a key character is at most 4 bytes of UTF-8).
        estimate = _HEADER_SIZE + 5
        first = 0
        for index, record in enumerate(records):
            cost = len(record[3]) + 4 * len(record[2]) + _RECORD_OVERHEAD
            if size + estimate + cost > limit and (size > 0 or index > first):
                if index > first:
                    self._write_records(shard, segment, records[first:index])
                segment = self._new_segment_or_fail(shard)
                size = 0
                estimate = _HEADER_SIZE + 5
                first = index
            estimate += cost
        self._write_records(shard, segment, records[first:])

    def _new_segment_or_fail(self, shard: _ShardLog) -> _Segment:
        try:
            return self._new_segment(shard)
        except OSError as error:
            log.error("rolling over %s failed: %s", shard.path, error)
            raise InternalFailure() from error

    def _encode(self, columns: _Columns) -> bytes:
        """The frame of a batch: one msgpack call and one CRC (the PutRecords hot path)."""
        seqs, arrivals, keys, datas = columns
        raw = [seq.to_bytes(_SEQ_BYTES, "big") for seq in seqs]
        # msgpack writes tuples as arrays: [[seq, arrival, key, data], ...].
        payload: bytes = self._packer.pack(list(zip(raw, arrivals, keys, datas, strict=True)))
        return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload

    def _write_records(
        self, shard: _ShardLog, segment: _Segment, records: Sequence[StoredRecord]
    ) -> None:
        columns = _columns(records)
        self._write_frame(shard, segment, self._encode(columns), columns)

    def _write_frame(
        self, shard: _ShardLog, segment: _Segment, frame: bytes, columns: _Columns
    ) -> None:
        fd = segment.fd
        assert fd is not None
        before = segment.size
        try:
            _write_all(fd, frame)
        except OSError as error:
            log.error("writing to %s failed: %s", segment.path, error)
            try:
                os.ftruncate(fd, before)
            except OSError:
                # The log now ends in a partial frame we cannot remove: stop acknowledging.
                self._failed = error
            raise InternalFailure() from error
        segment.add_frame(before, before + len(frame), columns)
        shard.last_seq = columns[0][-1]
        self._dirty_data[fd] = None
        self._dirty_shards[shard] = None
        self._changes += 1

    # -- group commit -----------------------------------------------------------------

    async def wait_durable(self) -> None:
        """Return once everything appended or saved before this call is on disk.

        One sync pass at a time runs in a worker thread; later callers share the next.
        Raises ``InternalFailure`` if a pass failed (now or earlier).
        """
        target = self._changes
        while True:
            if self._failed is not None:
                raise InternalFailure()
            if self._synced >= target:
                return
            inflight = self._inflight
            if inflight is None:
                inflight = self._inflight = asyncio.ensure_future(self._sync_pass())
            # A cancelled request must not cancel the pass other requests share.
            await asyncio.shield(inflight)

    async def _sync_pass(self) -> None:
        try:
            changes = self._changes
            job = self._snapshot()
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self._run_job, job)
            except BaseException as error:
                log.error("sync pass failed, refusing further writes: %r", error)
                self._failed = error
                return
            for shard, seq in job.marks:
                if seq > shard.durable_seq:
                    shard.durable_seq = seq
            self._synced = changes
        finally:
            self._inflight = None

    def _snapshot(self) -> _Job:
        job = _Job(
            metas=list(self._pending_meta.values()),
            data_fds=list(self._dirty_data),
            dir_fds=list(self._dirty_dirs),
            close_fds=self._retired,
            remove_paths=self._remove,
            marks=[(s, s.last_seq) for s in self._dirty_shards if s.last_seq is not None],
        )
        # Metadata files change their directory's entries (the rename).
        for dir_fd, _ in job.metas:
            if dir_fd not in self._dirty_dirs:
                job.dir_fds.append(dir_fd)
        self._pending_meta = {}
        self._dirty_data = {}
        self._dirty_dirs = {}
        self._dirty_shards = {}
        self._retired = []
        self._remove = []
        return job

    def _run_job(self, job: _Job) -> None:
        """The sync pass proper (worker thread): metadata, data, then directories."""
        with self._pass_lock:
            self._do_job(job)

    def _fsync_all(self, fds: list[int]) -> None:
        """fsync ``fds`` concurrently: the filesystem journal commits them together, where
        one after the other costs a journal commit each (measured: 4 files, ~8 ms in a
        row vs ~0.5 ms at once). Returns only once every call has finished."""
        if len(fds) <= 1:
            for fd in fds:
                os.fsync(fd)
            return
        if self._fsync_pool is None:
            self._fsync_pool = ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="fsync")
        futures = [self._fsync_pool.submit(os.fsync, fd) for fd in fds]
        wait(futures)
        for future in futures:
            future.result()

    def _do_job(self, job: _Job) -> None:
        try:
            for dir_fd, raw in job.metas:
                fd = os.open(
                    _META_TMP, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd
                )
                try:
                    _write_all(fd, raw)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(_META_TMP, _META_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            self._fsync_all(job.data_fds)
            self._fsync_all(job.dir_fds)
        finally:
            for fd in job.close_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for path in job.remove_paths:
            shutil.rmtree(path, ignore_errors=True)

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
        fetches exactly the frames holding them; each frame's CRC is checked again.
        """
        shard = self._find_shard(stream_name, shard_id)
        if shard is None or not shard.segments or limit <= 0:
            return []
        start = max(from_sequence_number, shard.floor)
        top = shard.durable_seq
        segments = shard.segments
        k = max(0, bisect_right([s.seqs[0] if s.seqs else -1 for s in segments], start) - 1)
        out: list[StoredRecord] = []
        budget = max_bytes
        while k < len(segments) and len(out) < limit:
            segment = segments[k]
            k += 1
            seqs = segment.seqs
            i = bisect_left(seqs, start)
            j = min(len(seqs), i + limit - len(out), bisect_right(seqs, top))
            if i >= j:
                if j < len(seqs):
                    break  # stopped at the durable top
                continue
            if max_bytes > 0:
                costs = segment.costs
                # The last m with costs[m] - costs[i] <= budget: records i .. m-1 fit.
                m = bisect_right(costs, costs[i] + budget, i, j + 1) - 1
                if m == i:
                    if out:
                        return out
                    m = i + 1  # always at least one record
                cut = min(j, m)
                budget -= costs[cut] - costs[i]
                j = cut
            out.extend(self._read_frames(segment, i, j))
            if j < len(seqs) or (max_bytes > 0 and budget <= 0):
                break  # cut by the limit, the byte budget or the durable top
        return out

    def _read_frames(self, segment: _Segment, i: int, j: int) -> list[StoredRecord]:
        """Records ``i`` to ``j - 1`` of the segment, with one ``pread`` of their frames."""
        first = bisect_right(segment.frame_first, i) - 1
        last = bisect_right(segment.frame_first, j - 1) - 1
        begin = segment.frame_starts[first]
        length = segment.frame_ends[last] - begin
        if segment.fd is not None:
            buf = os.pread(segment.fd, length, begin)
        else:
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                buf = os.pread(fd, length, begin)
            finally:
                os.close(fd)
        out: list[StoredRecord] = []
        # Frames are parsed at their indexed offsets: damage recovery skipped may lie between.
        for f in range(first, last + 1):
            found = _frame_at(buf, segment.frame_starts[f] - begin)
            if found is None:
                # Index and file disagree: the disk changed under us.
                log.error("%s: bad frame at offset %d", segment.path, segment.frame_starts[f])
                raise InternalFailure()
            base = segment.frame_first[f]
            out.extend(found[0][max(i - base, 0) : j - base])
        return out

    def _first_at_or_after_floor(self, shard: _ShardLog) -> tuple[int, int] | None:
        for k, segment in enumerate(shard.segments):
            i = bisect_left(segment.seqs, shard.floor)
            if i < len(segment.seqs):
                return k, i
        return None

    def sequence_number_at(self, stream_name: str, shard_id: str, timestamp: float) -> int | None:
        """Binary search over the arrival times of the kept records."""
        shard = self._find_shard(stream_name, shard_id)
        if shard is None:
            return None
        for segment in shard.segments:
            if not segment.arrivals or segment.arrivals[-1] < timestamp:
                continue
            i = bisect_left(segment.arrivals, timestamp)
            seq = segment.seqs[i]
            if seq >= shard.floor:
                return seq
            return self.oldest_sequence_number(stream_name, shard_id)
        return None

    def oldest_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The first record at or above the trim floor."""
        shard = self._find_shard(stream_name, shard_id)
        if shard is None:
            return None
        at = self._first_at_or_after_floor(shard)
        return None if at is None else shard.segments[at[0]].seqs[at[1]]

    def last_sequence_number(self, stream_name: str, shard_id: str) -> int | None:
        """The highest number ever appended (after a restart: the highest in the log)."""
        shard = self._find_shard(stream_name, shard_id)
        return None if shard is None else shard.last_seq

    def trim(self, stream_name: str, shard_id: str, arrived_before: float) -> int:
        """Hide records older than ``arrived_before``; delete segments wholly below.

        A segment is deleted only if a later segment holds a durable record, so the
        shard's highest sequence number always stays on disk.
        """
        shard = self._find_shard(stream_name, shard_id)
        if shard is None or not shard.segments:
            return 0
        dropped = 0
        new_floor = shard.floor
        for segment in shard.segments:
            lo = bisect_left(segment.seqs, shard.floor)
            cut = bisect_left(segment.arrivals, arrived_before)
            if cut > lo:
                dropped += cut - lo
            if cut < len(segment.seqs):
                new_floor = max(new_floor, segment.seqs[cut])
                break
            if segment.seqs:
                new_floor = max(new_floor, segment.seqs[-1] + 1)
        shard.floor = new_floor
        removable = 0
        segments = shard.segments
        while removable < len(segments) - 1:
            segment = segments[removable]
            later = segments[removable + 1]
            below_floor = not segment.seqs or segment.seqs[-1] < new_floor
            later_durable = bool(later.seqs) and later.seqs[0] <= shard.durable_seq
            if not (below_floor and later_durable):
                break
            removable += 1
        for segment in segments[:removable]:
            if segment.fd is not None:
                self._retired.append(segment.fd)
                segment.fd = None
            try:
                segment.path.unlink()
            except OSError as error:  # it stays hidden; a later trim or restart retries
                log.warning("deleting %s failed: %s", segment.path, error)
            self._dirty_dirs[shard.dir_fd] = None
        del segments[:removable]
        return dropped

    def close(self) -> None:
        """Sync what is still pending (a clean shutdown loses nothing), close every file.

        Waits for a sync pass still running in its worker thread.
        """
        if self._closed:
            return
        self._closed = True
        with self._pass_lock:
            if self._failed is None and self._synced < self._changes:
                try:
                    self._do_job(self._snapshot())
                except OSError as error:
                    log.error("final sync failed: %s", error)
            fds = list(self._retired)
            self._retired = []
            for stream in self._streams.values():
                for shard in stream.shards.values():
                    fds.extend(s.fd for s in shard.segments if s.fd is not None)
                    for segment in shard.segments:
                        segment.fd = None
                    fds.append(shard.dir_fd)
                fds.append(stream.dir_fd)
            self._streams.clear()
            fds.extend(fd for fd in (self._streams_fd, self._trash_fd, self._root_fd) if fd >= 0)
            self._streams_fd = self._trash_fd = self._root_fd = -1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1
            if self._fsync_pool is not None:
                self._fsync_pool.shutdown()
                self._fsync_pool = None
