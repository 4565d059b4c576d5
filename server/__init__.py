"""The bundled stream server: the Kinesis Data Streams API over aiohttp.

Embed it with ``async with StreamServer(port=0) as server: ...`` (``server.url``), or run
``python -m server --port 4567``.
"""

from __future__ import annotations

from server.config import ServerConfig
from server.web.runner import StreamServer

__all__ = ["ServerConfig", "StreamServer"]
