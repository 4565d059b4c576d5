"""The network seam: one call at a time, errors translated at one boundary.

A :class:`Transport` sends the body of one Kinesis action and returns the body of its
200 answer, or raises a :class:`kpl.errors.KinesisError`. Bodies are JSON 1.1
(:data:`CONTENT_TYPE`) unless the caller names CBOR 1.1 (:data:`CBOR_CONTENT_TYPE`, which
the service answers in kind, errors included):

- an error answer (``{"__type": ..., "message": ...}``, in JSON or CBOR) becomes
  ``KinesisError.for_code(code, message)`` — the error carries its own retry policy;
- an answer without a readable ``__type`` becomes an error chosen by its status
  (5xx: ``InternalFailure``/``ServiceUnavailable``, 413: ``ValidationException``, ...);
- a refused, reset or dropped connection becomes :class:`kpl.errors.NetworkError`;
- a connect or request timeout becomes :class:`kpl.errors.RequestTimeout`;
- credentials not fetched within ``request_timeout`` become :class:`kpl.errors.NetworkError`
  (nothing was sent; the shared fetch goes on);
- credentials that cannot be found or fetched raise their own error
  (:class:`kpl.auth.NoCredentialsError`, or whatever the provider raised) — not a
  KinesisError, so nothing retries it.

A :class:`StreamingTransport` also reads an answer as a stream of chunks (SubscribeToShard),
with the same translation of errors. Nothing above this module sees an aiohttp
exception. :class:`AioHttpTransport` is the real one (a keep-alive pool, SigV4-signed
requests, streams on a pool of their own); :class:`MockTransport` hands each request to
a function, as httpx's ``MockTransport`` does, for tests and examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import aiohttp
import cbor2
import orjson

from kpl.auth import (
    STALE_CREDENTIAL_CODES,
    CredentialCache,
    CredentialProvider,
    Credentials,
    SigV4Signer,
    credential_source,
    is_loopback_url,
)
from kpl.errors import KinesisError, NetworkError, RequestTimeout

__all__ = [
    "API_VERSION",
    "CBOR_CONTENT_TYPE",
    "CONTENT_TYPE",
    "AioHttpTransport",
    "MockRequest",
    "MockResponse",
    "MockTransport",
    "StreamingTransport",
    "Transport",
    "default_endpoint_url",
    "error_from_response",
    "resolve_region",
    "translate_exception",
]

API_VERSION: Final = "Kinesis_20131202"
CONTENT_TYPE: Final = "application/x-amz-json-1.1"
#: What the AWS SDKs for Java speak to Kinesis: blobs travel as raw bytes.
CBOR_CONTENT_TYPE: Final = "application/x-amz-cbor-1.1"
_LOCAL_DEFAULT_REGION: Final = "us-east-1"

# Status -> error code for answers whose body names no error (a proxy's page, a bare 413).
_STATUS_CODES: Final[dict[int, str]] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    413: "ValidationException",
    429: "ProvisionedThroughputExceededException",
    500: "InternalFailure",
    502: "ServiceUnavailable",
    503: "ServiceUnavailable",
    504: "ServiceUnavailable",
}


@runtime_checkable
class Transport(Protocol):
    """Sends one action's body; returns the 200 answer's body or raises KinesisError."""

    async def call(self, action: str, body: bytes, content_type: str = CONTENT_TYPE) -> bytes:
        """POST ``body`` as ``Kinesis_20131202.<action>``; return the response body."""
        ...

    async def close(self) -> None:
        """Release connections; the transport is not used afterwards."""
        ...


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A transport that can also read an answer as a stream (SubscribeToShard's)."""

    def stream(
        self, action: str, body: bytes, *, read_timeout: float
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Send ``body``; yield the 200 answer's chunks as they arrive."""
        ...


# --------------------------------------------------------------------------- translation


def _error_body(body: bytes) -> Any:
    """An error answer's body parsed as JSON, else as CBOR, else ``None``."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError, RecursionError, OverflowError):
        return None


def error_from_response(status: int, body: bytes) -> KinesisError:
    """The :class:`KinesisError` an error answer (JSON or CBOR) stands for."""
    code: str | None = None
    message = ""
    parsed = _error_body(body)
    if isinstance(parsed, dict):
        raw = parsed.get("__type") or parsed.get("code")
        if isinstance(raw, str) and raw:
            # "com.amazonaws.kinesis#Name" and "Name:http://..." both name "Name".
            code = raw.rpartition("#")[2].partition(":")[0]
        text = parsed.get("message", parsed.get("Message"))
        if isinstance(text, str):
            message = text
    if code is None:
        code = _STATUS_CODES.get(status, "InternalFailure" if status >= 500 else "HttpError")
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    return KinesisError.for_code(code, message, status)


def translate_exception(error: BaseException, context: str = "") -> KinesisError:
    """Map a lower-layer exception to the kpl error tree (KinesisErrors pass through)."""
    if isinstance(error, KinesisError):
        return error
    where = f" ({context})" if context else ""
    detail = str(error) or type(error).__name__
    # aiohttp's timeout errors are also ClientConnectionErrors: test for timeouts first.
    if isinstance(error, TimeoutError):
        return RequestTimeout(f"request timed out{where}: {detail}")
    if isinstance(error, aiohttp.ClientError | OSError):
        return NetworkError(f"network error{where}: {detail}")
    raise TypeError(f"not a transport error: {error!r}") from error


# --------------------------------------------------------------------------- endpoints


def resolve_region(region: str | None, endpoint_url: str | None) -> str:
    """The region to sign for: given, else ``AWS_REGION``/``AWS_DEFAULT_REGION``.

    A loopback endpoint defaults to ``us-east-1``; real AWS needs a region.
    """
    found = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    if endpoint_url is not None and is_loopback_url(endpoint_url):
        return _LOCAL_DEFAULT_REGION
    raise ValueError(
        "no region: pass region='us-east-1' (or set AWS_REGION), or an endpoint_url"
    )


def default_endpoint_url(region: str) -> str:
    """The public Kinesis endpoint of an AWS region."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://kinesis.{region}.{suffix}"


# --------------------------------------------------------------------------- aiohttp


class _Body(aiohttp.payload.Payload):
    """A request body that aiohttp writes in one go, like its own BytesPayload.

    BytesPayload warns (ResourceWarning) above 1 MiB that one write of a large body may
    hold up the event loop, and suggests a BytesIO, which aiohttp writes in 64 KiB chunks
    with a yield after each. A PutRecords body is at most ~14 MiB and that one write is a
    copy into the socket buffer; the chunked route cost about 9% of producer throughput
    (bench/producer_e2e.py). So this payload writes the bytes at once, without the warning.
    """

    _autoclose = True  # in memory: nothing to close

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__(body, content_type=content_type)
        self._size = len(body)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self._value)

    async def write(self, writer: Any) -> None:
        await writer.write(self._value)


