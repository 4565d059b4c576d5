"""GetRecords read-ahead: the storage fetches what the engine will read, off the loop.

The engine is sans-IO and reads storage synchronously. Before it runs GetRecords, the
web layer decodes the shard iterator the same way the engine will and awaits
``Storage.read_ahead`` with the read the engine is about to make, so a storage on disk
preads in a worker thread and the engine's synchronous read is served from memory. Any
request the engine would refuse (a bad or expired iterator, an invalid ``Limit``) is
simply not read ahead: the engine answers it as always.
"""

from __future__ import annotations

from typing import Any

from kpl.protocol.limits import GET_RECORDS_MAX_BYTES, GET_RECORDS_MAX_LIMIT
from server.core.engine import Engine
from server.core.errors import KinesisError

__all__ = ["read_ahead"]


async def read_ahead(engine: Engine, payload: Any, now: float) -> None:
    """Let ``engine.storage`` fetch what ``GetRecords(payload)`` at ``now`` will read."""
    if not isinstance(payload, dict):
        return
    token = payload.get("ShardIterator")
    limit = payload.get("Limit", GET_RECORDS_MAX_LIMIT)
    if not isinstance(token, str) or type(limit) is not int:
        return
    if not 1 <= limit <= GET_RECORDS_MAX_LIMIT:
        return
    try:
        state = engine.iterators.decode(token, now)
    except KinesisError:
        return
    await engine.storage.read_ahead(
        state.stream_name, state.shard_id, state.position, limit, GET_RECORDS_MAX_BYTES
    )
