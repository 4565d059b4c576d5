"""The wire protocol below boto3: raw HTTP against the real server on port 0."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import cbor2
import orjson
import pytest
from botocore.exceptions import ClientError

from tests.support import FakeClock, ServerThread, serve_with_client

CBOR = "application/x-amz-cbor-1.1"
AUTH = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/kinesis/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abc",
    "X-Amz-Date": "20260101T000000Z",
    "Content-Type": "application/x-amz-json-1.1",
}


def post(
    url: str, target: str | None, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        all_headers = dict(AUTH if headers is None else headers)
        if target is not None:
            all_headers["X-Amz-Target"] = f"Kinesis_20131202.{target}"
        conn.request("POST", "/", body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def error_body(body: bytes) -> tuple[str, str]:
    parsed = orjson.loads(body)
    assert set(parsed) == {"__type", "message"}
    return parsed["__type"], parsed["message"]


def test_success_has_request_id_and_empty_body_without_output(server_url: str) -> None:
    status, headers, body = post(server_url, "CreateStream", b'{"StreamName":"w1","ShardCount":1}')
    assert status == 200
    assert body == b""
    assert headers["x-amzn-RequestId"]
    assert headers["Content-Type"].startswith("application/x-amz-json-1.1")
    status, headers, body = post(server_url, "DescribeLimits", b"{}")
    assert status == 200
    assert orjson.loads(body)["ShardLimit"] == 500
    # An empty body is not "{}" for the service: it does not parse.
    status, headers, body = post(server_url, "DescribeLimits", b"")
    assert (status, orjson.loads(body)) == (400, {"__type": "SerializationException"})
    assert headers["x-amzn-RequestId"]


def test_unknown_operation(server_url: str) -> None:
    # The service answers an unknown target with the type alone, no message member.
    for target in ("Frobnicate", None):
        status, headers, body = post(server_url, target, b"{}")
        assert status == 400
        assert orjson.loads(body) == {"__type": "UnknownOperationException"}
        assert headers["x-amzn-RequestId"]
    status, _, body = post(server_url, None, b"{}", {**AUTH, "X-Amz-Target": "Other.ListStreams"})
    assert orjson.loads(body) == {"__type": "UnknownOperationException"}


def test_serialization_exception_for_bad_json_and_types(server_url: str) -> None:
    status, headers, body = post(server_url, "ListStreams", b"{not json")
    assert status == 400
    assert orjson.loads(body) == {"__type": "SerializationException"}
    assert headers["x-amzn-RequestId"]
    status, _, body = post(server_url, "ListStreams", b'{"Limit": "ten"}')
    assert (status, orjson.loads(body)) == (400, {
        "__type": "SerializationException",
        "Message": "class java.lang.String can not be converted to an Integer",
    })


def test_missing_and_garbled_authorization(server_url: str) -> None:
    no_auth = {"Content-Type": "application/x-amz-json-1.1"}
    status, headers, body = post(server_url, "ListStreams", b"{}", no_auth)
    assert status == 400
    assert error_body(body) == (
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    )
    assert headers["x-amzn-RequestId"]
    garbled = {**no_auth, "Authorization": "Bearer token"}
    status, _, body = post(server_url, "ListStreams", b"{}", garbled)
    code, message = error_body(body)
    assert code == "IncompleteSignatureException"
    assert message == (
        "Authorization header requires 'Credential' parameter. Authorization header requires "
        "'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=Bearer token"
    )
    partial = {**AUTH, "Authorization": "AWS4-HMAC-SHA256 Credential=x/y, Signature=abc"}
    status, _, body = post(server_url, "ListStreams", b"{}", partial)
    assert error_body(body) == (
        "IncompleteSignatureException",
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization=AWS4-HMAC-SHA256 Credential=x/y, Signature=abc",
    )


def test_oversized_body_is_a_bare_413_without_reading_it(server_url: str) -> None:
    parts = urlsplit(server_url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=10) as sock:
        head = (
            "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in AUTH.items())
            + f"Content-Length: {15 * 1024 * 1024 + 1}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"{" * 1000)  # far less than announced
        reply = sock.recv(65536).decode("latin-1")
    status_line, _, rest = reply.partition("\r\n")
    # The reason phrase is the running Python's (3.13 renamed it "Content Too Large").
    assert status_line == f"HTTP/1.1 413 {http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE.phrase}"
    headers, _, body = rest.partition("\r\n\r\n")
    assert body == ""
    assert "x-amzn-requestid" in headers.lower()


def test_chunked_body_over_the_cap_is_a_413() -> None:
    thread = ServerThread(max_request_bytes=1000, limits="off").start()
    try:
        parts = urlsplit(thread.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:

            def chunks() -> Iterator[bytes]:
                for _ in range(10):
                    yield b" " * 200

            conn.request(
                "POST",
                "/",
                body=chunks(),
                encode_chunked=True,
                headers={**AUTH, "X-Amz-Target": "Kinesis_20131202.ListStreams"},
            )
            response = conn.getresponse()
            assert response.status == 413
            assert response.read() == b""
        finally:
            conn.close()
        status, _, body = post(thread.url, "ListStreams", b" " * 900 + b"{}")
        assert status == 200
        assert orjson.loads(body)["StreamNames"] == []
    finally:
        thread.stop()


@pytest.fixture
def clocked() -> Iterator[tuple[Any, FakeClock]]:
    clock = FakeClock()
    for client in serve_with_client(clock=clock, state_delay_seconds=0.0, limits="off"):
        yield client, clock


def test_iterator_expires_after_five_minutes_over_the_wire(clocked: tuple[Any, FakeClock]) -> None:
    client, clock = clocked
    client.create_stream(StreamName="exp", ShardCount=1)
    it = client.get_shard_iterator(
        StreamName="exp", ShardId="shardId-000000000000", ShardIteratorType="LATEST"
    )["ShardIterator"]
    clock.now += 299
    fresh = client.get_records(ShardIterator=it)["NextShardIterator"]
    clock.now += 2
    with pytest.raises(ClientError) as info:
        client.get_records(ShardIterator=it)
    assert info.value.response["Error"]["Code"] == "ExpiredIteratorException"
    assert client.get_records(ShardIterator=fresh)["Records"] == []


def _millis(value: Any, immutable: bool) -> int:
    return int(value)


def cbor_post(url: str, target: str, request: dict[str, Any]) -> tuple[int, str, Any]:
    """A CBOR 1.1 call as the Java SDKs make it; the answer decoded with tag 1 kept in ms."""
    status, headers, body = post(
        url, target, cbor2.dumps(request), {**AUTH, "Content-Type": CBOR}
    )
    assert headers["x-amzn-RequestId"]
    decoded = cbor2.loads(body, semantic_decoders={1: _millis}) if body else None
    return status, headers["Content-Type"], decoded


def test_cbor_round_trip_blobs_and_millisecond_timestamps(
    clocked: tuple[Any, FakeClock],
) -> None:
    client, clock = clocked
    server_url = client.meta.endpoint_url
    now_ms = round(clock.now * 1000)
    status, content_type, _ = cbor_post(
        server_url, "CreateStream", {"StreamName": "cbor", "ShardCount": 1}
    )
    assert (status, content_type) == (200, CBOR)
    data = bytes(range(256))
    status, _, put = cbor_post(
        server_url, "PutRecord", {"StreamName": "cbor", "Data": data, "PartitionKey": "k"}
    )
    assert status == 200
    assert put["ShardId"] == "shardId-000000000000"
    _, _, batch = cbor_post(
        server_url,
        "PutRecords",
        {"StreamName": "cbor", "Records": [{"Data": b"\x00two", "PartitionKey": "k"}]},
    )
    assert batch["FailedRecordCount"] == 0
    # AT_TIMESTAMP with a tag-1 millisecond timestamp well in the past: from the start.
    _, _, iterator = cbor_post(
        server_url,
        "GetShardIterator",
        {
            "StreamName": "cbor",
            "ShardId": "shardId-000000000000",
            "ShardIteratorType": "AT_TIMESTAMP",
            "Timestamp": cbor2.CBORTag(1, 1_000_000_000_000),
        },
    )
    status, _, got = cbor_post(
        server_url, "GetRecords", {"ShardIterator": iterator["ShardIterator"]}
    )
    assert status == 200
    assert [r["Data"] for r in got["Records"]] == [data, b"\x00two"]
    assert got["Records"][0]["SequenceNumber"] == put["SequenceNumber"]
    arrival = got["Records"][0]["ApproximateArrivalTimestamp"]
    assert isinstance(arrival, int)
    assert arrival == now_ms  # milliseconds, not seconds
    _, _, summary = cbor_post(server_url, "DescribeStreamSummary", {"StreamName": "cbor"})
    created = summary["StreamDescriptionSummary"]["StreamCreationTimestamp"]
    assert created == now_ms


def test_cbor_errors_are_cbor(server_url: str) -> None:
    status, content_type, error = cbor_post(server_url, "DescribeStream", {"StreamName": "nope"})
    assert (status, content_type) == (400, CBOR)
    assert error == {
        "__type": "ResourceNotFoundException",
        "message": "Stream nope under account 000000000000 not found.",
    }
    status, _, body = post(server_url, "ListStreams", b"\xff\x00", {**AUTH, "Content-Type": CBOR})
    assert (status, cbor2.loads(body)) == (400, {"__type": "SerializationException"})
    # A tag 1 that does not hold a number does not parse either.
    bad = cbor2.dumps({"StreamName": "x", "ShardId": "shardId-0",
                       "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": cbor2.CBORTag(1, "x")})
    status, _, body = post(server_url, "GetShardIterator", bad, {**AUTH, "Content-Type": CBOR})
    assert (status, cbor2.loads(body)) == (400, {"__type": "SerializationException"})
    # Validation reads the same as over JSON.
    status, _, error = cbor_post(
        server_url, "PutRecord", {"StreamName": "cbor-x", "Data": b"x", "PartitionKey": ""}
    )
    assert error["message"] == (
        "1 validation error detected: Value '' at 'partitionKey' failed to satisfy "
        "constraint: Member must have length greater than or equal to 1"
    )
