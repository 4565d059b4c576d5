"""SigV4 as pure functions: equal to botocore's SigV4Auth, and enough to verify a request."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
import botocore.credentials
import pytest
from botocore.awsrequest import AWSRequest

from kpl.protocol.sigv4 import (
    TIMESTAMP_FORMAT,
    Authorization,
    authorization_params,
    canonical_path,
    canonical_request,
    credential_scope,
    host_from_url,
    parse_authorization,
    payload_hash,
    sign_request,
    signature,
    signatures_match,
    signing_key,
    string_to_sign,
)

WHEN = datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC)
AMZ_DATE = WHEN.strftime(TIMESTAMP_FORMAT)
ACCESS_KEY = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
JSON_HEADERS = {
    "X-Amz-Target": "Kinesis_20131202.PutRecords",
    "Content-Type": "application/x-amz-json-1.1",
}

REQUESTS = [
    # (region, url, headers, body, session token)
    ("us-east-1", "https://kinesis.us-east-1.amazonaws.com/", JSON_HEADERS, b"{}", None),
    ("eu-west-1", "http://127.0.0.1:4567", {**JSON_HEADERS, "User-Agent": "kpl"}, b"[]", None),
    (
        "us-west-2",
        "http://localhost:80/a/./b/../c//d/?b=2&a=1&a=0",
        {**JSON_HEADERS, "X-Custom": "  spaced    out  value "},
        "ünïcode body".encode(),
        "FQoGZXIvYXdzEJr//token==",
    ),
]


def _botocore(
    region: str, url: str, headers: dict[str, str], body: bytes, token: str | None
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    credentials = botocore.credentials.Credentials(ACCESS_KEY, SECRET, token)
    with mock.patch.object(
        botocore.auth, "get_current_datetime", return_value=WHEN.replace(tzinfo=None)
    ):
        botocore.auth.SigV4Auth(credentials, "kinesis", region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(("region", "url", "headers", "body", "token"), REQUESTS)
def test_sign_request_equals_botocore(
    region: str, url: str, headers: dict[str, str], body: bytes, token: str | None
) -> None:
    key = signing_key(SECRET, AMZ_DATE[:8], region, "kinesis")
    ours = sign_request(
        "POST", url, headers, body, amz_date=AMZ_DATE, access_key=ACCESS_KEY, key=key,
        region=region, service="kinesis", token=token,
    )
    theirs = {k: v for k, v in _botocore(region, url, headers, body, token).items()
              if k not in headers}
    assert ours == theirs


def test_pieces_equal_botocore_intermediates() -> None:
    url = "https://kinesis.us-east-1.amazonaws.com/"
    request = AWSRequest(method="POST", url=url, data=b"{}", headers=dict(JSON_HEADERS))
    request.context["timestamp"] = AMZ_DATE
    request.headers["X-Amz-Date"] = AMZ_DATE
    boto = botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(ACCESS_KEY, SECRET), "kinesis", "us-east-1"
    )
    their_canonical = boto.canonical_request(request)
    their_to_sign = boto.string_to_sign(request, their_canonical)

    headers = [*JSON_HEADERS.items(), ("X-Amz-Date", AMZ_DATE), ("host", host_from_url(url))]
    ours, signed = canonical_request("POST", "/", "", headers, payload_hash(b"{}"))
    assert ours == their_canonical
    assert signed == "content-type;host;x-amz-date;x-amz-target"
    to_sign = string_to_sign(AMZ_DATE, credential_scope("20261126", "us-east-1", "kinesis"), ours)
    assert to_sign == their_to_sign
    key = signing_key(SECRET, "20261126", "us-east-1", "kinesis")
    assert signature(key, to_sign) == boto.signature(their_to_sign, request)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("", "/"), ("/", "/"), ("/a/./b/../c", "/a/c"), ("//x//y/", "/x/y/"), ("/a b", "/a%20b")],
)
def test_canonical_path(path: str, expected: str) -> None:
    assert canonical_path(path) == expected


def _verify(
    method: str, url: str, headers: dict[str, str], body: bytes, secret: str
) -> bool:
    """What a server does with the request it received: the same functions, other way."""
    auth = parse_authorization(headers["Authorization"])
    assert auth is not None
    received = [(k, v) for k, v in headers.items() if k.lower() != "authorization"]
    if not any(k.lower() == "host" for k, _ in received):
        received.append(("Host", host_from_url(url)))
    parts = urlsplit(url)
    canonical, _ = canonical_request(
        method, parts.path, parts.query, received, payload_hash(body), auth.signed_headers
    )
    key = signing_key(secret, auth.date, auth.region, auth.service)
    expected = signature(key, string_to_sign(headers["X-Amz-Date"], auth.scope, canonical))
    return signatures_match(expected, auth.signature)


@pytest.mark.parametrize(("region", "url", "headers", "body", "token"), REQUESTS)
def test_a_botocore_signed_request_verifies(
    region: str, url: str, headers: dict[str, str], body: bytes, token: str | None
) -> None:
    signed = _botocore(region, url, headers, body, token)
    assert _verify("POST", url, signed, body, SECRET)
    # Any change to what was signed, or the wrong secret, fails the comparison.
    assert not _verify("POST", url, signed, body + b" ", SECRET)
    assert not _verify("PUT", url, signed, body, SECRET)
    assert not _verify("POST", url, {**signed, "X-Amz-Target": "Kinesis_20131202.X"}, body,
                       SECRET)
    assert not _verify("POST", url, signed, body, SECRET + "x")
    # A header the client did not sign may change (a proxy's User-Agent).
    assert _verify("POST", url, {**signed, "User-Agent": "proxy/1"}, body, SECRET)


def test_parse_authorization_of_botocore_header() -> None:
    signed = _botocore(*REQUESTS[0][:4], None)
    auth = parse_authorization(signed["Authorization"])
    assert auth is not None
    assert auth == Authorization(
        ACCESS_KEY, "20261126", "us-east-1", "kinesis",
        ("content-type", "host", "x-amz-date", "x-amz-target"),
        signed["Authorization"].rpartition("Signature=")[2],
    )
    assert len(auth.signature) == 64
    assert auth.scope == "20261126/us-east-1/kinesis/aws4_request"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA1 Credential=A/20261126/r/s/aws4_request, SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=A/20261126/r/s/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=A/20261126/r/s, SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=A/20261126/r/s/other, SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=/20261126/r/s/aws4_request, SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=A/20261126/r/s/aws4_request, SignedHeaders=, Signature=ab",
    ],
)
def test_parse_authorization_refuses_incomplete_headers(header: str) -> None:
    assert parse_authorization(header) is None


def test_authorization_params_split_on_commas_and_spaces() -> None:
    assert authorization_params("AWS4-HMAC-SHA256 Credential=a/b,SignedHeaders=h  Sig= x=1") == (
        "AWS4-HMAC-SHA256",
        {"Credential": "a/b", "SignedHeaders": "h", "x": "1"},
    )
    assert authorization_params("") == ("", {})


def test_signatures_match_is_exact() -> None:
    assert signatures_match("ab" * 32, "ab" * 32)
    assert not signatures_match("ab" * 32, "ab" * 31 + "ac")
    assert not signatures_match("ab" * 32, "ab")
    assert not signatures_match("ab", "ümlaut")
