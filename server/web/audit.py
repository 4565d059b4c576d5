"""The audit log's writer: CloudTrail records as JSON lines, off the event loop.

The loop only puts a record on a queue (:meth:`AuditLog.write`, never blocking); one
writer thread serialises and writes them, flushes at least every ``flush_seconds`` when
something was written, and on :meth:`AuditLog.close` writes what is queued, flushes and
closes the file. The file is opened by the constructor, so a log that cannot be opened
is an :class:`OSError` when the server starts, never a silent gap. A write that fails
later is logged and counted (:attr:`AuditLog.failed`) rather than stopping the server.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

__all__ = ["AuditLog"]

log = logging.getLogger("server.audit")

_STOP: Final = object()


class AuditLog:
    """One JSON line per record, appended to ``target`` (``"-"``: standard output)."""

    def __init__(self, target: str | Path, *, flush_seconds: float = 1.0) -> None:
        self.target = str(target)
        self._owns_file = self.target != "-"
        self._file: BinaryIO = (
            open(self.target, "ab")  # noqa: SIM115 - closed by the writer thread
            if self._owns_file
            else sys.stdout.buffer
        )
        self._flush_seconds = flush_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
        self._closed = False
        #: Records lost to write errors (each also logged).
        self.failed = 0
        #: Set each time written records have been flushed to the file.
        self.flushed = threading.Event()
        self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (never blocks; ignored once closed)."""
        if not self._closed:
            self._queue.put(record)

    def close(self) -> None:
        """Write every queued record, flush and close the file. Blocks until done;
        idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def _emit(self, record: Any) -> bool:
        try:
            self._file.write(orjson.dumps(record) + b"\n")
        except (OSError, TypeError, ValueError):
            self.failed += 1
            log.exception("audit log %s: a record could not be written", self.target)
            return False
        return True

    def _flush(self) -> None:
        try:
            self._file.flush()
        except OSError:
            log.exception("audit log %s: flush failed", self.target)
        else:
            self.flushed.set()

    def _run(self) -> None:
        dirty = False
        deadline = time.monotonic() + self._flush_seconds
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    dirty = self._emit(item) or dirty
                if time.monotonic() >= deadline:
                    if dirty:
                        self._flush()
                        dirty = False
                    deadline = time.monotonic() + self._flush_seconds
        finally:
            self._flush()
            if self._owns_file:
                self._file.close()
