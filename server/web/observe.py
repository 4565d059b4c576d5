"""The middleware that records and measures each API call (audit log, metrics).

It wraps the error middleware, so it sees every answer as sent, refusals included, and
reads what the handler noted on the request (``server.web.keys``): the action, the
parsed body, the answer or the error, the verified principal. A call answered by an event
stream (SubscribeToShard) is recorded and measured when accepted, before its first event,
as CloudTrail records it: its record has the request's parameters, no response elements
and never the records the stream carries. A request naming no action this server answers
(a non-POST, an unknown target, a body over the cap) is not an API call and is neither
recorded nor measured. A server with neither an audit log nor metrics does not install it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from kpl.protocol.sigv4 import parse_authorization
from server.core.actions import Action, EventCategory
from server.core.audit import CallRecord, cloudtrail_record
from server.core.errors import KinesisError
from server.web.audit import AuditLog
from server.web.keys import (
    ACCEPTED_KEY,
    ACTION_KEY,
    ANSWER_KEY,
    ERROR_KEY,
    PAYLOAD_KEY,
    PRINCIPAL_KEY,
    REQUEST_ID_KEY,
)

__all__ = ["CallObserver", "make_observer"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CallObserver(Protocol):
    """Something told about every API call once it is answered (the metrics)."""

    def observe_call(
        self,
        action: Action,
        request: Any,
        answer: Any,
        error: KinesisError | None,
        latency_seconds: float,
    ) -> None:
        """Count one call: its parsed body, its answer (``None`` on error), its error."""
        ...


def _access_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        auth = parse_authorization(header)
        return None if auth is None else auth.access_key
    credential = request.query.get("X-Amz-Credential")
    return credential.partition("/")[0] if credential else None


def make_observer(
    *,
    region: str,
    account_id: str,
    clock: Callable[[], float],
    audit: AuditLog | None = None,
    data_events: bool = True,
    metrics: CallObserver | None = None,
    iterator_stream: Callable[[str], str | None] | None = None,
) -> Middleware:
    """The middleware writing ``audit`` records and telling ``metrics`` of each call;
    ``iterator_stream`` names the stream a shard iterator reads (for GetRecords' record)."""

    @web.middleware
    async def observe(request: web.Request, handler: _Handler) -> web.StreamResponse:
        arrived = clock()
        started = time.perf_counter()
        observed = False

        def observe_call() -> None:
            nonlocal observed
            observed = True
            entry = request[ACTION_KEY]
            error = request.get(ERROR_KEY)
            payload = request.get(PAYLOAD_KEY)
            answer = request.get(ANSWER_KEY)
            if metrics is not None:
                metrics.observe_call(
                    entry, payload, None if error else answer, error,
                    time.perf_counter() - started,
                )
            if audit is None or not (
                data_events or entry.category is EventCategory.MANAGEMENT
            ):
                return
            principal = request.get(PRINCIPAL_KEY)
            token = payload.get("ShardIterator") if isinstance(payload, dict) else None
            stream_name = (
                iterator_stream(token)
                if iterator_stream is not None and isinstance(token, str)
                else None
            )
            record = CallRecord(
                action=entry,
                request_id=request[REQUEST_ID_KEY],
                event_id=str(uuid.uuid4()),
                time=arrived,
                region=region,
                account_id=account_id,
                source_ip=request.remote,
                user_agent=request.headers.get("User-Agent"),
                principal=principal,
                access_key_id=principal.access_key_id if principal else _access_key(request),
                request=payload,
                response=answer if isinstance(answer, dict) else None,
                error_code=None if error is None else error.error_code,
                error_message=None if error is None else error.message,
                stream_name=stream_name,
            )
            audit.write(cloudtrail_record(record))

        # An event stream's call is observed once accepted, before its events (the
        # handler calls this); one-shot answers once answered, below.
        request[ACCEPTED_KEY] = observe_call
        try:
            response = await handler(request)
            if observed or request.get(ACTION_KEY) is None:
                return response
            if request.get(ERROR_KEY) is None and response.status >= 400:
                return response  # a bare 413: the call was never read, so never made
            observe_call()
            return response
        finally:
            # The closure refers to the request that holds it: a cycle, which would keep
            # the request and its parsed body (tens of MB for a hostile one) until the
            # cyclic GC's next full collection.
            del request[ACCEPTED_KEY]

    return observe
