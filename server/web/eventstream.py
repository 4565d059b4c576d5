"""The ``application/vnd.amazon.eventstream`` framing: one message as bytes.

A message is a 12-byte prelude (total length, headers length, both big-endian u32, then
the CRC32 of those 8 bytes), the headers, the payload and the CRC32 of everything before
it. A header is its name (u8 length + UTF-8), a type byte and a value; only strings are
written here (type 7: u16 length + UTF-8), which is all SubscribeToShard's messages use:
``:message-type`` (``event`` or ``exception``), ``:event-type`` or ``:exception-type``,
and ``:content-type``.
"""

from __future__ import annotations

import struct
from binascii import crc32

__all__ = ["CONTENT_TYPE", "encode_event", "encode_exception", "encode_message"]

#: The HTTP content type of an event-stream response.
CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")


def _header(name: str, value: str) -> bytes:
    raw_name = name.encode()
    raw_value = value.encode()
    return (
        bytes((len(raw_name),)) + raw_name + bytes((_STRING,))
        + struct.pack(">H", len(raw_value)) + raw_value
    )


def encode_message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One framed message with string ``headers`` (in order) and ``payload``."""
    raw_headers = b"".join(_header(name, value) for name, value in headers)
    total = _PRELUDE.size + _CRC.size + len(raw_headers) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + _CRC.pack(crc32(prelude)) + raw_headers + payload
    return head + _CRC.pack(crc32(head))


def encode_event(event_type: str, payload: bytes, content_type: str) -> bytes:
    """An event message (``initial-response`` or a modelled event)."""
    return encode_message(
        [(":message-type", "event"), (":event-type", event_type),
         (":content-type", content_type)],
        payload,
    )


def encode_exception(code: str, payload: bytes, content_type: str) -> bytes:
    """An exception message: the error ``code`` and its ``{"message": ...}`` payload."""
    return encode_message(
        [(":message-type", "exception"), (":exception-type", code),
         (":content-type", content_type)],
        payload,
    )
