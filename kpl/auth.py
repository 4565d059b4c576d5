"""AWS Signature Version 4 for JSON 1.1 requests, and where credentials come from.

Why our own signer: botocore is optional (the ``aws`` extra) but every request must be
signed, even against a local server. The signing itself is the pure functions of
:mod:`kpl.protocol.sigv4` (the canonical request, the string to sign, the signing key
and the signature), proven equal to botocore's ``SigV4Auth`` byte for byte in the tests;
:class:`SigV4Signer` adds the clock, the credentials and a cache of the day's signing key.

Credentials: explicit ones win; then the ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` environment variables; then, for a
loopback endpoint, dummy credentials (a local server does not check them, and probing
for an instance role would only add seconds of timeouts); then botocore's standard chain
(profiles, SSO, instance and container roles) when botocore is importable.

Credentials and the event loop. Finding and renewing credentials can block for seconds
(profile files, the SSO cache, the instance metadata service with ~1 s timeouts per try,
an STS call), and every request is signed on the loop. So :func:`credential_source`
splits the sources in two:

- Static ones (explicit :class:`Credentials`, a :class:`StaticCredentialProvider`, the
  environment, the loopback dummies) are read synchronously on every request: no cache,
  no thread, no await — the hot path stays as cheap as before.
- Everything else (the botocore chain, any other callable) is a :class:`CredentialCache`:
  the provider is only ever called in a worker thread, at most one call in flight (every
  request that needs credentials meanwhile awaits that same call), and its answer is
  reused. The botocore chain itself is looked up lazily, in that thread, on first use.

Refresh rule of the cache (``now`` is the wall clock; ``expiry`` is what the provider
reported, see :attr:`Credentials.expiry`; botocore's refreshable credentials report
theirs):

- credentials are reused until ``fetched + MAX_AGE`` (5 min), so a provider that reports
  no expiry (a rotated profile, a user callable) is asked again now and then — asking
  botocore is cheap when its own refresh is not due;
- with an expiry, no later than ``expiry - REFRESH_MARGIN`` (15 min, botocore's advisory
  refresh window, so our call is the one that makes botocore renew them), but never
  sooner than ``fetched + MIN_AGE`` (10 s), so credentials already inside the margin
  (short sessions, a renewal that failed and kept the old ones) cost one thread hop per
  10 s, not one per request;
- at once when a request signed with them was refused with an expired-token or
  bad-signature code (:data:`STALE_CREDENTIAL_CODES`): :meth:`CredentialCache.invalidate`;
- a failed call is not cached: the requests waiting for it raise its error (a missing
  botocore chain is the usual :class:`NoCredentialsError`), the next request calls again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from kpl.protocol.sigv4 import (
    ALGORITHM,
    TIMESTAMP_FORMAT,
    UNSIGNED_HEADERS,
    canonical_headers,
    canonical_path,
    canonical_query,
    canonical_request,
    credential_scope,
    host_from_url,
    sign_request,
    signature,
    signing_key,
    string_to_sign,
)

__all__ = [
    "ALGORITHM",
    "DUMMY_CREDENTIALS",
    "STALE_CREDENTIAL_CODES",
    "UNSIGNED_HEADERS",
    "CredentialCache",
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
    "credential_source",
    "host_from_url",
    "is_loopback_url",
    "resolve_credentials",
    "signature",
    "signing_key",
    "string_to_sign",
]


class NoCredentialsError(RuntimeError):
    """No credentials were given and none could be found for a non-local endpoint."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key, its secret, an optional session token and when they expire.

    ``expiry`` (timezone-aware) lets a :class:`CredentialCache` ask its provider again
    in time; ``None`` means the provider did not say.
    """

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expiry: datetime | None = None

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise ValueError("credentials need a non-empty access key and secret key")
        if self.expiry is not None and self.expiry.utcoffset() is None:
            raise ValueError(
                f"credentials expiry must be timezone-aware (e.g. UTC), got {self.expiry!r}"
            )


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


class SigV4Signer:
    """Signs requests for one service and region; caches the day's signing key.

    ``sign()`` returns the headers to add (``X-Amz-Date``, ``Authorization`` and
    ``X-Amz-Security-Token`` when the credentials carry a session token). It signs with
    the ``credentials`` it is given, else asks the provider (synchronously: give it only
    a provider that never blocks; ``None`` when every call passes ``credentials``).
    """

    __slots__ = ("_cache", "_credentials", "region", "service")

    def __init__(
        self, credentials: CredentialProvider | None, region: str, service: str = "kinesis"
    ):
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
        *,
        credentials: Credentials | None = None,
    ) -> dict[str, str]:
        """Sign one request; ``now`` defaults to the current UTC time."""
        creds = credentials
        if creds is None:
            if self._credentials is None:
                raise TypeError("this signer has no provider: pass credentials=")
            creds = self._credentials()
        when = now if now is not None else datetime.now(UTC)
        amz_date = when.strftime(TIMESTAMP_FORMAT)
        return sign_request(
            method,
            url,
            headers,
            body,
            amz_date=amz_date,
            access_key=creds.access_key,
            key=self._key(creds.secret_key, amz_date[:8]),
            region=self.region,
            service=self.service,
            token=creds.token,
        )


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


def _expiry_of(found: Any) -> datetime | None:
    # botocore's frozen credentials carry no expiry; its RefreshableCredentials keep it
    # in _expiry_time (aware datetime, None until a deferred fetch). Plain ones have none.
    expiry = getattr(found, "_expiry_time", None)
    return expiry if isinstance(expiry, datetime) and expiry.utcoffset() is not None else None


def _botocore_provider() -> CredentialProvider | None:
    """botocore's standard chain, or None without botocore or credentials. BLOCKS: both
    this lookup and the returned provider may do file and network IO."""
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
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token, _expiry_of(found))

    return provider


def _no_credentials(endpoint_url: str) -> NoCredentialsError:
    return NoCredentialsError(
        f"no AWS credentials for {endpoint_url}: pass credentials=Credentials(...), set "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or install the 'aws' extra "
        "(botocore) to use profiles and instance roles"
    )


def _static_source(
    credentials: Credentials | CredentialProvider | None,
    endpoint_url: str,
    environ: Mapping[str, str] | None,
) -> CredentialProvider | None:
    """The sources that need no lookup: explicit, environment, loopback dummies."""
    if isinstance(credentials, Credentials):
        return StaticCredentialProvider(credentials)
    if credentials is not None:
        return credentials
    from_env = _from_environment(os.environ if environ is None else environ)
    if from_env is not None:
        return StaticCredentialProvider(from_env)
    if is_loopback_url(endpoint_url):
        return StaticCredentialProvider(DUMMY_CREDENTIALS)
    return None


def resolve_credentials(
    credentials: Credentials | CredentialProvider | None,
    endpoint_url: str,
    *,
    environ: Mapping[str, str] | None = None,
    botocore_chain: Callable[[], CredentialProvider | None] = _botocore_provider,
) -> CredentialProvider:
    """Find the credentials to sign requests to ``endpoint_url`` with (see module doc).

    Synchronous: the botocore chain is looked up here and its provider may block. Code
    on an event loop uses :func:`credential_source` instead.
    """
    found = _static_source(credentials, endpoint_url, environ)
    if found is not None:
        return found
    provider = botocore_chain()
    if provider is not None:
        return provider
    raise _no_credentials(endpoint_url)


# --------------------------------------------------------------------------- off the loop

#: Error codes after which credentials from a :class:`CredentialCache` are asked for again.
STALE_CREDENTIAL_CODES: Final = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "UnrecognizedClientException",
    }
)


class _LazyChain:
    """The botocore chain, looked up on the first call (which runs in a worker thread)."""

    def __init__(
        self, endpoint_url: str, chain: Callable[[], CredentialProvider | None] | None
    ) -> None:
        self._endpoint_url = endpoint_url
        self._chain = chain
        self._found: CredentialProvider | None = None

    def __call__(self) -> Credentials:
        if self._found is None:
            # Looked up at call time so tests can replace the module's chain.
            chain = self._chain if self._chain is not None else _botocore_provider
            found = chain()
            if found is None:
                raise _no_credentials(self._endpoint_url)  # next call looks again
            self._found = found
        return self._found()


class CredentialCache:
    """Credentials from a provider that may block: fetched in a worker thread, reused.

    One fetch at a time; see the module doc for when it fetches again. ``clock`` is the
    wall clock in epoch seconds (expiries are wall-clock times).
    """

    MAX_AGE: Final = 300.0
    REFRESH_MARGIN: Final = 900.0
    MIN_AGE: Final = 10.0

    def __init__(
        self, provider: CredentialProvider, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.provider = provider
        self._clock = clock
        self._credentials: Credentials | None = None
        self._refresh_at = 0.0
        self._fetch: asyncio.Future[Credentials] | None = None
        #: Provider calls started (a fetch shared by concurrent requests counts once).
        self.fetches = 0

    def fresh(self) -> Credentials | None:
        """The cached credentials if they need no fetch now, else None. Never blocks."""
        if self._credentials is not None and self._clock() < self._refresh_at:
            return self._credentials
        return None

    async def get(self) -> Credentials:
        """Fresh credentials: cached, or from the (shared) fetch in a worker thread."""
        cached = self.fresh()
        if cached is not None:
            return cached
        fetch = self._fetch
        if fetch is None:
            self.fetches += 1
            fetch = asyncio.ensure_future(asyncio.to_thread(self._call))
            fetch.add_done_callback(self._fetched)
            self._fetch = fetch
        # shield: one cancelled request must not cancel the fetch the others wait for.
        return await asyncio.shield(fetch)

    def _call(self) -> Credentials:
        """Runs in the worker thread."""
        found: object = self.provider()
        if not isinstance(found, Credentials):
            raise TypeError(
                f"the credential provider {self.provider!r} returned "
                f"{type(found).__name__}, not kpl.auth.Credentials"
            )
        return found

    def _fetched(self, fetch: asyncio.Future[Credentials]) -> None:
        if self._fetch is fetch:
            self._fetch = None
        if fetch.cancelled():
            return
        error = fetch.exception()  # also marks it retrieved when every waiter left
        if error is not None:
            return
        credentials = fetch.result()
        now = self._clock()
        refresh_at = now + self.MAX_AGE
        if credentials.expiry is not None:
            due = max(credentials.expiry.timestamp() - self.REFRESH_MARGIN, now + self.MIN_AGE)
            refresh_at = min(refresh_at, due)
        self._credentials = credentials
        self._refresh_at = refresh_at

    def invalidate(self, used: Credentials) -> None:
        """The service refused a request signed with ``used``: fetch before the next one.

        Credentials fetched since ``used`` was handed out are left alone.
        """
        if self._credentials is used:
            self._refresh_at = 0.0


def credential_source(
    credentials: Credentials | CredentialProvider | None,
    endpoint_url: str,
    *,
    environ: Mapping[str, str] | None = None,
    botocore_chain: Callable[[], CredentialProvider | None] | None = None,
    clock: Callable[[], float] = time.time,
) -> StaticCredentialProvider | CredentialCache:
    """Like :func:`resolve_credentials`, but never blocks and never does IO.

    Static sources come back as a :class:`StaticCredentialProvider` (read on the loop);
    any other provider, and the botocore chain (looked up on first use, so a missing one
    raises :class:`NoCredentialsError` from the first ``get()``), as a
    :class:`CredentialCache` that calls it in a worker thread.
    """
    found = _static_source(credentials, endpoint_url, environ)
    if isinstance(found, StaticCredentialProvider):
        return found
    if found is None:
        found = _LazyChain(endpoint_url, botocore_chain)
    return CredentialCache(found, clock=clock)
