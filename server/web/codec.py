"""The wire codecs: JSON 1.1 (orjson, base64 blobs, epoch seconds) and CBOR 1.1.

The engine answers with plain dicts holding ``bytes`` for blobs and ``float`` epoch
seconds for timestamps, so encoding is one ``orjson.dumps`` whose ``default`` hook turns
``bytes`` into base64 (orjson calls it only for types it does not know). Decoding is
``orjson.loads``; blobs in requests are decoded (and checked) by the engine's validation,
because a bad blob is a ``SerializationException`` with the member's context.

CBOR (``application/x-amz-cbor-1.1``, the Java SDKs' default) carries the same members
with blobs as byte strings and timestamps as tag 1 holding epoch **milliseconds**. It is
translated at this boundary into exactly what the JSON path gives the engine (blobs
base64-encoded again, timestamps in seconds) and back (byte strings stay bytes, the
output timestamps become tag 1 milliseconds), so the engine knows one wire format. That
costs a base64 round trip per blob, paid only by CBOR clients.
"""

from __future__ import annotations

from binascii import b2a_base64
from typing import Any

import cbor2
import orjson

from server.core.errors import SerializationException

__all__ = [
    "CBOR_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "decode_cbor_request",
    "decode_request",
    "encode_cbor_error",
    "encode_cbor_response",
    "encode_error",
    "encode_response",
]

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
CBOR_CONTENT_TYPE = "application/x-amz-cbor-1.1"
#: Output members that are timestamps (tag 1 milliseconds in CBOR).
_TIMESTAMP_KEYS = frozenset(
    {"ApproximateArrivalTimestamp", "ConsumerCreationTimestamp", "StreamCreationTimestamp"}
)


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
    body that is not JSON); a ``SerializationException`` carries its text under
    ``Message``, as the service's own (Coral) serializer writes it.
    """
    if not message:
        return orjson.dumps({"__type": code})
    return orjson.dumps({"__type": code, _message_key(code): message})


def _message_key(code: str) -> str:
    return "Message" if code == "SerializationException" else "message"


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


# -- CBOR ---------------------------------------------------------------------------


def _epoch_millis(value: Any, immutable: bool) -> float:
    """CBOR tag 1 as the AWS SDKs write it: epoch milliseconds, returned in seconds."""
    if type(value) is bool or not isinstance(value, int | float):
        raise ValueError("tag 1 must hold a number")
    return value / 1000.0


_SEMANTIC = {1: _epoch_millis}


def _blobs_as_base64(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _blobs_as_base64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blobs_as_base64(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return b2a_base64(value, newline=False).decode("ascii")
    return value


def decode_cbor_request(body: bytes) -> Any:
    """Parse a CBOR body into what :func:`decode_request` gives for the same JSON request."""
    if not body:
        raise SerializationException()
    try:
        parsed = cbor2.loads(body, semantic_decoders=_SEMANTIC)
    except (cbor2.CBORDecodeError, ValueError):
        raise SerializationException() from None
    return _blobs_as_base64(parsed)


def _timestamps_as_tags(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: cbor2.CBORTag(1, round(v * 1000))
            if k in _TIMESTAMP_KEYS and isinstance(v, int | float)
            else _timestamps_as_tags(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_timestamps_as_tags(v) for v in value]
    return value


def encode_cbor_response(result: dict[str, Any]) -> bytes:
    """The CBOR body of a successful response (blobs as byte strings, tag 1 milliseconds)."""
    return cbor2.dumps(_timestamps_as_tags(result))


def encode_cbor_error(code: str, message: str) -> bytes:
    """The CBOR body of an error: the same members as :func:`encode_error`."""
    if not message:
        return cbor2.dumps({"__type": code})
    return cbor2.dumps({"__type": code, _message_key(code): message})
