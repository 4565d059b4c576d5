"""Inputs that used to be mishandled: each gets the service's 4xx, shaped as AWS errors."""

from __future__ import annotations

import gzip
import socket
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import cbor2
import orjson
import pytest

from tests.server.test_wire import AUTH, CBOR, error_body, post

ACCOUNT = "000000000000"


def call(url: str, target: str, body: Any, **headers: str) -> tuple[int, Any]:
    status, _, raw = post(url, target, orjson.dumps(body), {**AUTH, **headers})
    return status, orjson.loads(raw) if raw else None


@pytest.fixture(scope="module")
def streams(server_url: str) -> str:
    for name in ("hw1", "hw2"):
        assert call(server_url, "CreateStream", {"StreamName": name, "ShardCount": 1})[0] == 200
    return server_url


def iterator(url: str, name: str) -> str:
    status, answer = call(url, "GetShardIterator", {
        "StreamName": name, "ShardId": "shardId-000000000000", "ShardIteratorType": "LATEST",
    })
    assert status == 200
    return str(answer["ShardIterator"])


def arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:kinesis:us-east-1:{account}:stream/{name}"


def test_get_records_refuses_a_stream_arn_naming_another_stream(streams: str) -> None:
    token = iterator(streams, "hw1")
    status, _ = call(streams, "GetRecords", {"ShardIterator": token, "StreamARN": arn("hw1")})
    assert status == 200
    for other in (arn("hw2"), arn("hw1", "111111111111")):
        status, answer = call(streams, "GetRecords", {"ShardIterator": token, "StreamARN": other})
        assert status == 400
        assert answer["__type"] == "ResourceNotFoundException"


@pytest.mark.parametrize("key", ["1\u0663", "\u0661", "12\uff13"])
def test_explicit_hash_keys_take_ascii_digits_only(streams: str, key: str) -> None:
    record = {"Data": "aGk=", "PartitionKey": "k", "ExplicitHashKey": key}
    status, answer = call(streams, "PutRecord", {"StreamName": "hw1", **record})
    assert (status, answer["__type"]) == (400, "ValidationException")
    assert "explicitHashKey" in answer["message"]
    status, answer = call(streams, "PutRecords", {"StreamName": "hw1", "Records": [record]})
    assert (status, answer["__type"]) == (400, "ValidationException")


@pytest.mark.parametrize(
    ("limit", "expected"),
    # The service's parser truncates a fraction (its TruncatingBigNumber); a number
    # beyond an int does not convert.
    [(1.5, 200), (2.0, 200), (2**31, 400), (1e301, 400)],
)
def test_an_out_of_range_limit_is_a_serialization_error(
    streams: str, limit: float, expected: int
) -> None:
    status, answer = call(streams, "GetRecords", {
        "ShardIterator": iterator(streams, "hw1"), "Limit": limit,
    })
    assert status == expected
    if expected == 400:
        assert answer["__type"] == "SerializationException"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(b'{"StreamName":"hw1"}')),
        ("gzip", b"not gzip at all"),
        ("br", b"\x0b\x02\x80{}\x03"),
        ("deflate", b"\x78\x9c"),
    ],
)
def test_compressed_bodies_are_refused_as_the_service_does(
    streams: str, encoding: str, body: bytes
) -> None:
    status, headers, raw = post(
        streams, "DescribeStreamSummary", body, {**AUTH, "Content-Encoding": encoding}
    )
    assert status == 400
    assert orjson.loads(raw) == {"__type": "SerializationException"}
    assert headers["x-amzn-RequestId"]
    # The connection's next request is answered normally.
    status, _ = call(streams, "DescribeStreamSummary", {"StreamName": "hw1"})
    assert status == 200


def test_an_identity_content_encoding_is_accepted(streams: str) -> None:
    status, _ = call(
        streams, "DescribeStreamSummary", {"StreamName": "hw1"}, **{"Content-Encoding": "identity"}
    )
    assert status == 200


def test_error_bodies_are_aws_shaped(streams: str) -> None:
    _, _, raw = post(streams, "DescribeStreamSummary", b'{"StreamName": 5}')
    assert orjson.loads(raw)["__type"] == "SerializationException"


def _cyclic() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


READ = {"StreamName": "hw1", "ShardId": "shardId-000000000000"}
AT = {**READ, "ShardIteratorType": "AT_TIMESTAMP"}

