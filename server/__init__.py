"""The bundled stream server: the Kinesis Data Streams API over aiohttp."""

from __future__ import annotations

__all__: list[str] = []
