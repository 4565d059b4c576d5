"""kpl: an asyncio producer library for Kinesis-style data streams."""

from __future__ import annotations

__all__: list[str] = []
