"""SigV4 on the server: the shape of the ``Authorization`` header, and (with ``--iam``)
the signature itself.

The service refuses a request signed both ways, by header and by query string
(``InvalidSignatureException``), one without credentials
(``MissingAuthenticationTokenException``), and one whose ``Authorization`` header or
query-string signature lacks a SigV4 part (``IncompleteSignatureException``, listing every
missing part). :func:`check_authorization` checks that shape, as the service does before
looking at the signature; it is all a server without ``--iam`` asks of a request.

With ``--iam``, a :class:`Verifier` also checks who signed, in the service's order:

1. header auth (``Authorization``) or query-string auth (``X-Amz-Algorithm`` and the other
   ``X-Amz-*`` parameters); neither -> ``MissingAuthenticationTokenException``;
2. the key id must be a known principal's and ``X-Amz-Security-Token`` must be its
   session token (absent when it has none) -> else ``UnrecognizedClientException``;
3. the credential scope's region and service must be this server's, its date the
   request time's;
4. the request time (``X-Amz-Date``, else ``Date``) within 5 minutes of ``now`` -> else
   ``InvalidSignatureException`` (``Signature expired`` / ``not yet current``);
5. the signature, recomputed with :mod:`kpl.protocol.sigv4` (the producer's signer) over
   the headers the request lists in ``SignedHeaders`` and the body's SHA-256, compared in
   constant time -> else ``InvalidSignatureException``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import parse_qsl

from kpl.protocol.errors import InvalidSignatureException, UnrecognizedClientException
from kpl.protocol.sigv4 import (
    ALGORITHM,
    TIMESTAMP_FORMAT,
    authorization_params,
    canonical_request,
    parse_authorization,
    payload_hash,
    signature,
    signatures_match,
    signing_key,
    string_to_sign,
)
from server.core.errors import IncompleteSignatureException, MissingAuthenticationTokenException
from server.core.principals import Principal, Principals

__all__ = ["MAX_SKEW_SECONDS", "Verifier", "check_authorization", "check_clock"]

_PARTS = ("Credential", "Signature", "SignedHeaders")
#: The query-string signature's parameters, in the order the service names missing ones.
_QUERY_ORDER = (
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Date"
)
_PREFIX = ALGORITHM + " "


def check_authorization(headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    """Raise the service's error unless the request carries a SigV4-shaped signature."""
    auth = headers.get("Authorization")
    in_query = "X-Amz-Algorithm" in query
    if auth and in_query:
        raise InvalidSignatureException(
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as "
            "HTTP header."
        )
    if not auth:
        if not in_query:
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        missing = "".join(
            f"AWS query-string parameters must include '{part}'. "
            for part in _QUERY_ORDER
            if not query.get(part)
        )
        if missing:
            raise IncompleteSignatureException(
                missing + "Re-examine the query-string parameters."
            )
        return
    has_date = "X-Amz-Date" in headers or "Date" in headers
    if (
        has_date
        and auth.startswith(_PREFIX)
        and "Credential=" in auth
        and "Signature=" in auth
        and "SignedHeaders=" in auth
    ):
        return
    _, params = authorization_params(auth)
    message = "".join(
        f"Authorization header requires '{part}' parameter. "
        for part in _PARTS
        if part not in params
    )
    if not has_date:
        message += (
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
            "header. "
        )
    if not auth.startswith(_PREFIX) and not message:
        message = f"Unsupported AWS 'algorithm': '{auth.split(' ', 1)[0]}'. "
    raise IncompleteSignatureException(message + "Authorization=" + auth)


# -- verification (``--iam``) ------------------------------------------------------------

#: How far a request's time may be from the server's, either way (the service's 5 minutes).
MAX_SKEW_SECONDS: Final = 300.0

_INVALID_TOKEN = "The security token included in the request is invalid."
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
_QUERY_PARTS = (
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders"
)


def _basic(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(TIMESTAMP_FORMAT)


def _request_time(amz_date: str | None, date: str | None) -> tuple[str, float]:
    """The request's signing timestamp (basic format) and its epoch seconds."""
    if amz_date is not None:
        try:
            # Sliced rather than strptime'd: this runs on every request (10x cheaper).
            if not (
                len(amz_date) == 16 and amz_date[8] == "T" and amz_date[15] == "Z"
                and amz_date[:8].isdigit() and amz_date[9:15].isdigit()
            ):
                raise ValueError(amz_date)
            when = datetime(
                int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8]),
                int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15]), tzinfo=UTC,
            )
        except ValueError:
            raise IncompleteSignatureException(
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601"
            ) from None
        return amz_date, when.timestamp()
    try:
        parsed = parsedate_to_datetime(date or "")
    except (TypeError, ValueError):
        raise IncompleteSignatureException(
            f"Date must be in ISO-8601 'basic format'. Got '{date}'. "
            "See http://en.wikipedia.org/wiki/ISO_8601"
        ) from None
    epoch = parsed.timestamp()
    return _basic(epoch), epoch


