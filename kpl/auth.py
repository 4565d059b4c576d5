"""AWS Signature Version 4 for JSON 1.1 requests, and where credentials come from.

Why our own signer: botocore is optional (the ``aws`` extra) but every request must be
signed, even against a local server. The signer is a handful of pure functions — the
canonical request, the string to sign, the signing key and the signature — proven equal
to botocore's ``SigV4Auth`` byte for byte in ``tests/kpl/test_auth.py``.

Rules (the subset of SigV4 a POST to a JSON 1.1 service needs, as botocore applies it):

- Header names are lower-cased; values are trimmed and inner runs of whitespace become
  one space; repeated names are joined with ``,``. ``user-agent``, ``expect`` and the
  hop-by-hop headers are not signed. ``host`` is derived from the URL without a default
  port when the caller gave none.
- The path is normalised (``.``/``..`` removed) and percent-encoded except ``/~``;
  an empty path is ``/``. The query string is sorted and encoded per RFC 3986.
- The payload hash is the hex SHA-256 of the body.
- The signing key chains HMAC-SHA256 over date, region, service and ``aws4_request``;
  it changes once a day, so :class:`SigV4Signer` caches it per date.

Credentials: explicit ones win; then the ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` environment variables; then, for a
loopback endpoint, dummy credentials (a local server does not check them, and probing
for an instance role would only add seconds of timeouts); then botocore's standard chain
(profiles, SSO, instance and container roles) when botocore is importable.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

__all__ = [
    "ALGORITHM",
    "DUMMY_CREDENTIALS",
    "UNSIGNED_HEADERS",
    "CredentialProvider",
    "Credentials",
    "NoCredentialsError",
    "SigV4Signer",
    "StaticCredentialProvider",
    "canonical_headers",
    "canonical_path",
    "canonical_query",
    "canonical_request",
    "credential_scope",
    "host_from_url",
    "is_loopback_url",
    "resolve_credentials",
    "signature",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

#: Headers never signed: they may be changed by proxies or the HTTP client.
UNSIGNED_HEADERS = frozenset(
    {
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class NoCredentialsError(RuntimeError):
    """No credentials were given and none could be found for a non-local endpoint."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key, its secret and an optional session token."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise ValueError("credentials need a non-empty access key and secret key")


#: Used for loopback endpoints: the bundled server accepts any well-formed signature.
DUMMY_CREDENTIALS = Credentials("AKIDLOCALKPL", "local-secret-not-checked")


class CredentialProvider(Protocol):
    """Gives the credentials to sign the next request with (they may rotate)."""

    def __call__(self) -> Credentials: ...


@dataclass(frozen=True, slots=True)
class StaticCredentialProvider:
    """Always the same credentials."""

    credentials: Credentials

    def __call__(self) -> Credentials:
        return self.credentials


# --------------------------------------------------------------------------- signing


def _trim(value: str) -> str:
    return " ".join(value.split())


def host_from_url(url: str) -> str:
    """The ``host`` header for ``url``: lower-case, without userinfo or a default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal loses its brackets in urlsplit
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def canonical_path(path: str) -> str:
    """Remove dot segments and repeated slashes, then percent-encode (except ``/~``)."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and segments else ""
    return quote(lead + "/".join(segments) + trail, safe="/~")


