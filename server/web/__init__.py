"""The aiohttp side of the server: app, codec, auth shape checks, the embeddable runner."""

from __future__ import annotations

from server.web.app import TARGETS, make_app
from server.web.runner import StreamServer

__all__ = ["TARGETS", "StreamServer", "make_app"]
