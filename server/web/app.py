"""The aiohttp application: one POST handler dispatching from the action registry, one
error middleware.

Request flow (cheapest refusals first, as the service answers them):

1. a body over ``max_request_bytes`` -> bare 413, decided from ``Content-Length`` without
   reading it (or, for chunked bodies, as soon as the running total passes the cap);
2. the connection rules of ``server.web.wire``, in the service's order: a CORS pre-flight
   (answered by the middleware), a method other than POST, an empty body, the content
   type, a body that does not parse to an object, an ``X-Amz-Target`` naming no action the
   engine answers (``server.core.actions``: ``UnknownOperationException``, whether the
   service models the action or not);
   a ``Content-Encoding`` (gzip, br ...) is a ``SerializationException`` before the
   body is read (the service parses bodies as sent; the server never inflates one);
3. the shape of the authentication (``check_authorization``:
   ``MissingAuthenticationTokenException`` / ``IncompleteSignatureException`` /
   ``InvalidSignatureException``); with ``--iam`` the signature is then verified
   (``server.web.auth.Verifier``: ``UnrecognizedClientException``,
   ``InvalidSignatureException``);
4. the body was parsed as JSON 1.1, or CBOR 1.1 when the ``Content-Type`` says
   ``application/x-amz-cbor-1.1`` (the Java SDKs' default), in which case the answer,
   errors included, is CBOR too (``codec``); a large body was parsed, and validated, on a
   worker thread (``server.web.bodies``), one of far more values than any request holds
   first in a child process (``server.web.judge``; not with an audit log or ``--iam``,
   which read the whole body), its errors raised here or in step 6 as if in turn; with
   ``--iam`` the caller's policies are asked (``server.web.access``):
   ``AccessDeniedException`` for the whole request;
5. fault injection may delay or fail the request here (``dispatch``);
6. the engine runs the action with ``now`` and a request context (the request id, the
   peer address, the ``User-Agent``); for an action the registry marks ``durable``, the
   storage's group commit is awaited before answering;
7. a :class:`~server.core.calls.Reply` is written as one body; an
   :class:`~server.core.calls.EventStream` (SubscribeToShard) is written as an
   ``application/vnd.amazon.eventstream`` response by ``server.web.subscriptions``, whose
   per-shard signals the engine's writes mark and this layer flushes once they are durable.

The middleware renders every :class:`KinesisError` as ``{"__type","message"}`` with its
status, turns anything unexpected into a 500 ``InternalFailure``, and chooses the
``x-amzn-RequestId`` before the handler runs, so the engine's request context carries the
same id; ``server.web.wire.stamp`` puts it, ``x-amz-id-2`` and the CORS headers on every
response as it is prepared (event streams included). Around it, when the server keeps an
audit log or metrics, ``server.web.observe``'s middleware records and measures each API
call as answered; ``GET /metrics`` serves the metrics, every other request goes to the one
handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from server.config import ServerConfig
from server.core.actions import ACTIONS, BY_TARGET, Action
from server.core.calls import EventStream, Reply, RequestContext
from server.core.engine import Engine
from server.core.errors import (
    InternalFailure,
    KinesisError,
    SerializationException,
    UnknownOperationException,
    for_code,
)
from server.core.hooks import FaultInjector
from server.core.principals import Principal
from server.web.access import AccessControl
from server.web.audit import AuditLog
from server.web.auth import check_authorization
from server.web.bodies import Decoder, read_body
from server.web.codec import (
    CBOR_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    encode_cbor_error,
    encode_cbor_response,
    encode_error,
    encode_response,
)
from server.web.judge import Judge
from server.web.keys import (
    ACCEPTED_KEY,
    ACTION_KEY,
    ANSWER_KEY,
    ERROR_KEY,
    METRICS_KEY,
    PAYLOAD_KEY,
    PRINCIPAL_KEY,
    REQUEST_ID_KEY,
)
from server.web.limits import SMALL_ANSWER, SMALL_BODY, ByteBudget, write_guarded
from server.web.metrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from server.web.metrics import ServerMetrics
from server.web.observe import make_observer
from server.web.readahead import read_ahead
from server.web.subscriptions import ShardSignals, write_event_stream
from server.web.wire import (
    ACCESS_DENIED_XML,
    AMZ_JSON_1_0,
    CONTENT_TYPES,
    UNKNOWN_OPERATION_XML,
    coral_response,
    is_preflight,
    media_type,
    preflight,
    splits_into_operation,
    stamp,
    xml_response,
)

__all__ = [
    "ENGINE_KEY",
    "METRICS_KEY",
    "PRINCIPAL_KEY",
    "REQUEST_ID_KEY",
    "SIGNALS_KEY",
    "STOPPING_KEY",
    "TARGETS",
    "make_app",
]

log = logging.getLogger("server.web")

#: ``X-Amz-Target`` -> action name, for every action the service models (the engine
#: answers those it implements; the rest are ``UnknownOperationException``).
TARGETS: dict[str, str] = {action.target: action.name for action in ACTIONS.values()}

ENGINE_KEY = web.AppKey("engine", Engine)
#: Set by ``StreamServer.stop`` so injected latency never holds up a shutdown.
STOPPING_KEY = web.AppKey("stopping", asyncio.Event)
#: The per-shard wake-up signals of the SubscribeToShard streams being written.
SIGNALS_KEY = web.AppKey("signals", ShardSignals)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: An error message is cut to this many characters: it may quote what a client sent.
_MAX_MESSAGE_CHARS = 8192


def _error_response(error: KinesisError, cbor: bool) -> web.Response:
    message = error.message
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 3] + "..."
    # A quoted header that was not UTF-8 arrives with surrogate escapes: shown escaped.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if cbor:
        return web.Response(
            status=error.status,
            body=encode_cbor_error(error.code, message),
            content_type=CBOR_CONTENT_TYPE,
        )
    return web.Response(
        status=error.status,
        body=encode_error(error.code, message),
        content_type=JSON_CONTENT_TYPE,
    )


def _wants_cbor(request: web.Request) -> bool:
    return media_type(request.headers.get("Content-Type")) == CBOR_CONTENT_TYPE


def _empty_body(request: web.Request, entry: Action | None, *, cbor: bool) -> web.Response:
    """An empty body: a serialization error for a known action, else an unknown one."""
    if entry is None:
        return _error_response(UnknownOperationException(), cbor)
    error = SerializationException()
    request[ERROR_KEY] = error
    return _error_response(error, cbor)


def _json_1_0_answer(body: bytes | bytearray) -> web.Response:
    """What an ``application/json`` request gets: no action runs for it."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict | list):
        return coral_response(SerializationException.code, 400)
    return coral_response(UnknownOperationException.code, 404)


