"""The event-stream framing: our encoder read back with botocore's parser, our decoder
checked against both, damaged input refused with a clear error."""

from __future__ import annotations

import struct
import uuid
from binascii import crc32

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from kpl.protocol.eventstream import (
    EventStreamDecoder,
    EventStreamError,
    Message,
    encode_event,
    encode_exception,
    encode_message,
)


def parse(raw: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(m.headers, m.payload) for m in buffer]


def test_botocore_reads_our_messages() -> None:
    raw = encode_event("initial-response", b"{}", "application/json") + encode_exception(
        "ResourceNotFoundException", b'{"message":"gone"}', "application/json"
    )
    (first, second) = parse(raw)
    assert first == (
        {":message-type": "event", ":event-type": "initial-response",
         ":content-type": "application/json"},
        b"{}",
    )
    assert second[0][":exception-type"] == "ResourceNotFoundException"
    assert second[1] == b'{"message":"gone"}'


def test_empty_and_large_payloads_and_unicode_headers() -> None:
    big = bytes(range(256)) * 4096
    (message,) = parse(encode_message([("ünï", "välue")], big))
    assert message == ({"ünï": "välue"}, big)
    (empty,) = parse(encode_message([], b""))
    assert empty == ({}, b"")


def test_a_flipped_bit_fails_the_checksum() -> None:
    raw = bytearray(encode_event("E", b"payload", "application/json"))
    raw[-6] ^= 1
    with pytest.raises(ChecksumMismatch):
        parse(bytes(raw))


# --------------------------------------------------------------------------- the decoder


def _stream() -> bytes:
    return (
        encode_event("initial-response", b"{}", "application/json")
        + encode_event("SubscribeToShardEvent", b'{"Records":[]}' * 50, "application/json")
        + encode_exception("ResourceNotFoundException", b'{"message":"gone"}', "text/x")
    )


def test_decoder_reads_what_the_encoder_wrote_in_any_chunking() -> None:
    raw = _stream()
    whole = EventStreamDecoder().feed(raw)
    assert [m.headers.get(":event-type", m.headers.get(":exception-type")) for m in whole] == [
        "initial-response", "SubscribeToShardEvent", "ResourceNotFoundException",
    ]
    assert whole[1].payload == b'{"Records":[]}' * 50
    assert whole[2].headers[":message-type"] == "exception"
    for size in (1, 2, 7, 12, 13, 100):
        decoder = EventStreamDecoder()
        got: list[Message] = []
        for at in range(0, len(raw), size):
            got += decoder.feed(raw[at : at + size])
        assert got == whole
        assert decoder.pending == 0
        assert decoder.offset == len(raw)


def test_decoder_agrees_with_botocore() -> None:
    raw = _stream() + encode_message([("ünï", "välue")], bytes(range(256)) * 300)
    ours = [(m.headers, m.payload) for m in EventStreamDecoder().feed(raw)]
    assert ours == parse(raw)


def _typed_header(name: str, kind: int, value: bytes) -> bytes:
    raw = name.encode()
    return bytes((len(raw),)) + raw + bytes((kind,)) + value


def _frame(raw_headers: bytes, payload: bytes) -> bytes:
    total = 16 + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", crc32(prelude)) + raw_headers + payload
    return head + struct.pack(">I", crc32(head))


def test_decoder_reads_every_header_type() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    raw_headers = b"".join([
        _typed_header("t", 0, b""),
        _typed_header("f", 1, b""),
        _typed_header("b", 2, struct.pack(">b", -2)),
        _typed_header("s", 3, struct.pack(">h", -300)),
        _typed_header("i", 4, struct.pack(">i", 70_000)),
        _typed_header("l", 5, struct.pack(">q", 2**40)),
        _typed_header("y", 6, struct.pack(">H", 3) + b"\x00\x01\x02"),
        _typed_header("ts", 8, struct.pack(">q", 1_700_000_000_000)),
        _typed_header("u", 9, ident.bytes),
    ])
    (message,) = EventStreamDecoder().feed(_frame(raw_headers, b"p"))
    assert message.headers == {
        "t": True, "f": False, "b": -2, "s": -300, "i": 70_000, "l": 2**40,
        "y": b"\x00\x01\x02", "ts": 1_700_000_000_000, "u": ident,
    }
    assert message == Message(message.headers, b"p")
    # botocore agrees on every value (it leaves a UUID as its 16 bytes).
    ((theirs, _),) = parse(_frame(raw_headers, b"p"))
    assert theirs == {**message.headers, "u": ident.bytes}


def test_a_corrupt_message_checksum_is_a_clear_error_and_keeps_what_came_before() -> None:
    good = encode_event("A", b"first", "application/json")
    bad = bytearray(encode_event("B", b"second", "application/json"))
    bad[-6] ^= 1  # a payload byte
    decoder = EventStreamDecoder()
    assert [m.payload for m in decoder.feed(good)] == [b"first"]
    with pytest.raises(EventStreamError, match=rf"at byte {len(good)}: message checksum mismatch"):
        decoder.feed(bytes(bad))
    # Nothing after a damaged frame is trusted: the decoder stays broken.
    with pytest.raises(EventStreamError, match="message checksum mismatch"):
        decoder.feed(good)


def test_a_corrupt_prelude_is_a_clear_error() -> None:
    raw = bytearray(encode_event("A", b"x", "application/json"))
    raw[2] ^= 0x10  # the total length
    with pytest.raises(EventStreamError, match="at byte 0: prelude checksum mismatch"):
        EventStreamDecoder().feed(bytes(raw))


def test_something_else_than_an_event_stream_is_refused() -> None:
    with pytest.raises(EventStreamError, match="prelude checksum mismatch"):
        EventStreamDecoder().feed(b'{"__type":"InternalFailure","message":"no"}')


@pytest.mark.parametrize(
    ("total", "headers_length", "match"),
    [
        (8, 0, "length 8 outside"),
        (32 * 1024 * 1024, 0, "outside 16..16777216"),
        (40, 30, "headers length 30 does not fit its 40-byte message"),
    ],
)
def test_impossible_lengths_are_refused(total: int, headers_length: int, match: str) -> None:
    prelude = struct.pack(">II", total, headers_length)
    with pytest.raises(EventStreamError, match=match):
        EventStreamDecoder().feed(prelude + struct.pack(">I", crc32(prelude)))


@pytest.mark.parametrize(
    ("raw_headers", "match"),
    [
        (_typed_header("x", 42, b""), "header 'x' has unknown type 42"),
        (_typed_header("x", 7, struct.pack(">H", 99) + b"ab"), "run past their"),
        (b"\x05ab", "run past their"),
        (_typed_header("x", 7, struct.pack(">H", 2) + b"\xff\xfe"), "not valid UTF-8"),
    ],
)
def test_unreadable_headers_are_refused(raw_headers: bytes, match: str) -> None:
    with pytest.raises(EventStreamError, match=match):
        EventStreamDecoder().feed(_frame(raw_headers, b""))
