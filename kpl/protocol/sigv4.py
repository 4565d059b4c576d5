"""AWS Signature Version 4 as pure functions: what a client signs and a server checks.

Nothing here reads a clock, credentials or the network: the caller passes the timestamp,
the secret (or the day's derived key) and the request's parts. The producer signs with
these functions and a server can verify a request with the very same ones: parse the
``Authorization`` header (:func:`parse_authorization`), rebuild the canonical request
over the headers it names, derive the key from the caller's secret, and compare the
signatures in constant time (:func:`signatures_match`).

Rules (the subset of SigV4 a POST to a JSON 1.1 service needs, as botocore applies it):

- Header names are lower-cased; values are trimmed and inner runs of whitespace become
  one space; repeated names are joined with ``,``. A signer leaves out ``user-agent``,
  ``expect`` and the hop-by-hop headers (:data:`UNSIGNED_HEADERS`); a verifier uses
  exactly the ``SignedHeaders`` of the request. ``host`` is derived from the URL without
  a default port when the caller gave none.
- The path is normalised (``.``/``..`` removed) and percent-encoded except ``/~``;
  an empty path is ``/``. The query string is sorted and encoded per RFC 3986.
- The payload hash is the hex SHA-256 of the body.
- The signing key chains HMAC-SHA256 over date, region, service and ``aws4_request``;
  it changes once a day, so a signer caches it per date and secret.
- ``Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/
  aws4_request, SignedHeaders=<a;b;c>, Signature=<64 hex digits>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

__all__ = [
    "ALGORITHM",
    "TIMESTAMP_FORMAT",
    "UNSIGNED_HEADERS",
    "Authorization",
    "authorization_header",
    "authorization_params",
    "canonical_headers",
    "canonical_path",
    "canonical_query",
    "canonical_request",
    "credential_scope",
    "host_from_url",
    "parse_authorization",
    "payload_hash",
    "sign_request",
    "signature",
    "signatures_match",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
#: ``X-Amz-Date``'s format (UTC), for ``datetime.strftime``.
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_SCOPE_TERMINATOR = "aws4_request"

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


def canonical_headers(
    headers: Iterable[tuple[str, str]], signed_headers: Collection[str] | None = None
) -> tuple[str, str]:
    """The canonical header block and the ``SignedHeaders`` list for ``headers``.

    ``signed_headers`` (lower-case names) selects exactly those headers, as a verifier
    must; without it every header but :data:`UNSIGNED_HEADERS` is signed.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in UNSIGNED_HEADERS if signed_headers is None else lname not in signed_headers:
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
    signed_headers: Collection[str] | None = None,
) -> tuple[str, str]:
    """The canonical request and its ``SignedHeaders``; ``headers`` must include ``host``.

    ``signed_headers`` as in :func:`canonical_headers`.
    """
    block, signed = canonical_headers(headers, signed_headers)
    text = "\n".join(
        (method.upper(), canonical_path(path), canonical_query(query), block, signed, payload_hash)
    )
    return text, signed


def payload_hash(body: bytes) -> str:
    """The hex SHA-256 of a request body."""
    return hashlib.sha256(body).hexdigest()


def credential_scope(date: str, region: str, service: str) -> str:
    """``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/{_SCOPE_TERMINATOR}"


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The string to sign: algorithm, timestamp, scope and the canonical request's hash."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key for one day, region and service."""
    k_date = _hmac(f"AWS4{secret_key}".encode(), date)
    return _hmac(_hmac(_hmac(k_date, region), service), _SCOPE_TERMINATOR)


def signature(key: bytes, to_sign: str) -> str:
    """The hex signature of ``to_sign`` with a derived signing key."""
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def signatures_match(expected: str, given: str) -> bool:
    """Compare two hex signatures in constant time (no timing hint of the first mismatch)."""
    # compare_digest takes str only when it is ASCII: a header may carry anything.
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )


def authorization_header(access_key: str, scope: str, signed_headers: str, sig: str) -> str:
    """The ``Authorization`` header value."""
    return (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={sig}"
    )


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    amz_date: str,
    access_key: str,
    key: bytes,
    region: str,
    service: str,
    token: str | None = None,
) -> dict[str, str]:
    """The headers that sign one request: ``X-Amz-Date``, ``X-Amz-Security-Token`` (with
    a session ``token``) and ``Authorization``.

    ``key`` is :func:`signing_key` for ``amz_date``'s day, ``region`` and ``service``; an
    ``Authorization`` already in ``headers`` is ignored, and ``host`` is derived from
    ``url`` unless given.
    """
    added = {"X-Amz-Date": amz_date}
    if token:
        added["X-Amz-Security-Token"] = token
    all_headers = [(k, v) for k, v in headers.items() if k.lower() != "authorization"]
    all_headers += added.items()
    if not any(k.lower() == "host" for k, _ in all_headers):
        all_headers.append(("host", host_from_url(url)))
    parts = urlsplit(url)
    canonical, signed = canonical_request(
        method, parts.path, parts.query, all_headers, payload_hash(body)
    )
    scope = credential_scope(amz_date[:8], region, service)
    sig = signature(key, string_to_sign(amz_date, scope, canonical))
    added["Authorization"] = authorization_header(access_key, scope, signed, sig)
    return added


def authorization_params(header: str) -> tuple[str, dict[str, str]]:
    """The algorithm (the first word) and the ``name=value`` parameters of an
    ``Authorization`` header. Commas and spaces both separate parameters; a parameter
    without ``=`` or without a value is left out."""
    words = header.replace(",", " ").split()
    params: dict[str, str] = {}
    for piece in words[1:]:
        name, sep, value = piece.partition("=")
        if sep and value:
            params[name] = value
    return (words[0] if words else ""), params


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of a complete SigV4 ``Authorization`` header."""

    access_key: str
    date: str
    region: str
    service: str
    #: Lower-case header names, in the header's order.
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        """The credential scope the signature was made for."""
        return credential_scope(self.date, self.region, self.service)


def parse_authorization(header: str) -> Authorization | None:
    """The parts of a SigV4 ``Authorization`` header, or ``None`` when it is not one
    (another algorithm, a missing part, a credential that is not
    ``<key id>/<date>/<region>/<service>/aws4_request``)."""
    algorithm, params = authorization_params(header)
    credential = params.get("Credential")
    signed = params.get("SignedHeaders")
    sig = params.get("Signature")
    if algorithm != ALGORITHM or credential is None or signed is None or sig is None:
        return None
    fields = credential.split("/")
    if len(fields) != 5 or fields[4] != _SCOPE_TERMINATOR or not all(fields[:4]):
        return None
    access_key, date, region, service, _ = fields
    return Authorization(
        access_key, date, region, service, tuple(signed.lower().split(";")), sig
    )
