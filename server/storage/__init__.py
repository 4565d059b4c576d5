"""Where the stream server keeps metadata and records, behind one small protocol."""

from __future__ import annotations

from server.storage.base import ShardMeta, Storage, StoredRecord, StreamMeta
from server.storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "ShardMeta", "Storage", "StoredRecord", "StreamMeta"]
