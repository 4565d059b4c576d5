"""What the web layer stores on a request for its middlewares (aiohttp request keys)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.core.actions import Action
from server.core.errors import KinesisError
from server.core.principals import Principal

__all__ = [
    "ACTION_KEY",
    "ANSWER_KEY",
    "ERROR_KEY",
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