def check_clock(stamp: str, epoch: float, now: float) -> None:
    """Refuse a request signed more than :data:`MAX_SKEW_SECONDS` from ``now``."""
    if epoch < now - MAX_SKEW_SECONDS:
        raise InvalidSignatureException(
            f"Signature expired: {stamp} is now earlier than {_basic(now - MAX_SKEW_SECONDS)} "
            f"({_basic(now)} - 5 min.)"
        )
    if epoch > now + MAX_SKEW_SECONDS:
        raise InvalidSignatureException(
            f"Signature not yet current: {stamp} is still later than "
            f"{_basic(now + MAX_SKEW_SECONDS)} ({_basic(now)} + 5 min.)"
        )


class Verifier:
    """Checks SigV4 signatures against the principals of an ``--iam`` file.

    Sans-IO: :meth:`verify` gets the request's parts and ``now`` and returns the
    :class:`~server.core.principals.Principal` who signed it, or raises the service's
    error. Derived signing keys are kept per key id, day, region and service (a key
    changes once a day, so recomputing it per request would be four HMACs for nothing).
    """

    def __init__(self, principals: Principals, region: str) -> None:
        self.principals = principals
        self.region = region
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def _key(self, principal: Principal, date: str, region: str, service: str) -> bytes:
        cache_key = (principal.access_key_id, date, region, service)
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) > 1024:
                self._keys.clear()
            key = signing_key(principal.secret_access_key, date, region, service)
            self._keys[cache_key] = key
        return key

    def verify(
        self,
        method: str,
        raw_path: str,
        headers: Mapping[str, str],
        header_items: Iterable[tuple[str, str]],
        body: bytes,
        now: float,
    ) -> Principal:
        """The principal who signed this request, or the service's error.

        ``raw_path`` is the request target as sent (path and percent-encoded query);
        ``headers`` looks headers up case-insensitively and ``header_items`` lists them
        all, repeats included.
        """
        path, _, query = raw_path.partition("?")
        auth_header = headers.get("Authorization")
        if auth_header:  # an empty header is no header, as in check_authorization
            auth = parse_authorization(auth_header)
            if auth is None:
                check_authorization(headers, {})  # raises the error naming what is missing
                raise IncompleteSignatureException("Authorization=" + auth_header)
            token = headers.get("X-Amz-Security-Token")
            stamp, epoch = _request_time(headers.get("X-Amz-Date"), headers.get("Date"))
            canonical_query_text = query
        else:
            params = dict(parse_qsl(query, keep_blank_values=True))
            if "X-Amz-Algorithm" not in params:
                raise MissingAuthenticationTokenException("Missing Authentication Token")
            missing = [part for part in _QUERY_PARTS if not params.get(part)]
            auth = None if missing else parse_authorization(
                f"{params['X-Amz-Algorithm']} Credential={params['X-Amz-Credential']}, "
                f"SignedHeaders={params['X-Amz-SignedHeaders']}, "
                f"Signature={params['X-Amz-Signature']}"
            )
            if auth is None:
                raise IncompleteSignatureException(
                    "AWS query-string parameters must include 'X-Amz-Algorithm', "
                    "'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', "
                    "'X-Amz-SignedHeaders'. Re-examine the query-string parameters."
                )
            token = params.get("X-Amz-Security-Token")
            stamp, epoch = _request_time(params["X-Amz-Date"], None)
            # The signature signs the query string without itself.
            canonical_query_text = "&".join(
                item for item in query.split("&") if not item.startswith("X-Amz-Signature=")
            )
        principal = self.principals.by_access_key.get(auth.access_key)
        if principal is None:
            raise UnrecognizedClientException(_INVALID_TOKEN)
        expected_token = principal.session_token
        if (token or None) != expected_token and not (
            token is not None
            and expected_token is not None
            and signatures_match(expected_token, token)
        ):
            raise UnrecognizedClientException(_INVALID_TOKEN)
        if auth.region != self.region:
            raise InvalidSignatureException(
                f"Credential should be scoped to a valid region, not '{auth.region}'. "
            )
        if auth.service != "kinesis":
            raise InvalidSignatureException(
                "Credential should be scoped to correct service: 'kinesis'. "
            )
        if stamp[:8] != auth.date:
            raise InvalidSignatureException(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{auth.date}' != '{stamp[:8]}', from '{stamp}'."
            )
        check_clock(stamp, epoch, now)
        if "host" not in auth.signed_headers:
            raise InvalidSignatureException(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
            )
        # The body's own hash, never a client-declared one: the signature must cover
        # the bytes that are acted on.
        canonical, _ = canonical_request(
            method,
            path,
            canonical_query_text,
            header_items,
            payload_hash(body),
            signed_headers=auth.signed_headers,
        )
        key = self._key(principal, auth.date, auth.region, auth.service)
        expected = signature(key, string_to_sign(stamp, auth.scope, canonical))
        if not signatures_match(expected, auth.signature):
            raise InvalidSignatureException(_BAD_SIGNATURE)
        return principal
