"""Fuzzing the request path: random bodies, headers, content types and targets never get
a 5xx or stop the server, with the audit log and the metrics on, with and without --iam."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpl.protocol.sigv4 import TIMESTAMP_FORMAT, sign_request, signing_key
from server.core.actions import ACTIONS
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
