"""SigV4 verification (``server.web.auth.Verifier``) with a fake clock, no server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from multidict import CIMultiDict

from kpl.protocol.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    KinesisError,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from kpl.protocol.sigv4 import TIMESTAMP_FORMAT, sign_request, signing_key
from server.core.principals import parse_principals
from server.web.auth import Verifier

NOW = 1_800_000_000.0
URL = "http://127.0.0.1:4567/"
BODY = b'{"StreamName":"orders"}'
PRINCIPALS = parse_principals(
    {
        "principals": [
            {"name": "writer", "access_key_id": "AKIAWRITER", "secret_access_key": "secret"},
            {"name": "temp", "access_key_id": "ASIATEMP", "secret_access_key": "tsecret",
             "session_token": "the-token"},
        ]
    },
    "000000000000",
)


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(TIMESTAMP_FORMAT)


def signed(
    key_id: str = "AKIAWRITER",
    secret: str = "secret",
    *,
    at: float = NOW,
    body: bytes = BODY,
    token: str | None = None,
    region: str = "us-east-1",
) -> CIMultiDict[str]:
    """Headers of a request signed with the producer's signer."""
    amz_date = stamp(at)
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202.DescribeStreamSummary",
        "Host": "127.0.0.1:4567",
    }
    added = sign_request(
        "POST", URL, headers, body, amz_date=amz_date, access_key=key_id,
        key=signing_key(secret, amz_date[:8], region, "kinesis"), region=region,
        service="kinesis", token=token,
    )
    return CIMultiDict({**headers, **added, "User-Agent": "test"})


def verify(
    headers: CIMultiDict[str], *, body: bytes = BODY, path: str = "/", now: float = NOW
) -> Any:
    return Verifier(PRINCIPALS, "us-east-1").verify(
        "POST", path, headers, headers.items(), body, now
    )


def refused(error: type[KinesisError], headers: CIMultiDict[str], **kw: Any) -> str:
    with pytest.raises(error) as caught:
        verify(headers, **kw)
    return caught.value.message


def test_the_producers_signature_verifies() -> None:
    assert verify(signed()).name == "writer"
    assert verify(signed("ASIATEMP", "tsecret", token="the-token")).name == "temp"


def test_a_botocore_signature_verifies() -> None:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202.DescribeStreamSummary",
    })
    SigV4Auth(BotoCredentials("AKIAWRITER", "secret"), "kinesis", "us-east-1").add_auth(request)
    headers = CIMultiDict(request.headers.items())
    headers["Host"] = urlsplit(URL).netloc
    when = datetime.strptime(headers["X-Amz-Date"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    assert verify(headers, now=when.timestamp()).name == "writer"


def test_query_string_signature_verifies_and_tampering_does_not() -> None:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers={
        "X-Amz-Target": "Kinesis_20131202.DescribeStreamSummary",
    })
    SigV4QueryAuth(
        BotoCredentials("AKIAWRITER", "secret"), "kinesis", "us-east-1", expires=60
    ).add_auth(request)
    parts = urlsplit(request.url)
    body = request.body or b""  # botocore's presigner moves a body's members to the query
    headers = CIMultiDict(request.headers.items())
    headers["Host"] = parts.netloc
    target = f"{parts.path}?{parts.query}"
    query = dict(pair.split("=", 1) for pair in parts.query.split("&"))
    when = datetime.strptime(query["X-Amz-Date"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    at = when.timestamp()
    assert verify(headers, body=body, path=target, now=at).name == "writer"
    with pytest.raises(InvalidSignatureException):
        verify(headers, body=body, path=target + "&extra=1", now=at)
    incomplete = target.replace("X-Amz-Credential=", "X-Amz-Nothing=")
    message = refused(IncompleteSignatureException, headers, body=body, path=incomplete, now=at)
    assert "'X-Amz-Credential'" in message


def test_a_wrong_secret_is_an_invalid_signature() -> None:
    assert refused(InvalidSignatureException, signed(secret="wrong")) == (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details."
    )


def test_a_changed_body_or_signed_header_is_an_invalid_signature() -> None:
    refused(InvalidSignatureException, signed(), body=b'{"StreamName":"other"}')
    headers = signed()
    headers["X-Amz-Target"] = "Kinesis_20131202.DeleteStream"
    refused(InvalidSignatureException, headers)


def test_an_unknown_key_or_a_wrong_token_is_unrecognized() -> None:
    text = "The security token included in the request is invalid."
    assert refused(UnrecognizedClientException, signed("AKIANOBODY")) == text
    assert refused(UnrecognizedClientException, signed("ASIATEMP", "tsecret")) == text
    wrong = signed("ASIATEMP", "tsecret", token="other-token")
    assert refused(UnrecognizedClientException, wrong) == text
    extra = signed(token="unexpected")
    assert refused(UnrecognizedClientException, extra) == text


def test_clock_skew_of_more_than_five_minutes_is_refused() -> None:
    old = signed(at=NOW - 600)
    assert refused(InvalidSignatureException, old) == (
        f"Signature expired: {stamp(NOW - 600)} is now earlier than {stamp(NOW - 300)} "
        f"({stamp(NOW)} - 5 min.)"
    )
    future = signed(at=NOW + 301)
    assert refused(InvalidSignatureException, future) == (
        f"Signature not yet current: {stamp(NOW + 301)} is still later than "
        f"{stamp(NOW + 300)} ({stamp(NOW)} + 5 min.)"
    )
    assert verify(signed(at=NOW - 299)).name == "writer"


def test_missing_and_malformed_authorization() -> None:
    headers = signed()
    del headers["Authorization"]
    assert refused(MissingAuthenticationTokenException, headers) == "Missing Authentication Token"
    headers = signed()
    headers["Authorization"] = headers["Authorization"].split(", Signature=")[0]
    message = refused(IncompleteSignatureException, headers)
    assert message.startswith("Authorization header requires 'Signature' parameter.")


def test_scope_of_another_region_is_refused() -> None:
    message = refused(InvalidSignatureException, signed(region="eu-west-1"))
    assert "eu-west-1" in message


def test_signing_keys_are_derived_once_per_day() -> None:
    verifier = Verifier(PRINCIPALS, "us-east-1")
    for _ in range(3):
        headers = signed()
        verifier.verify("POST", "/", headers, headers.items(), BODY, NOW)
    assert len(verifier._keys) == 1


def test_a_scope_date_other_than_the_request_date_is_refused() -> None:
    amz_date = stamp(NOW)
    yesterday = stamp(NOW - 86400)[:8]
    headers = {"X-Amz-Target": "Kinesis_20131202.ListStreams", "Host": "127.0.0.1:4567"}
    added = sign_request(
        "POST", URL, headers, BODY, amz_date=amz_date, access_key="AKIAWRITER",
        key=signing_key("secret", yesterday, "us-east-1", "kinesis"), region="us-east-1",
        service="kinesis",
    )
    added["Authorization"] = added["Authorization"].replace(
        f"/{amz_date[:8]}/", f"/{yesterday}/"
    )
    message = refused(InvalidSignatureException, CIMultiDict({**headers, **added}))
    assert message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        f"HTTP: '{yesterday}' != '{amz_date[:8]}', from '{amz_date}'."
    )
