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
3. the shape of the authentication (``check_authorization``:
   ``MissingAuthenticationTokenException`` / ``IncompleteSignatureException`` /
   ``InvalidSignatureException``); with ``--iam`` the signature is then verified
   (``server.web.auth.Verifier``: ``UnrecognizedClientException``,
   ``InvalidSignatureException``);
4. the body was parsed as JSON 1.1, or CBOR 1.1 when the ``Content-Type`` says
   ``application/x-amz-cbor-1.1`` (the Java SDKs' default), in which case the answer,
   errors included, is CBOR too (``codec``); with ``--iam`` the caller's policies are
   asked (``server.web.access``): ``AccessDeniedException`` for the whole request;
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
from server.web.codec import (
    CBOR_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    decode_cbor_request,
    decode_request,
    encode_cbor_error,
    encode_cbor_response,
    encode_error,
    encode_response,
)
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


def _error_response(error: KinesisError, cbor: bool) -> web.Response:
    if cbor:
        return web.Response(
            status=error.status,
            body=encode_cbor_error(error.code, error.message),
            content_type=CBOR_CONTENT_TYPE,
        )
    return web.Response(
        status=error.status,
        body=encode_error(error.code, error.message),
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


def _json_1_0_answer(body: bytes) -> web.Response:
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
        request[ERROR_KEY] = error
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
    require_auth = config.require_auth
    storage = engine.storage
    handle = engine.handle
    implemented = engine.actions
    stopping = asyncio.Event()
    signals = ShardSignals()
    engine.streams.on_shard_change = signals.mark

    async def read_body(request: web.Request) -> bytes | None:
        """The body, or ``None`` once it is known to exceed the cap (never read whole)."""
        length = request.content_length
        if length is not None:
            if length > cap:
                return None
            return await request.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > cap:
            return web.Response(status=413)
        if request.method != "POST":
            return xml_response(ACCESS_DENIED_XML, 403)
        body = await read_body(request)
        if body is None:
            return web.Response(status=413)
        content_type = media_type(request.headers.get("Content-Type"))
        target = request.headers.get("X-Amz-Target", "")
        entry = BY_TARGET.get(target)
        if entry is not None:
            if entry.name in implemented:
                # A call to a known action from here on: refusals below are audited.
                request[ACTION_KEY] = entry
            else:
                entry = None
        if not body:
            return _empty_body(request, entry, cbor=content_type != JSON_CONTENT_TYPE)
        if content_type not in CONTENT_TYPES:
            if not splits_into_operation(target):
                return xml_response(ACCESS_DENIED_XML, 403)
            return xml_response(UNKNOWN_OPERATION_XML, 404)
        if content_type == AMZ_JSON_1_0:
            return _json_1_0_answer(body)
        cbor = content_type == CBOR_CONTENT_TYPE
        payload = decode_cbor_request(body) if cbor else decode_request(body)
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
                body, now,
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
        if action == "GetRecords":  # the storage reads the disk off the loop, first
            await read_ahead(engine, payload, clock())
        result = handle(action, payload, clock(), context=context)
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

    app.on_shutdown.append(end_streams)
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
