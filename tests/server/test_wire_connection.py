"""The connection rules, in the service's order: raw HTTP against the real server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import cbor2
import orjson
import pytest

from tests.server.wire_support import (
    ACCESS_DENIED,
    CBOR,
    EXPOSED,
    JSON,
    SIGNED,
    TARGET,
    UUID,
    Answer,
    api,
    call,
)
from tests.support import ServerThread, make_client


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ServerThread(state_delay_seconds=0.0, limits="off", metrics=False) as thread:
        yield thread.url


def assert_identified(headers: dict[str, str], *, id_2: bool = True) -> None:
    assert UUID.fullmatch(headers["x-amzn-requestid"])
    if id_2:
        raw = base64.b64decode(headers["x-amz-id-2"], validate=True)
        assert 64 <= len(raw) <= 80
    else:
        assert "x-amz-id-2" not in headers


def test_every_answer_is_identified(url: str) -> None:
    answers = [api(url), api(url, b"{bad"), call(url, method="GET"), api(url, target="X.Y")]
    for _, headers, _ in answers:
        assert_identified(headers)
        assert "access-control-allow-origin" not in headers
    assert answers[0][0] == 200
    ids = {headers["x-amzn-requestid"] for _, headers, _ in answers}
    id2s = {headers["x-amz-id-2"] for _, headers, _ in answers}
    assert len(ids) == len(id2s) == len(answers)


def test_cors_preflight(url: str) -> None:
    status, headers, body = call(url, method="OPTIONS", body=b"", headers={
        "Origin": "https://example.com",
        "Access-Control-Request-Headers": "content-type,x-amz-target",
        "Access-Control-Request-Method": "POST",
    })
    assert (status, body) == (200, b"")
    assert_identified(headers, id_2=False)
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-headers"] == "content-type,x-amz-target"
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-max-age"] == "172800"
    assert "access-control-expose-headers" not in headers
    # Nothing asked for, nothing echoed.
    status, headers, body = call(url, method="OPTIONS", body=b"", headers={"Origin": "x"})
    assert (status, body) == (200, b"")
    assert "access-control-allow-headers" not in headers
    assert "access-control-allow-methods" not in headers


def test_cors_on_other_answers(url: str) -> None:
    for status_wanted, answer in (
        (200, api(url, Origin="https://example.com")),
        (400, api(url, b"[", Origin="https://example.com")),
        (403, call(url, method="GET", headers={"Origin": "https://example.com"})),
    ):
        status, headers, _ = answer
        assert status == status_wanted
        assert_identified(headers)
        assert headers["access-control-allow-origin"] == "*"
        assert headers["access-control-expose-headers"] == EXPOSED
        assert "access-control-max-age" not in headers


def test_methods_other_than_post_are_access_denied(url: str) -> None:
    for method, path in (("GET", "/"), ("PUT", "/"), ("DELETE", "/x"), ("GET", "/metrics"),
                         ("OPTIONS", "/")):  # no Origin: not a pre-flight
        status, headers, body = call(
            url, method=method, path=path, headers={**SIGNED, "X-Amz-Target": TARGET}
        )
        assert (status, body) == (403, ACCESS_DENIED), (method, path)
        assert_identified(headers)


def test_metrics_are_the_one_get_served() -> None:
    with ServerThread(state_delay_seconds=0.0, limits="off") as thread:
        status, headers, body = call(thread.url, method="GET", path="/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        assert_identified(headers)
        status, _, body = call(thread.url, method="GET", path="/other")
        assert (status, body) == (403, ACCESS_DENIED)


def test_empty_body_is_json_only_with_the_json_content_type(url: str) -> None:
    status, headers, body = api(url, b"")
    assert (status, headers["content-type"], body) == (
        400, JSON, b'{"__type":"SerializationException"}'
    )
    status, headers, body = api(url, b"", target="Kinesis_20131202.Nope")
    assert (status, body) == (400, b'{"__type":"UnknownOperationException"}')
    for content_type in (CBOR, "application/json", "text/plain", ""):
        status, headers, body = api(url, b"", content_type=content_type)
        assert (status, headers["content-type"]) == (400, CBOR), content_type
        assert cbor2.loads(body) == {"__type": "SerializationException"}
        status, headers, body = api(url, b"", target="Nope", content_type=content_type)
        assert (status, headers["content-type"]) == (400, CBOR)
        assert cbor2.loads(body) == {"__type": "UnknownOperationException"}
        assert_identified(headers)


def test_other_content_types(url: str) -> None:
    for target in ("", "Kinesis_20131202", ".ListStreams", "Kinesis_20131202."):
        status, headers, body = api(url, content_type="text/plain", target=target)
        assert (status, body) == (403, ACCESS_DENIED), target
        assert_identified(headers)
    for target in (TARGET, "Other.Thing", "Kinesis_20131202.Nope"):
        status, _, body = api(url, content_type="application/x-amz-json-1.0", target=target)
        assert (status, body) == (404, b"<UnknownOperationException/>\n"), target
    # Parameters after the media type are allowed.
    status, _, _ = api(url, content_type=JSON + "; charset=utf-8")
    assert status == 200


def test_json_1_0_never_reaches_an_action(url: str) -> None:
    for body, status_wanted, code in (
        (b"{}", 404, "UnknownOperationException"),
        (b"[]", 404, "UnknownOperationException"),
        (b"{bad", 400, "SerializationException"),
        (b"12", 400, "SerializationException"),
    ):
        status, headers, answer = api(url, body, content_type="application/json")
        assert status == status_wanted
        assert headers["content-type"] == "application/json"
        assert orjson.loads(answer) == {
            "Output": {"__type": f"com.amazon.coral.service#{code}"}, "Version": "1.0"
        }


def test_bodies_that_are_not_objects(url: str) -> None:
    for body in (b"{bad", b"12", b'"text"', b"null", b"true"):
        status, headers, answer = api(url, body)
        assert (status, answer) == (400, b'{"__type":"SerializationException"}'), body
        assert headers["content-type"] == JSON
    for body in (b"\xff\xff", cbor2.dumps(12), cbor2.dumps("x")):
        status, headers, answer = api(url, body, content_type=CBOR)
        assert (status, headers["content-type"]) == (400, CBOR)
        assert cbor2.loads(answer) == {"__type": "SerializationException"}
    # Before the target is looked at, and before authentication.
    status, _, answer = call(url, body=b"{bad", headers={"Content-Type": JSON})
    assert (status, answer) == (400, b'{"__type":"SerializationException"}')


def test_unknown_operation_comes_before_authentication(url: str) -> None:
    for target in ("Kinesis_20131202.Nope", "Other_20131202.ListStreams", "", "nodot"):
        status, _, body = call(url, headers={"Content-Type": JSON, "X-Amz-Target": target})
        assert (status, body) == (400, b'{"__type":"UnknownOperationException"}'), target
    status, headers, body = call(url, headers={"Content-Type": CBOR, "X-Amz-Target": "A.B"},
                                 body=cbor2.dumps({}))
    assert (status, headers["content-type"]) == (400, CBOR)
    assert cbor2.loads(body) == {"__type": "UnknownOperationException"}


def error(answer: Answer) -> tuple[int, str, str]:
    status, _, body = answer
    parsed = orjson.loads(body)
    assert set(parsed) == {"__type", "message"}
    return status, parsed["__type"], parsed["message"]


def unsigned(url: str, path: str = "/", **headers: str) -> Answer:
    return call(url, path=path, headers={"Content-Type": JSON, "X-Amz-Target": TARGET,
                                         **headers})


def test_authentication_shape(url: str) -> None:
    assert error(unsigned(url)) == (
        400, "MissingAuthenticationTokenException", "Missing Authentication Token"
    )
    assert error(unsigned(url, Authorization="")) == (
        400, "MissingAuthenticationTokenException", "Missing Authentication Token"
    )
    both = unsigned(url, "/?X-Amz-Algorithm=AWS4-HMAC-SHA256", **SIGNED)
    assert error(both) == (
        400, "InvalidSignatureException",
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP "
        "header.",
    )
    header = "AWS4-HMAC-SHA256 Credential=, SignedHeaders=host"
    assert error(unsigned(url, Authorization=header)) == (
        400, "IncompleteSignatureException",
        "Authorization header requires 'Credential' parameter. Authorization header requires "
        "'Signature' parameter. Authorization header requires existence of either a "
        "'X-Amz-Date' or a 'Date' header. Authorization=" + header,
    )
    assert error(unsigned(url, "/?X-Amz-Algorithm=a&X-Amz-Signature=s")) == (
        400, "IncompleteSignatureException",
        "AWS query-string parameters must include 'X-Amz-Credential'. AWS query-string "
        "parameters must include 'X-Amz-SignedHeaders'. AWS query-string parameters must "
        "include 'X-Amz-Date'. Re-examine the query-string parameters.",
    )
    query = (
        "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x%2F20260101%2Fus-east-1%2Fkinesis"
        "%2Faws4_request&X-Amz-Signature=abc&X-Amz-SignedHeaders=host&X-Amz-Date=20260101T000000Z"
    )
    status, _, body = unsigned(url, query)
    assert status == 200
    assert "StreamNames" in orjson.loads(body)


def test_authentication_errors_in_cbor(url: str) -> None:
    status, headers, body = call(
        url, body=cbor2.dumps({}), headers={"Content-Type": CBOR, "X-Amz-Target": TARGET}
    )
    assert (status, headers["content-type"]) == (400, CBOR)
    assert cbor2.loads(body) == {
        "__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"
    }


def test_refusals_of_a_known_action_are_audited_calls(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with ServerThread(state_delay_seconds=0.0, limits="off", audit_log=path) as thread:
        assert api(thread.url, b"")[0] == 400  # SerializationException
        assert api(thread.url, b"12")[0] == 400  # SerializationException
        assert call(thread.url, headers={"Content-Type": JSON, "X-Amz-Target": TARGET})[0] == 400
        # Not calls: no action named, or not answered as one.
        assert api(thread.url, target="Kinesis_20131202.Nope")[0] == 400
        assert api(thread.url, content_type="text/plain")[0] == 404
        assert api(thread.url, content_type="application/json")[0] == 404
        assert call(thread.url, method="GET")[0] == 403
        assert api(thread.url)[0] == 200
    records = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [(r["eventName"], r.get("errorCode")) for r in records] == [
        ("ListStreams", "SerializationException"),
        ("ListStreams", "SerializationException"),
        ("ListStreams", "MissingAuthenticationTokenException"),
        ("ListStreams", None),
    ]


def test_event_streams_are_identified_too() -> None:
    with ServerThread(state_delay_seconds=0.0, limits="off", metrics=False) as thread:
        kinesis = make_client(thread.url)
        try:
            kinesis.create_stream(StreamName="events", ShardCount=1)
            stream_arn = kinesis.describe_stream_summary(StreamName="events")[
                "StreamDescriptionSummary"]["StreamARN"]
            arn = kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="c")[
                "Consumer"]["ConsumerARN"]
            kinesis.describe_stream_consumer(ConsumerARN=arn)  # ACTIVE at the next look
            subscribed = kinesis.subscribe_to_shard(
                ConsumerARN=arn, ShardId="shardId-000000000000",
                StartingPosition={"Type": "LATEST"},
            )
            headers = subscribed["ResponseMetadata"]["HTTPHeaders"]
            subscribed["EventStream"].close()
        finally:
            kinesis.close()
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    assert_identified(headers)
