"""Raw HTTP helpers for the wire tests: requests as a newcomer's tool would send them."""

from __future__ import annotations

import http.client
import re
from typing import Any
from urllib.parse import urlsplit

import cbor2
import orjson

JSON = "application/x-amz-json-1.1"
CBOR = "application/x-amz-cbor-1.1"
TARGET = "Kinesis_20131202.ListStreams"
SIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/kinesis/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abc",
    "X-Amz-Date": "20260101T000000Z",
}
ACCESS_DENIED = (
    b"<AccessDeniedException>\n"
    b"  <Message>Unable to determine service/operation name to be authorized</Message>\n"
    b"</AccessDeniedException>\n"
)
EXPOSED = (
    "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Answer = tuple[int, dict[str, str], bytes]


def call(
    url: str,
    *,
    method: str = "POST",
    path: str = "/",
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
) -> Answer:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def api(url: str, body: bytes = b"{}", target: str = TARGET, content_type: str = JSON,
        **headers: str) -> Answer:
    """A signed (shape only) POST with ``headers`` added (underscores become dashes)."""
    extra = {k.replace("_", "-"): v for k, v in headers.items()}
    return call(url, body=body, headers={
        **SIGNED, "Content-Type": content_type, "X-Amz-Target": target, **extra,
    })


def answer(url: str, action: str, body: Any, *, cbor: bool = False) -> tuple[int, Any]:
    """Call ``action`` with ``body`` in JSON or CBOR: the status and the decoded body."""
    encoded = cbor2.dumps(body) if cbor else orjson.dumps(body)
    status, headers, raw = api(
        url, encoded, target=f"Kinesis_20131202.{action}", content_type=CBOR if cbor else JSON
    )
    assert headers["content-type"] == (CBOR if cbor else JSON)
    return status, (cbor2.loads(raw) if cbor else orjson.loads(raw)) if raw else None


def error(code: str, message: str) -> tuple[int, dict[str, str]]:
    """What :func:`answer` gives for an error other than a SerializationException."""
    return 400, {"__type": code, "message": message}
