"""The ``application/vnd.amazon.eventstream`` framing: messages to bytes and back.

A message is a 12-byte prelude (total length, headers length, both big-endian u32, then
the CRC32 of those 8 bytes), the headers, the payload and the CRC32 of everything before
it. A header is its name (u8 length + UTF-8), a type byte and a value. The encoder
writes string headers only (type 7: u16 length + UTF-8), which is all SubscribeToShard's
messages use: ``:message-type`` (``event`` or ``exception``), ``:event-type`` or
``:exception-type``, and ``:content-type``. The decoder reads every header type.

:class:`EventStreamDecoder` is sans-IO: feed it bytes as they arrive, in chunks of any
size, and it returns the whole messages they complete. Damaged input (a checksum that
does not match, lengths that do not add up, a header it cannot read) raises
:class:`EventStreamError` naming what is wrong and where; the decoder is then unusable,
since nothing after a damaged frame can be trusted.
"""

from __future__ import annotations

import struct
import uuid
from binascii import crc32
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CONTENT_TYPE",
    "EventStreamDecoder",
    "EventStreamError",
    "HeaderValue",
    "Message",
    "encode_event",
    "encode_exception",
    "encode_message",
]

#: The HTTP content type of an event-stream response.
CONTENT_TYPE: Final = "application/vnd.amazon.eventstream"
_STRING: Final = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_PRELUDE_SIZE: Final = _PRELUDE.size + _CRC.size
#: The smallest message: a prelude and the message CRC, no headers, no payload.
_MIN_MESSAGE: Final = _PRELUDE_SIZE + _CRC.size
#: The format's limits: 16 MiB per message, 128 KiB of headers.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
MAX_HEADERS_BYTES: Final = 128 * 1024

#: A decoded header's value, by type: booleans, integers (byte, short, int, long),
#: bytes, strings, timestamps (epoch milliseconds, as an int) and UUIDs.
HeaderValue = bool | int | bytes | str | uuid.UUID


class EventStreamError(ValueError):
    """The bytes are not a well-formed event stream (see the message for what and where)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message."""

    headers: dict[str, HeaderValue]
    payload: bytes


# --------------------------------------------------------------------------- encoding


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


# --------------------------------------------------------------------------- decoding

# Fixed-size header values by type byte: (size, struct format or None for raw).
_FIXED: Final[dict[int, tuple[int, str]]] = {2: (1, ">b"), 3: (2, ">h"), 4: (4, ">i"),
                                             5: (8, ">q"), 8: (8, ">q")}


def _headers(raw: bytes, where: int) -> dict[str, HeaderValue]:
    """Parse a message's header block (``where``: the message's offset, for errors)."""
    headers: dict[str, HeaderValue] = {}
    at = 0
    end = len(raw)
    try:
        while at < end:
            name_length = raw[at]
            name = raw[at + 1 : at + 1 + name_length].decode()
            at += 1 + name_length
            kind = raw[at]
            at += 1
            value: HeaderValue
            if kind == 0 or kind == 1:
                value = kind == 0
            elif kind in _FIXED:
                size, fmt = _FIXED[kind]
                if at + size > end:
                    raise IndexError
                (value,) = struct.unpack_from(fmt, raw, at)
                at += size
            elif kind == 6 or kind == _STRING:
                (length,) = struct.unpack_from(">H", raw, at)
                at += 2
                if at + length > end:
                    raise IndexError
                data = raw[at : at + length]
                at += length
                value = data.decode() if kind == _STRING else data
            elif kind == 9:
                if at + 16 > end:
                    raise IndexError
                value = uuid.UUID(bytes=raw[at : at + 16])
                at += 16
            else:
                raise EventStreamError(
                    f"event stream message at byte {where}: header {name!r} has unknown "
                    f"type {kind}"
                )
            headers[name] = value
    except (IndexError, struct.error):
        raise EventStreamError(
            f"event stream message at byte {where}: its headers run past their "
            f"{end}-byte block"
        ) from None
    except UnicodeDecodeError:
        raise EventStreamError(
            f"event stream message at byte {where}: a header is not valid UTF-8"
        ) from None
    return headers


class EventStreamDecoder:
    """Whole messages out of an event stream's bytes, fed in chunks of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: Bytes of whole messages decoded so far (where the next message starts).
        self.offset = 0
        self._broken: EventStreamError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole message yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return the messages it completed, in order."""
        if self._broken is not None:
            raise self._broken
        buffer = self._buffer
        buffer += data
        out: list[Message] = []
        start = 0
        try:
            while len(buffer) - start >= _PRELUDE_SIZE:
                total, headers_length = _PRELUDE.unpack_from(buffer, start)
                (prelude_crc,) = _CRC.unpack_from(buffer, start + _PRELUDE.size)
                where = self.offset
                if crc32(buffer[start : start + _PRELUDE.size]) != prelude_crc:
                    raise EventStreamError(
                        f"event stream message at byte {where}: prelude checksum mismatch "
                        "(corrupt or not an event stream)"
                    )
                if not _MIN_MESSAGE <= total <= MAX_MESSAGE_BYTES:
                    raise EventStreamError(
                        f"event stream message at byte {where}: length {total} outside "
                        f"{_MIN_MESSAGE}..{MAX_MESSAGE_BYTES}"
                    )
                if headers_length > min(MAX_HEADERS_BYTES, total - _MIN_MESSAGE):
                    raise EventStreamError(
                        f"event stream message at byte {where}: headers length "
                        f"{headers_length} does not fit its {total}-byte message"
                    )
                if len(buffer) - start < total:
                    break
                body_end = start + total - _CRC.size
                (message_crc,) = _CRC.unpack_from(buffer, body_end)
                with memoryview(buffer) as view:
                    # No copy of a (up to 16 MiB) message just to check it.
                    checksum = crc32(view[start:body_end])
                if checksum != message_crc:
                    raise EventStreamError(
                        f"event stream message at byte {where}: message checksum mismatch "
                        "(the message was damaged)"
                    )
                headers_at = start + _PRELUDE_SIZE
                payload_at = headers_at + headers_length
                headers = _headers(bytes(buffer[headers_at:payload_at]), where)
                out.append(Message(headers, bytes(buffer[payload_at:body_end])))
                start += total
                self.offset += total
        except EventStreamError as error:
            self._broken = error
            raise
        finally:
            del buffer[:start]
        return out
