"""Fuzzing the request path: random bodies, headers, content types and targets never get
a 5xx or stop the server, with the audit log and the metrics on, with and without --iam;
and every action's JSON and CBOR bodies, drawn from its input shape with wrong types,
nulls, non-finite and huge numbers and CBOR-only values mixed in (seeded: the same
examples every run), get an answer or a well-formed AWS error, never a 5xx."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import cbor2
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpl.protocol.sigv4 import TIMESTAMP_FORMAT, sign_request, signing_key
from server.core.actions import ACTIONS
from server.core.shapes import Shape
from tests.server.iam_policies import PRINCIPALS
from tests.support import ServerThread

KEYS = {"AKIAADMIN": "admin-secret", "AKIAWRITER": "writer-secret", "AKIAREADER": "reader-secret"}
TARGETS = [action.target for action in ACTIONS.values()] + ["Kinesis_20131202.Nope", "", "x"]
CONTENT_TYPES = [
    "application/x-amz-json-1.1", "application/x-amz-cbor-1.1", "application/json",
    "text/plain", "", "application/x-amz-cbor-1.1; charset=utf-8",
]
MEMBERS = ["StreamName", "StreamARN", "ShardCount", "Records", "Data", "PartitionKey",
           "ShardIterator", "ShardId", "ShardIteratorType", "Limit", "Tags", "ConsumerARN",
           "ExplicitHashKey", "NextToken", "StartingSequenceNumber", "Timestamp"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.text(max_size=40), st.sampled_from(["orders", "orders-archive", "payments", "aGk="]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(MEMBERS) | st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.sampled_from(MEMBERS), values, max_size=5)


@pytest.fixture(scope="module", params=["iam", "no-auth"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server with --iam, or one accepting anything (so more requests reach the engine);
    both with the audit log and the metrics."""
    log = Path(tmp_path_factory.mktemp("fuzz")) / "audit.log"
    security: dict[str, Any] = (
        {"iam": PRINCIPALS} if request.param == "iam" else {"require_auth": False}
    )
    with ServerThread(state_delay_seconds=0.0, limits="off", audit_log=log,
                      **security) as thread:
        yield thread.url


def _encode(payload: Any, content_type: str, raw: bytes | None) -> bytes:
    if raw is not None:
        return raw
    if "cbor" in content_type:
        return bytes(cbor2.dumps(payload))
    return json.dumps(payload).encode()


def _post(url: str, headers: dict[str, str], body: bytes, path: str = "/") -> int:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(TARGETS),
    content_type=st.sampled_from(CONTENT_TYPES),
    payload=payloads,
    raw=st.none() | st.none() | st.binary(max_size=64),
    key=st.sampled_from([*KEYS, "AKIANOBODY"]),
    # Mostly well signed, so most examples get past verification to parsing, policies
    # and the engine.
    signing=st.sampled_from(
        ["good", "good", "good", "good", "bad-secret", "garbage-header", "none", "query"]
    ),
    extra=st.dictionaries(
        st.sampled_from(["X-Amz-Security-Token", "X-Amz-Date", "Date", "Content-Encoding",
                         "Authorization", "X-Amz-Content-Sha256"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
        max_size=2,
    ),
    path=st.sampled_from(["/", "/a/../b", "/%7e?x=1", "/?X-Amz-Algorithm=AWS4-HMAC-SHA256"]),
)
def test_never_a_5xx(
    server: str, target: str, content_type: str, payload: Any, raw: bytes | None, key: str,
    signing: str, extra: dict[str, str], path: str,
) -> None:
    body = _encode(payload, content_type, raw)
    headers = {"X-Amz-Target": target, "Content-Type": content_type}
    if signing in ("good", "bad-secret"):
        amz_date = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
        secret = KEYS.get(key, "x") if signing == "good" else "wrong"
        host = urlsplit(server).netloc
        headers["Host"] = host
        headers.update(sign_request(
            "POST", server + path, headers, body, amz_date=amz_date, access_key=key,
            key=signing_key(secret, amz_date[:8], "us-east-1", "kinesis"),
            region="us-east-1", service="kinesis",
        ))
    elif signing == "garbage-header":
        headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=" + key
    elif signing == "query":
        path = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + key
    for name, value in extra.items():
        if not (signing == "good" and name == "Authorization"):
            headers[name] = value
    assert _post(server, headers, body, path) < 500


# -- every action's bodies, from its input shape -------------------------------------

CBOR_TYPE = "application/x-amz-cbor-1.1"
JSON_TYPE = "application/x-amz-json-1.1"
#: Values JSON cannot carry, which CBOR decoders hand over as Python objects.
CBOR_ODDITIES = [
    cbor2.undefined, Decimal("1.5"), datetime(2026, 1, 1, tzinfo=UTC), uuid.UUID(int=3),
    frozenset({1}), cbor2.CBORTag(9999, "x"), cbor2.CBORSimpleValue(99), 2**100, -(2**70),
    float("nan"), float("inf"), float("-inf"), b"\x00\xff", Fraction(1, 3),
]
junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.sampled_from([1e306, -1e306, 1.5, 0.0, -1]), st.text(max_size=12),
    st.sampled_from(["1\u0663", "\u0661", "", "fuzz", "arn:aws:kinesis:us-east-1:0:stream/x"]),
    st.lists(st.none() | st.integers(), max_size=2), st.just({}),
)


#: Members that name things: mostly the stream and shard that exist, so that bodies get
#: past the lookups into the engine.
NAMED = {
    "StreamName": "fuzz", "ShardId": "shardId-000000000000", "PartitionKey": "k",
    "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/fuzz",
}
#: Members left out (the other fuzz sends them): a random StreamId fails every lookup.
RARE = frozenset({"StreamId"})


