"""The server's sans-IO core: streams, shards, sequence numbers, iterators, validation."""

from __future__ import annotations

from server.core.engine import Engine, EngineConfig
from server.core.errors import KinesisError

__all__ = ["Engine", "EngineConfig", "KinesisError"]
