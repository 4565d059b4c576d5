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
from collections.abc import Mapping
from typing import Any

import cbor2
import orjson

from server.core.errors import SerializationException

__all__ = [
    "CBOR_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "MAX_JSON_VALUES",
    "TOO_MANY",
    "decode_cbor_request",
    "decode_request",
    "encode_cbor_error",
    "encode_cbor_response",
    "encode_error",
    "encode_response",
    "json_values",
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


def json_values(data: bytes | bytearray) -> int:
    """How many values ``data`` (a JSON body, or any piece of one) may open: its ``{``,
    ``[`` and ``,`` (in C-speed scans; counted piece by piece as a body arrives)."""
    return data.count(b"{") + data.count(b"[") + data.count(b",")


def decode_request(body: bytes | bytearray, values: int | None = None) -> Any:
    """Parse a request body; ``values`` is its :func:`json_values` when already counted.

    An empty body is refused like unparsable JSON, as the service does (kinesalite's
    recording); SDKs send ``{}`` for actions without input.
    """
    if not body:
        raise SerializationException()
    # Every ``{``, ``[`` and ``,`` of a body may become an object (dozens of bytes each
    # from one byte of input): more than any valid request holds (500 records of a few
    # members; keys, tags and policies quoting such characters) is refused before
    # parsing.
    if (json_values(body) if values is None else values) > MAX_JSON_VALUES:
        raise SerializationException(TOO_MANY)
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


#: More JSON values (by their ``{``, ``[`` and ``,``) than any valid request has, even
#: with every string full of them: the body is refused unparsed.
MAX_JSON_VALUES = 300_000
#: More CBOR maps than any valid request has (PutRecords: 501): decoding stops there.
MAX_OBJECTS = 10_000
#: More CBOR data items of any kind than any valid request has (PutRecords: about 3,500):
#: a body holding more is refused before it is decoded.
MAX_CBOR_ITEMS = 100_000
#: The message of a body refused for holding more values than any request.
TOO_MANY = "Request body holds too many objects"


def cbor_items_over(body: bytes | bytearray, limit: int) -> bool:
    """Whether ``body`` holds more than ``limit`` CBOR data items, read from their heads
    alone (strings are skipped by their lengths): a bomb of millions of one-byte items
    costs ``limit`` steps to refuse, not a decode. A body that is not well-formed is
    left to the decoder to refuse."""
    view = memoryview(body)
    pos = 0
    end = len(body)
    items = 0
    from_bytes = int.from_bytes
    while pos < end:
        items += 1
        if items > limit:
            return True
        head = body[pos]
        info = head & 0x1F
        pos += 1
        if info < 24:
            argument = info
        elif info < 28:
            width = 1 << (info - 24)
            argument = from_bytes(view[pos : pos + width])
            pos += width
        else:  # indefinite lengths and breaks (31), reserved values (28-30)
            argument = 0
        if 0x40 <= head < 0x80 and info != 31:  # a byte or text string: its payload
            pos += argument
    return False


class _TooMany(ValueError):
    """Raised from inside the CBOR decoder to stop it."""


#: Deeper CBOR nesting than any request shape has: refused (and a cyclic body, which
#: CBOR's shared references can express, is infinitely deep).
_MAX_DEPTH = 32


def _blobs_as_base64(value: Any, depth: int = 0) -> Any:
    """Blobs as base64 text; a map key that is not text or nesting too deep is refused."""
    if depth > _MAX_DEPTH:
        raise SerializationException()
    if isinstance(value, dict):
        if any(type(k) is not str for k in value):
            raise SerializationException()
        return {k: _blobs_as_base64(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_blobs_as_base64(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return b2a_base64(value, newline=False).decode("ascii")
    return value


def decode_cbor_request(body: bytes | bytearray) -> Any:
    """Parse a CBOR body into what :func:`decode_request` gives for the same JSON request.

    Values JSON has no form for (undefined, decimals, dates, sets, unknown tags ...) are
    left for validation to refuse with the member's context.
    """
    if not body:
        raise SerializationException()
    if cbor_items_over(body, MAX_CBOR_ITEMS):
        raise SerializationException(TOO_MANY)
    maps = 0

    def count_maps(value: Mapping[Any, Any], immutable: bool) -> Mapping[Any, Any]:
        nonlocal maps
        maps += 1
        if maps > MAX_OBJECTS:
            raise _TooMany()
        return value

    try:
        parsed = cbor2.loads(body, semantic_decoders=_SEMANTIC, object_hook=count_maps)
    except (cbor2.CBORDecodeError, ValueError, RecursionError, OverflowError):
        if maps > MAX_OBJECTS:
            raise SerializationException(TOO_MANY) from None
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