class AioHttpTransport:
    """Kinesis over aiohttp: a keep-alive pool, SigV4-signed JSON 1.1 (or CBOR 1.1) requests.

    The session is opened on the first call (inside the running loop) and closed by
    :meth:`close`. Leaving out ``endpoint_url`` targets the region's AWS endpoint.

    Credentials never block the loop: static ones sign synchronously; any other
    provider (and botocore's chain, looked up on the first call) runs in a worker thread
    behind a :class:`kpl.auth.CredentialCache` (see :mod:`kpl.auth` for when it asks
    again). A missing chain raises :class:`kpl.auth.NoCredentialsError` from ``call()``.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        *,
        region: str | None = None,
        credentials: Credentials | CredentialProvider | None = None,
        max_connections: int = 24,
        connect_timeout: float = 6.0,
        request_timeout: float = 6.0,
        service: str = "kinesis",
        user_agent: str = "kpl/0.1 (python; asyncio)",
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if connect_timeout <= 0 or request_timeout <= 0:
            raise ValueError("connect_timeout and request_timeout must be positive")
        self.region = resolve_region(region, endpoint_url)
        self.endpoint_url = endpoint_url or default_endpoint_url(self.region)
        if not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must be http:// or https://, got {endpoint_url!r}")
        source = credential_source(credentials, self.endpoint_url)
        #: Set for providers that may block; None when credentials are static.
        self.credential_cache: CredentialCache | None = (
            source if isinstance(source, CredentialCache) else None
        )
        self._signer = SigV4Signer(
            None if isinstance(source, CredentialCache) else source, self.region, service
        )
        self._max_connections = max_connections
        self._request_timeout = request_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_connect=connect_timeout, connect=None
        )
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._stream_session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=self._max_connections, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            # The body is already JSON; aiohttp needs no cookie jar or auto-decompression.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        return self._session

    async def call(self, action: str, body: bytes, content_type: str = CONTENT_TYPE) -> bytes:
        """Send one signed request; see the module doc for what it raises."""
        cache = self.credential_cache
        creds = await self._call_credentials(action)
        # After the await: close() may have run meanwhile, and _open() checks that.
        session = self._session or self._open()
        headers = self._signed_headers(action, body, creds, content_type)
        try:
            async with session.post(
                self.endpoint_url, data=_Body(body, content_type), headers=headers
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise translate_exception(error, f"{action} to {self.endpoint_url}") from error
        if status != 200:
            refused = error_from_response(status, payload)
            stale = refused.error_code in STALE_CREDENTIAL_CODES
            if stale and cache is not None and creds is not None:
                cache.invalidate(creds)
            raise refused
        return payload

    async def _call_credentials(self, action: str) -> Credentials | None:
        """The credentials to sign ``action`` with (None: unsigned); refuses once closed."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        cache = self.credential_cache
        if cache is None:
            return None
        return cache.fresh() or await self._credentials(cache, action)

    def _signed_headers(
        self,
        action: str,
        body: bytes,
        creds: Credentials | None,
        content_type: str = CONTENT_TYPE,
    ) -> dict[str, str]:
        headers = {
            "Content-Type": content_type,
            "X-Amz-Target": f"{API_VERSION}.{action}",
        }
        headers.update(self._signer.sign("POST", self.endpoint_url, headers, body,
                                         credentials=creds))
        headers["User-Agent"] = self._user_agent
        return headers

    @contextlib.asynccontextmanager
    async def stream(
        self, action: str, body: bytes, *, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Send one signed request whose 200 answer is a stream (SubscribeToShard):
        yields the body's chunks as they arrive. An error answer raises as :meth:`call`
        does; so does a connection that fails or stays silent ``read_timeout`` seconds
        while the stream is read.

        Streams use a pool of their own with no connection limit: each holds its
        connection for as long as it lasts, and must not starve ordinary calls.
        """
        creds = await self._call_credentials(action)
        session = self._stream_session or self._open_streams()
        headers = self._signed_headers(action, body, creds)
        where = f"{action} to {self.endpoint_url}"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.sock_connect, sock_read=read_timeout
        )
        try:
            response = await session.post(
                self.endpoint_url, data=_Body(body, CONTENT_TYPE), headers=headers, timeout=timeout
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise translate_exception(error, where) from error
        try:
            if response.status != 200:
                try:
                    payload = await response.read()
                except (aiohttp.ClientError, OSError, TimeoutError) as error:
                    raise translate_exception(error, where) from error
                raise error_from_response(response.status, payload)

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.content.iter_any():
                        yield chunk
                except (aiohttp.ClientError, OSError, TimeoutError) as error:
                    raise translate_exception(error, where) from error

            yield chunks()
        finally:
            # Closed, not returned to the pool: a stream left early (a lost lease) must
            # end at once, and a finished one is not worth keeping.
            response.close()

    def _open_streams(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        self._stream_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        return self._stream_session

    async def _credentials(self, cache: CredentialCache, action: str) -> Credentials:
        """Wait for the shared fetch at most ``request_timeout``.

        aiohttp's timeout only starts with the request, so without this bound a slow
        provider (an unreachable metadata service) would hold the call, and the
        producer's flush(), past any record_ttl. Giving up is a NetworkError: nothing was
        sent, and a retry joins the same fetch, which keeps running for later calls.
        """
        scope = asyncio.timeout(self._request_timeout)
        try:
            async with scope:
                return await cache.get()
        except TimeoutError as error:
            if not scope.expired():
                raise  # the provider's own TimeoutError, not our bound
            raise NetworkError(
                f"credentials not available within request_timeout "
                f"({self._request_timeout:g}s) for {action} to {self.endpoint_url}; "
                "the fetch goes on for later calls"
            ) from error

    async def close(self) -> None:
        """Close the pools' connections."""
        self._closed = True
        for session in (self._session, self._stream_session):
            if session is not None:
                await session.close()
        self._session = self._stream_session = None

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        for name in ("_session", "_stream_session"):
            session = getattr(self, name, None)
            if session is not None and not session.closed:
                _warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=1)
                return

    def __repr__(self) -> str:
        return f"<AioHttpTransport {self.endpoint_url} region={self.region}>"


