"""What the web layer stores on a request for its middlewares (aiohttp request keys), and
on the app for its handlers (aiohttp app keys)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from server.core.actions import Action
from server.core.errors import KinesisError
from server.core.principals import Principal
from server.web.metrics import ServerMetrics

__all__ = [
    "ACCEPTED_KEY",
    "ACTION_KEY",
    "ANSWER_KEY",
    "ERROR_KEY",
    "METRICS_KEY",
    "PAYLOAD_KEY",
    "PRINCIPAL_KEY",
    "REQUEST_ID_KEY",
]

#: The ``x-amzn-RequestId`` the middleware chose for a request (and stamps on its answer).
REQUEST_ID_KEY = web.RequestKey("request_id", str)
#: The principal whose signature a request carries (set only with ``--iam``).
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
#: The action a request names, once the server knows it answers it.
ACTION_KEY = web.RequestKey("action", Action)
#: The parsed request body.
PAYLOAD_KEY: web.RequestKey[Any] = web.RequestKey("payload")
#: The one-shot answer's body (``None`` for an empty one).
ANSWER_KEY: web.RequestKey[dict[str, Any] | None] = web.RequestKey("answer")
#: The error a request was answered with.
ERROR_KEY = web.RequestKey("error", KinesisError)
#: Called when a call answered by an event stream is accepted, before its events: the
#: observing middleware records and measures it then, not when the stream ends.
ACCEPTED_KEY: web.RequestKey[Callable[[], None]] = web.RequestKey("accepted")
#: The server's metrics, when it keeps them (event-stream writers count their events).
METRICS_KEY = web.AppKey("metrics", ServerMetrics)
