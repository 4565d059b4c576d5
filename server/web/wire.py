"""The connection rules: how the service answers a request before any action runs.

In the service's order (after a body over the size cap, refused unread with a bare 413):

1. every response carries ``x-amzn-RequestId`` (a UUID) and ``x-amz-id-2`` (base64 of 64
   to 80 random bytes), except a CORS pre-flight, which has no ``x-amz-id-2``;
2. CORS: a request with an ``Origin`` is allowed from anywhere; ``OPTIONS`` with an
   ``Origin`` is a pre-flight answered 200 with an empty body, echoing the requested
   headers and method (:func:`preflight`); other answers to an ``Origin`` expose the
   service's headers (:func:`stamp`, run as every response is prepared);
3. a method other than POST: 403 with an XML ``AccessDeniedException``;
4. an empty body: ``SerializationException`` for a known action, else
   ``UnknownOperationException``, as JSON only with the JSON 1.1 content type and as CBOR
   otherwise (whatever the content type was);
5. a content type other than JSON 1.1, CBOR 1.1 and ``application/json``: the XML
   ``AccessDeniedException`` when the target does not split into service and operation,
   else a 404 ``<UnknownOperationException/>``;
6. a body that does not parse, or parses to a scalar: ``SerializationException``. A
   request in ``application/json`` (the AWS JSON 1.0 envelope) never reaches an action:
   it is answered in that envelope (:func:`coral_response`), 400 when it does not parse
   and 404 (unknown operation) when it does;
7. an unknown service or operation: ``UnknownOperationException``;
8. the shape of the authentication (``server.web.auth.check_authorization``), then type
   checks, constraint validation and the action.
"""

from __future__ import annotations

import secrets
from base64 import b64encode

import orjson
from aiohttp import web

from server.web.keys import REQUEST_ID_KEY

__all__ = [
    "ACCESS_DENIED_XML",
    "AMZ_JSON_1_0",
    "CONTENT_TYPES",
    "EXPOSED_HEADERS",
    "UNKNOWN_OPERATION_XML",
    "coral_response",
    "id_2",
    "is_preflight",
    "media_type",
    "preflight",
    "splits_into_operation",
    "stamp",
    "xml_response",
]

#: The AWS JSON 1.0 content type, whose requests the service answers in its envelope.
AMZ_JSON_1_0 = "application/json"
#: The content types a request may have (JSON 1.1, CBOR 1.1, JSON 1.0).
CONTENT_TYPES = frozenset(
    {"application/x-amz-json-1.1", "application/x-amz-cbor-1.1", AMZ_JSON_1_0}
)
#: What a response to a request with an ``Origin`` lets the page read.
EXPOSED_HEADERS = (
    "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"
)
ACCESS_DENIED_XML = (
    b"<AccessDeniedException>\n"
    b"  <Message>Unable to determine service/operation name to be authorized</Message>\n"
    b"</AccessDeniedException>\n"
)
UNKNOWN_OPERATION_XML = b"<UnknownOperationException/>\n"
_PREFLIGHT_MAX_AGE = "172800"


def id_2() -> str:
    """A fresh ``x-amz-id-2``: base64 of 64 to 80 random bytes."""
    return b64encode(secrets.token_bytes(64 + secrets.randbelow(17))).decode("ascii")


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, parameters cut off (case kept)."""
    return (content_type or "").split(";", 1)[0].strip()


def splits_into_operation(target: str) -> bool:
    """Whether an ``X-Amz-Target`` names both a service and an operation."""
    service, _, rest = target.partition(".")
    return bool(service) and bool(rest.partition(".")[0])


def is_preflight(request: web.BaseRequest) -> bool:
    """An ``OPTIONS`` request with an ``Origin``: a CORS pre-flight."""
    return request.method == "OPTIONS" and "Origin" in request.headers


def preflight(request: web.BaseRequest) -> web.Response:
    """The answer to a CORS pre-flight: 200, empty, allowing what it asks for."""
    headers = {"Access-Control-Max-Age": _PREFLIGHT_MAX_AGE}
    asked_headers = request.headers.get("Access-Control-Request-Headers")
    if asked_headers:
        headers["Access-Control-Allow-Headers"] = asked_headers
    asked_method = request.headers.get("Access-Control-Request-Method")
    if asked_method:
        headers["Access-Control-Allow-Methods"] = asked_method
    return web.Response(status=200, body=b"", headers=headers)


def xml_response(body: bytes, status: int) -> web.Response:
    """An answer in the service's XML error form (``ACCESS_DENIED_XML`` and the like)."""
    return web.Response(status=status, body=body)


def coral_response(code: str, status: int) -> web.Response:
    """An answer to an ``application/json`` request: the error in the JSON 1.0 envelope."""
    body = orjson.dumps(
        {"Output": {"__type": f"com.amazon.coral.service#{code}"}, "Version": "1.0"}
    )
    return web.Response(status=status, body=body, content_type=AMZ_JSON_1_0)


async def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """Add the identifying and CORS headers as any response is prepared (event streams too).

    The request id is the one the error middleware chose, if it ran; a pre-flight gets no
    ``x-amz-id-2`` and exposes nothing.
    """
    headers = response.headers
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        headers["x-amzn-RequestId"] = request_id
    origin = "Origin" in request.headers
    if origin:
        headers["Access-Control-Allow-Origin"] = "*"
    if is_preflight(request):
        return
    headers["x-amz-id-2"] = id_2()
    if origin:
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