# --------------------------------------------------------------------------- mock


@dataclass(frozen=True, slots=True)
class MockRequest:
    """One call seen by a :class:`MockTransport`."""

    action: str
    body: bytes
    content_type: str = CONTENT_TYPE

    def json(self) -> Any:
        """The parsed body (from CBOR when it was sent as CBOR)."""
        if not self.body:
            return {}
        if self.content_type == CBOR_CONTENT_TYPE:
            return cbor2.loads(self.body)
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class MockResponse:
    """An answer with a status; non-200 goes through the same error translation."""

    status: int = 200
    body: bytes | Mapping[str, Any] = field(default=b"")

    def raw(self) -> bytes:
        """The body as bytes."""
        return self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)


MockResult = bytes | Mapping[str, Any] | MockResponse | None
MockHandler = Callable[[MockRequest], MockResult | Awaitable[MockResult]]


class MockTransport:
    """A transport that hands every request to ``handler`` (sync or async).

    The handler returns the 200 body (bytes, a dict to encode in the request's format,
    or None for an empty body) or a :class:`MockResponse` with another status, or
    raises: a KinesisError
    passes through; ``OSError`` / ``TimeoutError`` are translated like real ones.
    """

    def __init__(self, handler: MockHandler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []
        self.closed = False

    async def call(self, action: str, body: bytes, content_type: str = CONTENT_TYPE) -> bytes:
        """Record the request and answer it with the handler."""
        if self.closed:
            raise RuntimeError("the transport is closed")
        request = MockRequest(action, body, content_type)
        self.requests.append(request)
        try:
            result = self.handler(request)
            if inspect.isawaitable(result):
                result = await result
        except (OSError, TimeoutError) as error:
            raise translate_exception(error, f"{action} (mock)") from error
        if result is None:
            return b""
        if isinstance(result, bytes):
            return result
        if isinstance(result, MockResponse):
            if result.status != 200:
                raise error_from_response(result.status, result.raw())
            return result.raw()
        if content_type == CBOR_CONTENT_TYPE:
            return cbor2.dumps(result)
        return orjson.dumps(result)

    async def close(self) -> None:
        """Mark the transport closed."""
        self.closed = True
