"""Inputs that used to be mishandled: each gets the service's 4xx, shaped as AWS errors."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest

from tests.server.test_wire import AUTH, error_body, post

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
    [(1.5, 400), (2.0, 200), (2**31, 400), (1e301, 400)],
)
def test_a_fractional_or_out_of_range_limit_is_a_serialization_error(
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
    assert error_body(raw)[0] == "SerializationException"
