"""The data directory: its layout, the LOCK, the iterator secret, and recovery at start-up.

Theory of operation
-------------------
Layout under ``data_dir``::

    LOCK                                   flock'ed while a server uses the directory
    iterator-secret                        32 random bytes signing shard iterators (0600)
    streams/s-<name>/meta                  the stream's StreamMeta (msgpack), replaced atomically
    streams/s-<name>/<shard id>/<n>.seg    the shard's log segments, n = 1, 2, 3 ...
    streams/s-<name>/<shard id>/hwm        the shard's high-water mark (replaced atomically)
    quarantine/                            streams set aside at start-up, files intact
    trash/                                 deleted streams/shards, removed in the background

**Opening** creates the directory if needed, takes the LOCK (``flock``, non-blocking: a
second server fails at once), proves the disk takes writes and fsync, loads or makes
the iterator secret, then recovers. Every failure is a :class:`DataDirError` with a
one-line message.

**The iterator secret.** Shard iterators are signed tokens (``server.core.iterators``);
a consumer holding one across a restart must be able to read on, so the signing key
lives here: made once from ``os.urandom`` (temp file with mode 0600, fsync, rename,
fsync of the directory, all under the LOCK so two servers never race to make it) and
read back on every later start. A secret file of the wrong size or one that cannot be
read is a :class:`DataDirError`, not a quietly replaced key: replacing it would refuse
every iterator already handed out, which the operator should decide (delete the file).

**Recovery.** Leftover trash is deleted; a stream directory whose metadata is missing,
unreadable or names another stream is moved to ``quarantine/`` intact (a WARNING names
it); a shard directory its stream's metadata does not list goes to the trash. Every
segment is scanned once (:func:`~server.storage.durable.format.scan_segment`) to rebuild
the index, and :mod:`~server.storage.durable.recovery` judges each unreadable range: a
torn tail of the last segment is truncated, anything else is reported and kept in
place. Each shard's high-water mark (``hwm``) is read back so numbering goes on above
it. The recovered state (truncations, removals, rewritten marks) is made durable before
the storage serves anything. :func:`check_data_dir` runs the same recovery without
changing anything (``python -m server --data-dir D --check``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from pathlib import Path

from server.storage.base import StreamMeta
from server.storage.durable.commit import HWM_FILE, META_FILE, META_TMP, GroupCommit, write_all
from server.storage.durable.format import count_records, decode_hwm, decode_meta, scan_segment
from server.storage.durable.index import Segment, ShardLog, StreamDir, columns
from server.storage.durable.recovery import LOST_MARK_JUMP, Finding, RecoveryReport, is_torn

__all__ = [
    "O_DIR", "SECRET_BYTES", "SEGMENT_SUFFIX", "DataDir", "DataDirError", "check_data_dir",
]

log = logging.getLogger("server.storage")

_SECRET_FILE = "iterator-secret"
_SECRET_TMP = "iterator-secret.tmp"
#: Bytes of the iterator secret (an HMAC-SHA256 key as long as the hash's output).
SECRET_BYTES = 32
SEGMENT_SUFFIX = ".seg"
#: Flags opening a directory for fsync and ``dir_fd`` calls.
O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


class DataDirError(OSError):
    """The data directory cannot be used (not a directory, not writable, in use)."""


def _dir_name(stream_name: str) -> str:
    # Stream names are [a-zA-Z0-9_.-]{1,128}; the prefix keeps "." and ".." safe.
    return "s-" + stream_name


def _between(before: int, after: int | None) -> str:
    """The sequence numbers a damaged range lies between, in words."""
    low = f"after sequence number {before}" if before >= 0 else "from the start"
    return f"records {low}" + ("" if after is None else f" and before {after}")


class DataDir:
    """The directory's top-level files and fds; notes its own changes in ``commit``."""

    def __init__(self, path: Path, commit: GroupCommit) -> None:
        self.path = path
        self.commit = commit
        self.iterator_secret = b""
        self.streams_fd = -1
        self._lock_fd = -1
        self._root_fd = -1
        self._trash_fd = -1
        self.report = RecoveryReport()
        """What recovery found at start-up (or ``--check`` found)."""
        self.quiet = False
        """Whether findings only go to :attr:`report` (``--check`` prints them itself)."""

    def open(self, streams: dict[str, StreamDir]) -> list[StreamMeta]:
        """Lock, check and recover the directory; fill ``streams``; the saved metadata.

        On failure the caller closes what was opened (:meth:`close`, and the fds in
        ``streams``).
        """
        where = str(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.path.is_dir():
                raise DataDirError(f"data dir {where} is not a directory")
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
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
                (self.path / sub).mkdir(exist_ok=True)
            self._root_fd = os.open(self.path, O_DIR)
            self.streams_fd = os.open(self.path / "streams", O_DIR)
            self._trash_fd = os.open(self.path / "trash", O_DIR)
            self._probe()
            self.iterator_secret = self._load_or_create_secret()
            return self._recover(streams)
        except DataDirError:
            raise
        except OSError as error:
            raise DataDirError(
                f"data dir {where} is not writable: {error.strerror or error}"
            ) from error

    def check(self, streams: dict[str, StreamDir]) -> list[StreamMeta]:
        """Recover in memory only (``--check``): fill ``streams`` and :attr:`report`.

        Changes nothing on disk and keeps no fd open; refuses a directory a running
        server holds.
        """
        where = str(self.path)
        if not self.path.is_dir():
            raise DataDirError(f"data dir {where} is not a directory")
        self.quiet = True
        lock = self.path / "LOCK"
        if lock.exists():
            fd = os.open(lock, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                raise DataDirError(
                    f"data dir {where} is in use by a running server; stop it to check"
                ) from error
            self._lock_fd = fd
        secret = self.path / _SECRET_FILE
        if secret.exists() and secret.stat().st_size != SECRET_BYTES:
            self.report.findings.append(
                Finding("secret", _SECRET_FILE, "the iterator secret has the wrong size")
            )
        if not (self.path / "streams").is_dir():
            return []
        return self._recover(streams, apply=False)

    def close(self) -> None:
        """Close the directory fds and release the LOCK. Idempotent."""
        for fd in (self.streams_fd, self._trash_fd, self._root_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.streams_fd = self._trash_fd = self._root_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # -- start-up ---------------------------------------------------------------------

    def _probe(self) -> None:
        """Fail at start-up, not at the first write, if the disk refuses writes or fsync."""
        probe = self.path / ".probe"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
        os.fsync(self._root_fd)

    def _load_or_create_secret(self) -> bytes:
        """The directory's iterator secret, made (durably, 0600) on its first use."""
        path = self.path / _SECRET_FILE
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
        tmp = self.path / _SECRET_TMP
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a start that died before its rename
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask, only the owner may read the key
            write_all(fd, secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path / _SECRET_FILE)
        os.fsync(self._root_fd)
        return secret

    def _recover(self, streams: dict[str, StreamDir], apply: bool = True) -> list[StreamMeta]:
        """Rebuild the index from the files; with ``apply``, also repair and set aside.

        Without ``apply`` (``--check``) nothing on disk changes and no fd stays open.
        """
        if apply:
            for leftover in list((self.path / "trash").iterdir()):
                shutil.rmtree(leftover, ignore_errors=True)
        loaded: list[StreamMeta] = []
        for path in sorted((self.path / "streams").iterdir()):
            if not path.is_dir() or not path.name.startswith("s-"):
                continue
            meta, problem = self._read_meta(path)
            if meta is None:
                self._quarantine(path, problem, apply)
                continue
            if apply:
                with contextlib.suppress(FileNotFoundError):
                    (path / META_TMP).unlink()
            stream = StreamDir(path, os.open(path, O_DIR) if apply else -1)
            streams[meta.name] = stream
            listed = {s.shard_id: s for s in meta.shards}
            for shard_path in sorted(path.iterdir()):
                if not shard_path.is_dir():
                    continue
                if shard_path.name not in listed:
                    if apply:
                        self.to_trash(shard_path, stream.dir_fd)
                    continue
                stream.shards[shard_path.name] = self._recover_shard(shard_path, apply)
            for shard_id, shard_meta in listed.items():
                if shard_id not in stream.shards:
                    starting = shard_meta.starting_sequence_number
                    self._missing_shard(stream, shard_id, starting, apply)
            loaded.append(meta)
        if apply:
            # Make the recovered state (truncations, removals, marks) durable before serving.
            self.commit.dirty_dirs[self.streams_fd] = None
            self.commit.dirty_dirs[self._trash_fd] = None
            self.commit.flush()
        return loaded

    def _read_meta(self, path: Path) -> tuple[StreamMeta | None, str]:
        """The stream's metadata, or ``None`` and what is wrong with it."""
        meta_path = path / META_FILE
        try:
            meta = decode_meta(meta_path.read_bytes())
        except FileNotFoundError:
            return None, "its metadata file is missing"
        except Exception as error:  # any damage to the bytes, or an unreadable file
            return None, f"its metadata is unreadable ({type(error).__name__}: {error})"
        if _dir_name(meta.name) != path.name:
            return None, f"its metadata names another stream ({meta.name!r})"
        return meta, ""

    def _note(self, finding: Finding) -> None:
        self.report.findings.append(finding)
        if self.quiet:
            return
        if finding.is_damage:
            log.warning("data dir %s: %s", self.path, finding.describe())
        else:
            log.info("data dir %s: %s", self.path, finding.describe())

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.path))

    def _quarantine(self, path: Path, problem: str, apply: bool) -> None:
        """Set a stream directory aside, every file intact, and say so."""
        where = self._rel(path)
        if apply:
            quarantine = self.path / "quarantine"
            quarantine.mkdir(exist_ok=True)
            target = quarantine / f"{path.name}.{uuid.uuid4().hex[:8]}"
            os.rename(path, target)
            os.fsync(self.streams_fd)
            fd = os.open(quarantine, O_DIR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            detail = f"stream set aside in {self._rel(target)} ({problem}); it is not served"
        else:
            detail = f"stream would be set aside ({problem})"
        self._note(Finding("quarantined", where, detail))

    def _missing_shard(
        self, stream: StreamDir, shard_id: str, starting: int, apply: bool
    ) -> None:
        path = stream.path / shard_id
        self._note(
            Finding(
                "missing-shard", self._rel(path),
                "the open shard's directory is missing; its numbering jumps ahead",
                exact=False,
            )
        )
        if apply:
            shard = stream.shards[shard_id] = self.new_shard_dir(stream, shard_id)
            shard.reserved = starting + LOST_MARK_JUMP
            self.commit.pending_hwm[shard] = None

    def _recover_shard(self, path: Path, apply: bool) -> ShardLog:
        shard = ShardLog(path, os.open(path, O_DIR) if apply else -1)
        numbered = sorted(
            (int(p.name[: -len(SEGMENT_SUFFIX)]), p)
            for p in path.iterdir()
            if p.name.endswith(SEGMENT_SUFFIX) and p.name[: -len(SEGMENT_SUFFIX)].isdigit()
        )
        mark = self._read_mark(path, bool(numbered))
        top_on_disk = numbered[-1][0] if numbered else 0
        top = max(top_on_disk, mark[1] if mark else 0)
        if mark is not None and mark[1] > top_on_disk:
            first = top_on_disk + 1
            self._note(
                Finding(
                    "missing-segments", self._rel(path),
                    f"segments {first} to {mark[1]} (the last it had) are missing",
                    exact=False,
                )
            )
        last = -1
        previous = 0
        for k, (number, seg_path) in enumerate(numbered):
            if previous and number > previous + 1:
                self._note(
                    Finding(
                        "missing-segments", self._rel(path),
                        f"segments {previous + 1} to {number - 1} are missing "
                        f"(records after sequence number {last})",
                        exact=False,
                    )
                )
            previous = number
            is_last = k == len(numbered) - 1 and number == top
            segment, ends_damaged = self._recover_segment(
                shard, seg_path, number, last, is_last, apply
            )
            if segment is not None:
                shard.segments.append(segment)
                last = segment.seqs[-1]
            if is_last:
                shard.sealed = ends_damaged
        shard.top_segment = top
        if last >= 0:
            shard.last_seq = shard.durable_seq = last
        if mark is not None:
            shard.reserved = max(mark[0], last)
        elif numbered:
            # The mark is lost: whatever the log lost at its end may have had numbers up
            # to anywhere, so numbering jumps beyond any a shard can have used.
            shard.reserved = max(last, 0) + LOST_MARK_JUMP
        stale = mark != (shard.reserved, shard.top_segment)
        if apply and (numbered or mark is not None) and stale:
            self.commit.pending_hwm[shard] = None
        return shard

    def _read_mark(self, path: Path, has_segments: bool) -> tuple[int, int] | None:
        """The shard's high-water mark, or ``None`` (reported when segments exist)."""
        try:
            raw = (path / HWM_FILE).read_bytes()
        except FileNotFoundError:
            if has_segments:
                self._note(
                    Finding(
                        "mark", self._rel(path / HWM_FILE),
                        "the high-water mark is missing; numbering jumps ahead",
                        exact=False,
                    )
                )
            return None
        mark = decode_hwm(raw)
        if mark is None:
            self._note(
                Finding(
                    "mark", self._rel(path / HWM_FILE),
                    "the high-water mark is unreadable; numbering jumps ahead",
                    exact=False,
                )
            )
        return mark

    def _recover_segment(
        self, shard: ShardLog, seg_path: Path, number: int, after: int, is_last: bool,
        apply: bool,
    ) -> tuple[Segment | None, bool]:
        """Index one segment; report its damage; ``(segment or None, ends in damage)``."""
        buf = seg_path.read_bytes()
        scan = scan_segment(buf, after)
        where = self._rel(seg_path)
        for start, end in scan.skipped:
            lost, exact = count_records(buf, start, end)
            before = [f[2][-1][0] for f in scan.frames if f[1] <= start]
            after_it = [f[2][0][0] for f in scan.frames if f[0] >= end]
            between = _between(before[-1] if before else after, after_it[0])
            self._note(
                Finding(
                    "damaged", where, f"unreadable ({between}); kept in place",
                    start, end, lost, exact,
                )
            )
        ends_damaged = False
        if scan.good_end < len(buf):
            start, end = scan.good_end, len(buf)
            if is_last and is_torn(buf, start):
                self._note(Finding("torn", where, "an interrupted write, cut", start, end))
                if apply:
                    os.truncate(seg_path, start)
                    # fsync'ed by the recovery pass, closed after it.
                    fd = os.open(seg_path, os.O_RDONLY)
                    self.commit.retired.append(fd)
                    self.commit.dirty_data[fd] = None
                buf = buf[:start]
            else:
                lost, exact = count_records(buf, start, end)
                last = scan.frames[-1][2][-1][0] if scan.frames else after
                self._note(
                    Finding(
                        "damaged", where, f"unreadable to the end of the segment ("
                        f"{_between(last, None)}); kept in place, appends go to a new "
                        "segment", start, end, lost, exact,
                    )
                )
                ends_damaged = True
        if not scan.frames:
            if not buf and is_last and apply:
                # Made by a rollover whose first write never reached the disk.
                seg_path.unlink()
                self.commit.dirty_dirs[shard.dir_fd] = None
            return None, ends_damaged
        segment = Segment(seg_path, number, None)
        for start, end, frame in scan.frames:
            segment.add_frame(start, end, columns(frame))
        return segment, ends_damaged

    # -- changes while serving --------------------------------------------------------

    def new_stream_dir(self, stream_name: str) -> StreamDir:
        """Create a stream's directory (durable with the next pass)."""
        path = self.path / "streams" / _dir_name(stream_name)
        path.mkdir()
        stream = StreamDir(path, os.open(path, O_DIR))
        self.commit.dirty_dirs[self.streams_fd] = None
        return stream

    def new_shard_dir(self, stream: StreamDir, shard_id: str) -> ShardLog:
        """Create a shard's directory in its stream's (durable with the next pass)."""
        path = stream.path / shard_id
        path.mkdir()
        shard = ShardLog(path, os.open(path, O_DIR))
        self.commit.dirty_dirs[stream.dir_fd] = None
        return shard

    def to_trash(self, path: Path, parent_fd: int) -> None:
        """Rename ``path`` out of the way at once; delete its files in the next sync pass."""
        target = self.path / "trash" / uuid.uuid4().hex
        os.rename(path, target)
        self.commit.dirty_dirs[parent_fd] = None
        self.commit.dirty_dirs[self._trash_fd] = None
        self.commit.remove.append(target)


def check_data_dir(path: Path) -> tuple[RecoveryReport, str]:
    """Verify a data directory offline, changing nothing: the findings and a summary line.

    Raises :class:`DataDirError` when it is not a directory or a server is using it.
    """
    data_dir = DataDir(path, GroupCommit())
    streams: dict[str, StreamDir] = {}
    try:
        loaded = data_dir.check(streams)
    finally:
        data_dir.close()
    shards = [shard for stream in streams.values() for shard in stream.shards.values()]
    records = sum(len(seg.seqs) for shard in shards for seg in shard.segments)
    summary = (
        f"{len(loaded)} streams, {len(shards)} shards, "
        f"{sum(len(shard.segments) for shard in shards)} readable segments, "
        f"{records} records"
    )
    return data_dir.report, summary
