"""Durable storage: per-shard log segments on disk, group-committed fsyncs, crash recovery.

The package is split by what owns the state, each module with its own theory of
operation:

* :mod:`~server.storage.durable.format` — the on-disk bytes: record frames (one encoder,
  one decoder) and stream metadata; pure functions;
* :mod:`~server.storage.durable.index` — the in-memory index of every kept record
  (segments, frames, the durable top and the trim floor), and read planning;
* :mod:`~server.storage.durable.commit` — group commit: the changes noted since the last
  sync pass and the passes that fsync them, one for many writers;
* :mod:`~server.storage.durable.datadir` — the directory: layout, LOCK, the
  iterator-signing secret, recovery at start-up and the offline check;
* :mod:`~server.storage.durable.recovery` — recovery's judgement: a torn tail versus
  damage, the high-water mark's rules, and the report of what was found;
* :mod:`~server.storage.durable.storage` — :class:`DurableStorage`, the
  ``server.storage.base.Storage`` protocol over the others, with reads and trims' file
  work kept off the event loop.
"""

from __future__ import annotations

from server.storage.durable.datadir import SECRET_BYTES, DataDirError, check_data_dir
from server.storage.durable.format import (
    ScanResult,
    decode_meta,
    encode_frame,
    encode_meta,
    frame_at,
    scan_segment,
)
from server.storage.durable.recovery import Finding, RecoveryReport
from server.storage.durable.storage import DEFAULT_SEGMENT_BYTES, DurableStorage

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "SECRET_BYTES",
    "DataDirError",
    "DurableStorage",
    "Finding",
    "RecoveryReport",
    "ScanResult",
    "check_data_dir",
    "decode_meta",
    "encode_frame",
    "encode_meta",
    "frame_at",
    "scan_segment",
]