def shape_values(
    shape: Shape, cbor: bool, depth: int = 0, name: str = ""
) -> st.SearchStrategy[Any]:
    """Mostly well-typed values of ``shape``, sometimes junk (and CBOR's own oddities)."""
    bad = junk | st.sampled_from(CBOR_ODDITIES) if cbor else junk
    kind = shape.kind
    good: st.SearchStrategy[Any]
    if name in NAMED:
        return _mostly(st.just(NAMED[name]), bad)
    if kind == "string":
        if shape.enum:
            good = st.sampled_from(shape.enum)
        else:
            good = st.sampled_from(["fuzz", "shardId-000000000000", "0", "49"]) | st.text(
                min_size=shape.min or 0, max_size=min(shape.max or 24, 24)
            )
    elif kind in ("integer", "long"):
        low, high = shape.min if shape.min is not None else -5, shape.max or 10**6
        good = st.integers(low - 1, high + 1) | st.sampled_from([1.5, 2.0, 2**31, 2**63, 1e306])
    elif kind == "boolean":
        good = st.booleans()
    elif kind == "timestamp":
        extremes = [1e306, -1e306, 1e20, 9.3e15]
        if cbor:
            extremes += [float("nan"), float("inf"), cbor2.CBORTag(1, float("-inf"))]
        good = st.floats(0, 2e9) | st.integers(0, 2**40) | st.sampled_from(extremes)
    elif kind == "blob":
        good = st.binary(max_size=16) if cbor else st.sampled_from(["aGk=", "", "a", "@@"])
    elif depth > 3:
        good = st.none()
    elif kind == "list":
        assert shape.member is not None
        good = st.lists(shape_values(shape.member, cbor, depth + 1) | st.none(), max_size=3)
    elif kind == "map":
        assert shape.member is not None
        keys: st.SearchStrategy[Any] = st.text(max_size=6)
        if cbor:
            keys = keys | st.integers(0, 3) | st.binary(max_size=3)
        good = st.dictionaries(keys, shape_values(shape.member, cbor, depth + 1), max_size=3)
    else:
        values = {
            n: shape_values(m, cbor, depth + 1, n) for n, m in shape.members if n not in RARE
        }
        required = {n: values[n] for n, m in shape.members if m.required or n in NAMED}
        optional = {n: v for n, v in values.items() if n not in required}
        good = st.fixed_dictionaries(required, optional=optional)
        if depth == 0:
            return good | bad if cbor else good  # a body is (nearly always) a map
    return _mostly(good, bad)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``bad`` about one time in twelve, so most bodies reach the engine with one odd value
    or none. (Hypothesis favours the ends of a range, so junk is drawn from its middle.)"""
    return st.integers(0, 99).flatmap(lambda i: bad if 45 <= i < 53 else good)


def _encoded(target: str, cbor: bool, body: Any) -> tuple[str, str, bytes]:
    if cbor:
        return target, CBOR_TYPE, bytes(cbor2.dumps(body))
    return target, JSON_TYPE, json.dumps(body).encode()  # integers beyond 64 bits too


#: One strategy per action and wire format, built once (building is most of the cost).
ACTION_BODIES = st.one_of([
    shape_values(action.input, cbor).map(partial(_encoded, action.target, cbor))
    for action in ACTIONS.values() if action.input is not None
    for cbor in (False, True)
])
ODD_HEADERS = st.dictionaries(
    st.sampled_from(["Content-Encoding", "Authorization", "X-Amz-Date", "Content-Type",
                     "X-Amz-Security-Token", "User-Agent"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=24),
    max_size=1,
)


@pytest.fixture(scope="module")
def open_server() -> Iterator[str]:
    """A server accepting any credentials, with a stream named ``fuzz`` for the engine."""
    with ServerThread(state_delay_seconds=0.0, limits="off", require_auth=False) as thread:
        _post(thread.url, {"X-Amz-Target": "Kinesis_20131202.CreateStream",
                           "Content-Type": JSON_TYPE}, b'{"StreamName":"fuzz","ShardCount":2}')
        yield thread.url


def _well_formed_error(content_type: str, body: bytes) -> bool:
    if body.startswith(b"<"):  # the service's XML refusals (a content type it does not take)
        try:
            ElementTree.fromstring(body)
        except ElementTree.ParseError:
            return False
        return True
    try:
        parsed = cbor2.loads(body) if content_type == CBOR_TYPE else orjson.loads(body)
    except Exception:
        return False
    # The service spells the member "message", or "Message" for some errors.
    return (
        isinstance(parsed, dict)
        and isinstance(parsed.get("__type"), str)
        and set(parsed) <= {"__type", "message", "Message"}
        and all(isinstance(parsed.get(k, ""), str) for k in ("message", "Message"))
    )


@settings(
    max_examples=1200, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=ACTION_BODIES, extra=_mostly(st.just({}), ODD_HEADERS))
def test_every_action_body_gets_an_answer_or_a_well_formed_aws_error(
    open_server: str, request: tuple[str, str, bytes], extra: dict[str, str]
) -> None:
    target, content_type, body = request
    headers = {"X-Amz-Target": target, "Content-Type": content_type, **extra}
    parts = urlsplit(open_server)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    assert response.status < 500, answer[:300]
    if response.status >= 400 and response.status != 413:
        answer_type = response.getheader("Content-Type", "").split(";")[0]
        assert _well_formed_error(answer_type, answer), answer[:300]