def canonical_query(query: str) -> str:
    """Sort an already percent-encoded query string's parameters by key, then value."""
    if not query:
        return ""
    pairs = [item.partition("=")[::2] for item in query.split("&")]
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """The canonical header block and the ``SignedHeaders`` list for ``headers``."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in UNSIGNED_HEADERS:
            continue
        grouped.setdefault(lname, []).append(_trim(value))
    names = sorted(grouped)
    block = "".join(f"{name}:{','.join(grouped[name])}\n" for name in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    payload_hash: str,
) -> tuple[str, str]:
    """The canonical request and its ``SignedHeaders``; ``headers`` must include ``host``."""
    block, signed = canonical_headers(headers)
    text = "\n".join(
        (method.upper(), canonical_path(path), canonical_query(query), block, signed, payload_hash)
    )
    return text, signed


def credential_scope(date: str, region: str, service: str) -> str:
    """``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The string to sign: algorithm, timestamp, scope and the canonical request's hash."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key for one day, region and service."""
    k_date = _hmac(f"AWS4{secret_key}".encode(), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def signature(key: bytes, to_sign: str) -> str:
    """The hex signature of ``to_sign`` with a derived signing key."""
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


class SigV4Signer:
    """Signs requests for one service and region; caches the day's signing key.

    ``sign()`` returns the headers to add (``X-Amz-Date``, ``Authorization`` and
    ``X-Amz-Security-Token`` when the credentials carry a session token).
    """

    __slots__ = ("_cache", "_credentials", "region", "service")

    def __init__(self, credentials: CredentialProvider, region: str, service: str = "kinesis"):
        self._credentials = credentials
        self.region = region
        self.service = service
        self._cache: tuple[str, str, bytes] | None = None  # (secret, date, key)

    def _key(self, secret: str, date: str) -> bytes:
        cached = self._cache
        if cached is not None and cached[0] == secret and cached[1] == date:
            return cached[2]
        key = signing_key(secret, date, self.region, self.service)
        self._cache = (secret, date, key)
        return key

    def sign(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Sign one request; ``now`` defaults to the current UTC time."""
        creds = self._credentials()
        when = now if now is not None else datetime.now(UTC)
        amz_date = when.strftime(_TIMESTAMP_FORMAT)
        date = amz_date[:8]
        added = {"X-Amz-Date": amz_date}
        if creds.token:
            added["X-Amz-Security-Token"] = creds.token
        all_headers = [(k, v) for k, v in headers.items() if k.lower() != "authorization"]
        all_headers += added.items()
        if not any(k.lower() == "host" for k, _ in all_headers):
            all_headers.append(("host", host_from_url(url)))
        parts = urlsplit(url)
        payload_hash = hashlib.sha256(body).hexdigest()
        canonical, signed = canonical_request(
            method, parts.path, parts.query, all_headers, payload_hash
        )
        scope = credential_scope(date, self.region, self.service)
        to_sign = string_to_sign(amz_date, scope, canonical)
        sig = signature(self._key(creds.secret_key, date), to_sign)
        added["Authorization"] = (
            f"{ALGORITHM} Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={sig}"
        )
        return added


# --------------------------------------------------------------------------- credentials


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (localhost or a loopback address)."""
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _from_environment(environ: Mapping[str, str]) -> Credentials | None:
    access = environ.get("AWS_ACCESS_KEY_ID")
    secret = environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return Credentials(access, secret, environ.get("AWS_SESSION_TOKEN") or None)
    return None


def _botocore_provider() -> CredentialProvider | None:
    try:
        import botocore.session
    except ImportError:
        return None
    found: Any = botocore.session.get_session().get_credentials()
    if found is None:
        return None

    def provider() -> Credentials:
        # Refreshable credentials (roles, SSO) renew themselves inside this call.
        frozen = found.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    return provider


def resolve_credentials(
    credentials: Credentials | CredentialProvider | None,
    endpoint_url: str,
    *,
    environ: Mapping[str, str] | None = None,
    botocore_chain: Callable[[], CredentialProvider | None] = _botocore_provider,
) -> CredentialProvider:
    """Find the credentials to sign requests to ``endpoint_url`` with (see module doc)."""
    if isinstance(credentials, Credentials):
        return StaticCredentialProvider(credentials)
    if credentials is not None:
        return credentials
    from_env = _from_environment(os.environ if environ is None else environ)
    if from_env is not None:
        return StaticCredentialProvider(from_env)
    if is_loopback_url(endpoint_url):
        return StaticCredentialProvider(DUMMY_CREDENTIALS)
    provider = botocore_chain()
    if provider is not None:
        return provider
    raise NoCredentialsError(
        f"no AWS credentials for {endpoint_url}: pass credentials=Credentials(...), set "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or install the 'aws' extra "
        "(botocore) to use profiles and instance roles"
    )
