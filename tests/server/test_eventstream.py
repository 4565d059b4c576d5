"""The event-stream framing, read back with botocore's own parser."""

from __future__ import annotations

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from server.web.eventstream import encode_event, encode_exception, encode_message


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