#: (target, body, wire, expected error code): inputs that once got a 500.
ONCE_500 = [
    ("PutRecords", {"StreamName": "hw1", "Records": [None]}, "json", "ValidationException"),
    ("PutRecords", {"StreamName": "hw1", "Records": [{"Data": "aGk=", "PartitionKey": "k"},
                                                     None]}, "json", "ValidationException"),
    ("RemoveTagsFromStream", {"StreamName": "hw1", "TagKeys": ["a", None]}, "json",
     "ValidationException"),
    ("GetShardIterator", {**AT, "Timestamp": 1e306}, "json", "SerializationException"),
    ("GetShardIterator", {**AT, "Timestamp": -1e306}, "json", "SerializationException"),
    ("GetShardIterator", {**AT, "Timestamp": float("nan")}, "cbor", "SerializationException"),
    ("GetShardIterator", {**AT, "Timestamp": float("inf")}, "cbor", "SerializationException"),
    ("GetShardIterator", {**AT, "Timestamp": cbor2.CBORTag(1, float("-inf"))}, "cbor",
     "SerializationException"),
    ("DescribeStreamSummary", {"StreamName": cbor2.undefined}, "cbor", "SerializationException"),
    ("DescribeStreamSummary", {"StreamName": Decimal("1.5")}, "cbor", "SerializationException"),
    ("DescribeStreamSummary", {"StreamName": datetime.now(UTC)}, "cbor",
     "SerializationException"),
    ("DescribeStreamSummary", {"StreamName": uuid.UUID(int=7)}, "cbor", "SerializationException"),
    ("DescribeStreamSummary", {"StreamName": {1, 2}}, "cbor", "SerializationException"),
    ("DescribeStreamSummary", {"StreamName": cbor2.CBORTag(9999, "x")}, "cbor",
     "SerializationException"),
    ("CreateStream", {"StreamName": "hw9", "ShardCount": 2**200}, "cbor",
     "SerializationException"),
    ("AddTagsToStream", {"StreamName": "hw1", "Tags": {1: "x"}}, "cbor", "SerializationException"),
    ("DescribeStreamSummary", {1: "x", "StreamName": "hw1"}, "cbor", "SerializationException"),
    ("DescribeStreamSummary", _cyclic(), "cbor", "SerializationException"),
    ("PutRecords", {"StreamName": "hw1", "Records": _cyclic()}, "cbor", "SerializationException"),
]


@pytest.mark.parametrize(("target", "body", "wire", "code"), ONCE_500)
def test_inputs_that_once_failed_internally_are_client_errors(
    streams: str, target: str, body: Any, wire: str, code: str
) -> None:
    if wire == "cbor":
        raw = cbor2.dumps(body, value_sharing=True)
        status, _, answer = post(streams, target, raw, {**AUTH, "Content-Type": CBOR})
        parsed = cbor2.loads(answer)
    else:
        status, _, answer = post(streams, target, orjson.dumps(body))
        parsed = orjson.loads(answer)
    assert status == 400
    assert parsed["__type"] == code


def test_a_header_that_is_not_utf8_gets_an_aws_error(streams: str) -> None:
    parts = urlsplit(streams)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\n"
            b"Content-Type: application/x-amz-json-1.1\r\n"
            b"Authorization: AWS4-HMAC-SHA256 \xff\xfe Credential=\xe9\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert orjson.loads(body)["__type"] == "IncompleteSignatureException"


@pytest.mark.parametrize("entries", [4_000, 100_000])
def test_validation_messages_stay_small_for_huge_bodies(streams: str, entries: int) -> None:
    body = b'{"StreamName":"hw1","Records":[' + b",".join([b"{}"] * entries) + b"]}"
    status, _, raw = post(streams, "PutRecords", body)
    assert status == 400
    code, message = error_body(raw)
    assert code == "ValidationException"
    if entries > 5_000:  # ten times the limit: the length alone is reported
        assert message.startswith("1 validation error detected")
        assert "records" in message
    else:
        assert message.startswith("10 validation errors detected")
    assert len(message) < 8192


@pytest.mark.parametrize("wire", ["json", "cbor"])
def test_bodies_of_more_objects_than_any_request_are_refused_unparsed(
    streams: str, wire: str
) -> None:
    records: list[Any] = [{}] * 400_000
    if wire == "json":
        status, _, raw = post(streams, "PutRecords", orjson.dumps({"Records": records}))
        parsed = orjson.loads(raw)
    else:
        status, _, raw = post(streams, "PutRecords", cbor2.dumps({"Records": records[:20_000]}),
                              {**AUTH, "Content-Type": CBOR})
        parsed = cbor2.loads(raw)
    assert status == 400
    assert parsed == {"__type": "SerializationException",
                      "Message": "Request body holds too many objects"}
