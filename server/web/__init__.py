"""The aiohttp side of the server: app, codec, auth shape checks, event-stream framing and
writing, the embeddable runner."""

from __future__ import annotations

from server.web.app import TARGETS, make_app
from server.web.runner import StreamServer

__all__ = ["TARGETS", "StreamServer", "make_app"]
