"""The JSON 1.1 wire codec: orjson both ways, base64 blobs, epoch-second timestamps.

The engine answers with plain dicts holding ``bytes`` for blobs and ``float`` epoch
seconds for timestamps, so encoding is one ``orjson.dumps`` whose ``default`` hook turns
``bytes`` into base64 (orjson calls it only for types it does not know). Decoding is
``orjson.loads``; blobs in requests are decoded (and checked) by the engine's validation,
because a bad blob is a ``SerializationException`` with the member's context.
"""

from __future__ import annotations

from binascii import b2a_base64
from typing import Any

import orjson

from server.core.errors import SerializationException

__all__ = ["JSON_CONTENT_TYPE", "decode_request", "encode_error", "encode_response"]

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


def _default(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return b2a_base64(value, newline=False).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_response(result: dict[str, Any]) -> bytes:
    """The JSON body of a successful response."""
    return orjson.dumps(result, default=_default)


def encode_error(code: str, message: str) -> bytes:
    """The JSON body of an error: ``{"__type": code, "message": message}``.

    Without a message the service sends ``{"__type": code}`` alone (an unknown target, a
    body that is not JSON), as recorded against it by kinesalite's authors.
    """
    if not message:
        return orjson.dumps({"__type": code})
    return orjson.dumps({"__type": code, "message": message})


def decode_request(body: bytes) -> Any:
    """Parse a request body.

    An empty body is refused like unparsable JSON, as the service does (kinesalite's
    recording); SDKs send ``{}`` for actions without input.
    """
    if not body:
        raise SerializationException()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # The service names no cause: the error is ``{"__type": "SerializationException"}``.
        raise SerializationException() from None
