"""Our SigV4 signer against botocore's SigV4Auth, byte for byte; credential resolution.

The pure SigV4 functions it signs with are tested in ``tests/kpl/protocol/test_sigv4.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import botocore.auth
import botocore.credentials
import pytest
from botocore.awsrequest import AWSRequest

from kpl.auth import (
    DUMMY_CREDENTIALS,
    Credentials,
    NoCredentialsError,
    SigV4Signer,
    StaticCredentialProvider,
    is_loopback_url,
    resolve_credentials,
)

WHEN = datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC)
CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TOKEN_CREDS = Credentials("ASIAEXAMPLE", "secret/with+chars", "FQoGZXIvYXdzEJr//token==")

JSON_HEADERS = {
    "X-Amz-Target": "Kinesis_20131202.PutRecords",
    "Content-Type": "application/x-amz-json-1.1",
}

CASES = [
    # (credentials, region, url, headers, body)
    (CREDS, "us-east-1", "https://kinesis.us-east-1.amazonaws.com/", JSON_HEADERS, b"{}"),
    (CREDS, "eu-west-1", "http://127.0.0.1:4567", JSON_HEADERS, b'{"StreamName":"s"}'),
    (TOKEN_CREDS, "ap-southeast-2", "https://kinesis.ap-southeast-2.amazonaws.com:443/",
     {**JSON_HEADERS, "User-Agent": "kpl/0.1"}, b'{"Records":[]}' * 100),
    (CREDS, "us-west-2", "http://localhost:80/a/./b/../c//d/",
     {**JSON_HEADERS, "X-Custom": "  spaced    out  value "}, b""),
    (CREDS, "us-east-1", "http://[::1]:4567/?b=2&a=1&a=0",
     {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.ListShards"},
     "ünïcode body".encode()),
    (TOKEN_CREDS, "cn-north-1", "https://kinesis.cn-north-1.amazonaws.com.cn/p%20ath/~x",
     JSON_HEADERS, bytes(range(256))),
]


def botocore_sign(
    creds: Credentials, region: str, url: str, headers: dict[str, str], body: bytes
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    boto_creds = botocore.credentials.Credentials(creds.access_key, creds.secret_key, creds.token)
    with mock.patch.object(
        botocore.auth, "get_current_datetime", return_value=WHEN.replace(tzinfo=None)
    ):
        botocore.auth.SigV4Auth(boto_creds, "kinesis", region).add_auth(request)
    return {k: v for k, v in request.headers.items() if k not in headers}


@pytest.mark.parametrize(("creds", "region", "url", "headers", "body"), CASES)
def test_signature_equals_botocore(
    creds: Credentials, region: str, url: str, headers: dict[str, str], body: bytes
) -> None:
    ours = SigV4Signer(StaticCredentialProvider(creds), region).sign(
        "POST", url, headers, body, WHEN
    )
    theirs = botocore_sign(creds, region, url, headers, body)
    assert ours == theirs
    assert ("X-Amz-Security-Token" in ours) == (creds.token is not None)


def test_signing_key_is_cached_per_day_and_secret() -> None:
    signer = SigV4Signer(StaticCredentialProvider(CREDS), "us-east-1")
    first = signer.sign("POST", "http://127.0.0.1:1/", JSON_HEADERS, b"", WHEN)
    next_day = WHEN.replace(day=27)
    second = signer.sign("POST", "http://127.0.0.1:1/", JSON_HEADERS, b"", next_day)
    assert "20261127/us-east-1/kinesis" in second["Authorization"]
    assert first["Authorization"] != second["Authorization"]
    with mock.patch.object(
        botocore.auth, "get_current_datetime", return_value=next_day.replace(tzinfo=None)
    ):
        request = AWSRequest(method="POST", url="http://127.0.0.1:1/", data=b"",
                             headers=dict(JSON_HEADERS))
        botocore.auth.SigV4Auth(
            botocore.credentials.Credentials(CREDS.access_key, CREDS.secret_key),
            "kinesis", "us-east-1",
        ).add_auth(request)
    assert second["Authorization"] == request.headers["Authorization"]


def test_credentials_reject_empty_and_hide_secret() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Credentials("AKID", "")
    assert "secret" not in repr(Credentials("AKID", "secret", "tok"))


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:4567", True),
        ("http://localhost:1", True),
        ("http://[::1]:1", True),
        ("http://127.8.9.10", True),
        ("https://kinesis.us-east-1.amazonaws.com", False),
        ("http://10.0.0.1:4567", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_resolve_explicit_wins() -> None:
    env = {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "envsecret"}
    assert resolve_credentials(CREDS, "http://127.0.0.1:1", environ=env)() == CREDS


def test_resolve_environment_then_loopback_dummy() -> None:
    env = {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    assert resolve_credentials(None, "https://x.amazonaws.com", environ=env)() == Credentials(
        "ENV", "s", "t"
    )
    assert resolve_credentials(None, "http://127.0.0.1:1", environ={})() == DUMMY_CREDENTIALS


def test_resolve_uses_botocore_chain_for_remote_endpoints() -> None:
    provider = StaticCredentialProvider(TOKEN_CREDS)
    found = resolve_credentials(
        None, "https://kinesis.us-east-1.amazonaws.com", environ={}, botocore_chain=lambda: provider
    )
    assert found() == TOKEN_CREDS


def test_resolve_without_any_source_is_a_clear_error() -> None:
    with pytest.raises(NoCredentialsError, match="AWS_ACCESS_KEY_ID"):
        resolve_credentials(
            None, "https://kinesis.us-east-1.amazonaws.com", environ={}, botocore_chain=lambda: None
        )


def test_real_botocore_chain_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "BOTOENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "botosecret")
    from kpl.auth import _botocore_provider

    provider = _botocore_provider()
    assert provider is not None
    assert provider() == Credentials("BOTOENV", "botosecret")


def test_botocore_chain_reports_refreshable_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session

    expiry = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
    refreshable = botocore.credentials.RefreshableCredentials(
        "ASIAROLE", "rolesecret", "roletoken", expiry, refresh_using=dict, method="test",
        time_fetcher=lambda: datetime(2026, 11, 26, 3, 0, tzinfo=UTC),
    )

    class Session:
        def get_credentials(self) -> botocore.credentials.Credentials:
            return refreshable

    monkeypatch.setattr(botocore.session, "get_session", Session)
    from kpl.auth import _botocore_provider

    provider = _botocore_provider()
    assert provider is not None
    found = provider()
    assert found == Credentials("ASIAROLE", "rolesecret", "roletoken", expiry)
    assert found.expiry == expiry