async def _pause(seconds: float, stopping: asyncio.Event) -> None:
    """Sleep injected latency, cut short once the server is stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


@web.middleware
async def error_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Render errors as the service does and give every response a request id."""
    request_id = str(uuid.uuid4())
    request[REQUEST_ID_KEY] = request_id
    if is_preflight(request):
        return preflight(request)
    try:
        response = await handler(request)
    except KinesisError as error:
        # Without its traceback: its frames hold the request's body, which would then live
        # as long as the request does (until the cyclic GC, for a request in a cycle).
        request[ERROR_KEY] = error.with_traceback(None)
        response = _error_response(error, _wants_cbor(request))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("internal failure handling %s", request.headers.get("X-Amz-Target"))
        failure = InternalFailure()
        request[ERROR_KEY] = failure
        response = _error_response(failure, _wants_cbor(request))
    return response


def _iterator_stream(engine: Engine, clock: Callable[[], float]) -> Callable[[str], str | None]:
    """Names the stream a shard iterator reads (``None`` for one the engine refuses)."""

    def stream_of(token: str) -> str | None:
        try:
            return engine.iterators.decode(token, clock()).stream_name
        except KinesisError:
            return None

    return stream_of


def make_app(
    engine: Engine,
    config: ServerConfig,
    clock: Callable[[], float],
    *,
    faults: FaultInjector | None = None,
    access: AccessControl | None = None,
    audit: AuditLog | None = None,
    metrics: ServerMetrics | None = None,
) -> web.Application:
    """The aiohttp application serving ``engine``; ``clock`` gives ``now`` (epoch seconds).

    ``access`` verifies signatures and enforces policies (``--iam``); ``None``: any
    SigV4-shaped credentials are accepted and everything is allowed. ``audit`` gets one
    CloudTrail record per API call (data events only with ``config.audit_data_events``)
    and ``metrics`` is told of each call (``server.web.observe``) and served on
    ``GET /metrics``.
    """
    cap = config.max_request_bytes
    body_timeout = config.body_timeout_seconds
    write_timeout = config.write_timeout_seconds
    answers = ByteBudget(config.max_answer_bytes)
    bodies = ByteBudget(config.max_body_bytes)
    require_auth = config.require_auth
    storage = engine.storage
    handle = engine.handle
    implemented = engine.actions
    stopping = asyncio.Event()
    # The judge's stand-in body serves the type check and the metrics; the audit log
    # and access policies read the whole body, so with them every body is decoded here.
    decoder = Decoder(engine, Judge() if audit is None and access is None else None)
    signals = ShardSignals()
    engine.streams.on_shard_change = signals.mark

    async def dispatch(request: web.Request) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > cap:
            return web.Response(status=413)
        if request.method != "POST":
            return xml_response(ACCESS_DENIED_XML, 403)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding != "identity":
            # The service takes no compressed request bodies: it parses the bytes as sent,
            # which never parse. Refused before reading, so nothing is ever inflated.
            raise SerializationException()
        size = cap if length is None else length
        if size <= SMALL_BODY:
            return await read_and_answer(request)
        await bodies.reserve(size)  # waiting, the body stays unread in the socket
        try:
            return await read_and_answer(request)
        finally:
            bodies.release(size)

    async def read_and_answer(request: web.Request) -> web.StreamResponse:
        """The request read, decoded and answered (its body within the budget)."""
        content_type = media_type(request.headers.get("Content-Type"))
        try:
            async with asyncio.timeout(body_timeout):
                body = await read_body(
                    request, cap, count_json=content_type == JSON_CONTENT_TYPE
                )
        except TimeoutError:
            log.warning("closing the connection of %s: its body did not arrive", request.remote)
            response = web.Response(status=408, headers={"Connection": "close"})
            await response.prepare(request)
            await response.write_eof()
            # Closed now: aiohttp would otherwise linger reading the rest of the body.
            request.protocol.force_close()
            return response
        if body is None:
            return web.Response(status=413)
        target = request.headers.get("X-Amz-Target", "")
        entry = BY_TARGET.get(target)
        if entry is not None:
            if entry.name in implemented:
                # A call to a known action from here on: refusals below are audited.
                request[ACTION_KEY] = entry
            else:
                entry = None
        if not body.size:
            return _empty_body(request, entry, cbor=content_type != JSON_CONTENT_TYPE)
        if content_type not in CONTENT_TYPES:
            if not splits_into_operation(target):
                return xml_response(ACCESS_DENIED_XML, 403)
            return xml_response(UNKNOWN_OPERATION_XML, 404)
        if content_type == AMZ_JSON_1_0:
            return _json_1_0_answer(body.data)
        cbor = content_type == CBOR_CONTENT_TYPE
        decoded = await decoder.decode(body, cbor, None if entry is None else entry.name)
        payload = decoded.payload
        if not isinstance(payload, dict | list):  # a list is the type checks' to refuse
            raise SerializationException()
        if entry is None:
            raise UnknownOperationException()
        action = entry.name
        if require_auth:
            check_authorization(request.headers, request.query)
        principal: Principal | None = None
        if access is not None:
            now = clock()
            principal = access.verifier.verify(
                request.method, request.raw_path, request.headers, request.headers.items(),
                bytes(body.data), now,
            )
            request[PRINCIPAL_KEY] = principal
        request[PAYLOAD_KEY] = payload
        if access is not None:
            assert principal is not None
            access.authorize(principal, entry, payload, now)
        if faults is not None:  # whole-request faults and added latency
            fault = faults.request_fault(action, engine.rng)
            if fault is not None:
                if fault.delay_seconds > 0:
                    await _pause(fault.delay_seconds, stopping)
                if fault.error_code is not None:
                    raise for_code(fault.error_code)(
                        "Internal service failure."
                        if fault.error_code == InternalFailure.code
                        else fault.error_code
                    )
        context = RequestContext(
            request_id=request[REQUEST_ID_KEY],
            principal=None if principal is None else principal.arn,
            source_address=request.remote,
            user_agent=request.headers.get("User-Agent"),
        )
        checked = decoded.checked
        if isinstance(checked, KinesisError):
            raise checked  # validated ahead: refused here, where the engine would refuse it
        if action == "GetRecords":
            return await answer_records(request, payload, context)
        result = handle(action, payload if checked is None else checked, clock(),
                        context=context)
        if entry.durable:
            await storage.wait_durable()
        signals.flush()  # subscribers see what is durable now
        if type(result) is not Reply:
            assert isinstance(result, EventStream)
            accepted = request.get(ACCEPTED_KEY)
            if accepted is not None:  # the call is made now; its events follow
                accepted()
            return await write_event_stream(
                request, result, signals, clock, request_id=context.request_id, cbor=cbor
            )
        answer = result.body
        request[ANSWER_KEY] = answer
        if cbor:
            return web.Response(
                body=b"" if answer is None else encode_cbor_response(answer),
                content_type=CBOR_CONTENT_TYPE,
            )
        if answer is None:
            return web.Response(body=b"", content_type=JSON_CONTENT_TYPE)
        return web.Response(body=encode_response(answer), content_type=JSON_CONTENT_TYPE)

    def records_answer(
        request: web.Request, payload: Any, context: RequestContext
    ) -> tuple[bytes, str]:
        result = handle("GetRecords", payload, clock(), context=context)
        signals.flush()
        assert type(result) is Reply
        assert result.body is not None
        request[ANSWER_KEY] = result.body
        if _wants_cbor(request):
            return encode_cbor_response(result.body), CBOR_CONTENT_TYPE
        return encode_response(result.body), JSON_CONTENT_TYPE

    async def answer_records(
        request: web.Request, payload: Any, context: RequestContext
    ) -> web.StreamResponse:
        """GetRecords: a small answer at once; a large one within the answer budget."""
        await read_ahead(engine, payload, clock())  # the storage reads off the loop, first
        body, content_type = records_answer(request, payload, context)
        if len(body) <= SMALL_ANSWER:
            return web.Response(body=body, content_type=content_type)
        size = len(body)
        if not answers.try_reserve(size):
            # No room: wait holding nothing, then answer afresh from the same iterator
            # (the records it reads are the same, or more if more became durable).
            del body
            request[ANSWER_KEY] = None
            await answers.reserve(size)
            try:
                await read_ahead(engine, payload, clock())
                body, content_type = records_answer(request, payload, context)
            except BaseException:
                answers.release(size)
                raise
        try:
            return await write_guarded(request, body, content_type, write_timeout)
        finally:
            answers.release(size)

    middlewares: list[Middleware] = [error_middleware]
    if audit is not None or metrics is not None:
        middlewares.insert(0, make_observer(
            region=config.region, account_id=config.account_id, clock=clock, audit=audit,
            data_events=config.audit_data_events, metrics=metrics,
            iterator_stream=_iterator_stream(engine, clock),
        ))
    app = web.Application(middlewares=middlewares, client_max_size=cap + 1)
    app[ENGINE_KEY] = engine
    app[STOPPING_KEY] = stopping
    app[SIGNALS_KEY] = signals
    app.on_response_prepare.append(stamp)

    async def end_streams(app: web.Application) -> None:
        signals.stop()

    async def end_decoder(app: web.Application) -> None:
        await decoder.close()

    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(end_decoder)
    if metrics is not None:
        app[METRICS_KEY] = metrics
        exposition = metrics.exposition

        async def serve_metrics(request: web.Request) -> web.Response:
            return web.Response(
                body=exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE}
            )

        app.router.add_get("/metrics", serve_metrics, allow_head=False)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
