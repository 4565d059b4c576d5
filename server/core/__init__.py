"""The server's sans-IO core: the action registry, streams, shards, records, validation,
stream consumers and their SubscribeToShard subscriptions, stream settings."""

from __future__ import annotations

from server.core.engine import Engine, EngineConfig
from server.core.errors import KinesisError

__all__ = ["Engine", "EngineConfig", "KinesisError"]
