"""The transport: wire format, signing, error translation at one boundary; the mock."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import botocore.auth
import botocore.credentials
import orjson
import pytest
from aiohttp import web
from botocore.awsrequest import AWSRequest

from kpl.auth import Credentials
from kpl.errors import (
    InternalFailure,
    KinesisError,
    NetworkError,
    ProvisionedThroughputExceededException,
    RequestTimeout,
    ResourceNotFoundException,
    ServiceUnavailable,
    ValidationException,
)
from kpl.transport import (
    AioHttpTransport,
    MockRequest,
    MockResponse,
    MockTransport,
    Transport,
    default_endpoint_url,
    error_from_response,
    resolve_region,
    translate_exception,
)

CREDS = Credentials("AKIDTEST", "test-secret", "session-token")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a one-route aiohttp app on port 0; yields a function returning its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def verify_with_botocore(request: web.Request, body: bytes, url: str) -> None:
    """Recompute the signature of a received request with botocore; must match."""
    amz_date = request.headers["X-Amz-Date"]
    signed = request.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    headers = {k: v for k, v in request.headers.items() if k.lower() in signed.split(";")}
    headers.pop("Host", None)
    aws_request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    boto = botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(CREDS.access_key, CREDS.secret_key, CREDS.token),
        "kinesis",
        "eu-central-1",
    )
    from unittest import mock

    with mock.patch.object(
        botocore.auth,
        "get_current_datetime",
        return_value=datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ"),
    ):
        boto.add_auth(aws_request)
    assert aws_request.headers["Authorization"] == request.headers["Authorization"]


async def test_request_is_json11_signed_and_answer_returned(serve: Any) -> None:
    seen: dict[str, Any] = {}
    url_box: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen["headers"] = dict(request.headers)
        seen["body"] = body
        verify_with_botocore(request, body, url_box[0])
        return web.Response(body=b'{"ok":true}', content_type="application/x-amz-json-1.1")

    url = await serve(handler)
    url_box.append(url)
    transport = AioHttpTransport(url, region="eu-central-1", credentials=CREDS)
    try:
        answer = await transport.call("ListShards", b'{"StreamName":"s"}')
    finally:
        await transport.close()
    assert answer == b'{"ok":true}'
    assert seen["body"] == b'{"StreamName":"s"}'
    assert seen["headers"]["X-Amz-Target"] == "Kinesis_20131202.ListShards"
    assert seen["headers"]["Content-Type"] == "application/x-amz-json-1.1"
    assert seen["headers"]["X-Amz-Security-Token"] == "session-token"
    assert seen["headers"]["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDTEST/"
    )


async def test_connections_are_kept_alive_and_bounded(serve: Any) -> None:
    peers: set[Any] = set()
    gate = asyncio.Event()
    concurrent = 0
    peak = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal concurrent, peak
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        concurrent += 1
        peak = max(peak, concurrent)
        if peak >= 2:
            gate.set()
        await gate.wait()
        concurrent -= 1
        return web.Response(body=b"{}")

    url = await serve(handler)
    transport = AioHttpTransport(url, credentials=CREDS, max_connections=2)
    try:
        await asyncio.gather(*(transport.call("X", b"{}") for _ in range(10)))
        await asyncio.gather(*(transport.call("X", b"{}") for _ in range(10)))
    finally:
        await transport.close()
    assert peak == 2
    assert len(peers) == 2  # twenty calls over two reused connections


@pytest.mark.parametrize(
    ("status", "body", "error_type", "message"),
    [
        (400, b'{"__type":"ResourceNotFoundException","message":"Stream s not found."}',
         ResourceNotFoundException, "Stream s not found."),
        (400, b'{"__type":"com.amazonaws.kinesis.v20131202#ValidationException",'
              b'"Message":"bad"}', ValidationException, "bad"),
        (500, b'{"__type":"InternalFailure","message":"Internal service failure."}',
         InternalFailure, "Internal service failure."),
        (503, b"<html>busy</html>", ServiceUnavailable, "HTTP 503: <html>busy</html>"),
        (413, b"", ValidationException, "HTTP 413"),
    ],
)
async def test_error_answers_become_kinesis_errors(
    serve: Any, status: int, body: bytes, error_type: type[KinesisError], message: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body)

    url = await serve(handler)
    transport = AioHttpTransport(url, credentials=CREDS)
    try:
        with pytest.raises(error_type) as caught:
            await transport.call("PutRecords", b"{}")
    finally:
        await transport.close()
    assert caught.value.message == message
    assert caught.value.__cause__ is None  # a real answer: no lower-layer exception


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_connection_is_network_error() -> None:
    port = unused_port()
    transport = AioHttpTransport(f"http://127.0.0.1:{port}", credentials=CREDS)
    try:
        with pytest.raises(NetworkError) as caught:
            await transport.call("PutRecords", b"{}")
    finally:
        await transport.close()
    assert caught.value.retryable
    assert caught.value.message.startswith(
        f"network error (PutRecords to http://127.0.0.1:{port}): "
        f"Cannot connect to host 127.0.0.1:{port}"
    )
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def test_silent_server_is_request_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AioHttpTransport(
        f"http://127.0.0.1:{port}", credentials=CREDS, request_timeout=0.2
    )
    try:
        with pytest.raises(RequestTimeout):
            await transport.call("PutRecords", b"{}")
    finally:
        await transport.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_dropped_connection_is_network_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AioHttpTransport(f"http://127.0.0.1:{port}", credentials=CREDS)
    try:
        with pytest.raises(NetworkError):
            await transport.call("PutRecords", b"{}")
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_closed_transport_refuses_calls() -> None:
    transport = AioHttpTransport("http://127.0.0.1:1", credentials=CREDS)
    await transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        await transport.call("X", b"{}")


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        AioHttpTransport("http://127.0.0.1:1", max_connections=0)
    with pytest.raises(ValueError, match="positive"):
        AioHttpTransport("http://127.0.0.1:1", request_timeout=0)
    with pytest.raises(ValueError, match="http"):
        AioHttpTransport("ftp://127.0.0.1:1", region="us-east-1")


def test_region_and_endpoint_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert resolve_region(None, "http://127.0.0.1:4567") == "us-east-1"
    assert resolve_region("eu-west-1", None) == "eu-west-1"
    with pytest.raises(ValueError, match="region"):
        resolve_region(None, None)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert resolve_region(None, None) == "sa-east-1"
    assert default_endpoint_url("us-east-1") == "https://kinesis.us-east-1.amazonaws.com"
    assert default_endpoint_url("cn-north-1") == "https://kinesis.cn-north-1.amazonaws.com.cn"
    transport = AioHttpTransport(region="ap-south-1", credentials=CREDS)
    assert transport.endpoint_url == "https://kinesis.ap-south-1.amazonaws.com"


def test_translation_table() -> None:
    assert isinstance(translate_exception(TimeoutError()), RequestTimeout)
    assert isinstance(translate_exception(ConnectionResetError("reset")), NetworkError)
    original = ResourceNotFoundException("x")
    assert translate_exception(original) is original
    with pytest.raises(TypeError, match="not a transport error"):
        translate_exception(ValueError("nope"))
    unknown = error_from_response(502, b'{"__type":"SomethingNew","message":"m"}')
    assert type(unknown) is KinesisError
    assert unknown.error_code == "SomethingNew"
    assert unknown.is_retryable


async def test_mock_transport_answers_and_translates() -> None:
    calls = 0

    async def handler(request: MockRequest) -> Any:
        nonlocal calls
        calls += 1
        if request.action == "Fail":
            return MockResponse(400, {"__type": "ProvisionedThroughputExceededException"})
        if request.action == "Drop":
            raise ConnectionResetError("peer reset")
        if request.action == "Raw":
            return b"raw"
        return {"echo": request.json()}

    transport: Transport = MockTransport(handler)
    assert isinstance(transport, Transport)
    assert orjson.loads(await transport.call("Echo", b'{"a":1}')) == {"echo": {"a": 1}}
    assert await transport.call("Raw", b"") == b"raw"
    with pytest.raises(ProvisionedThroughputExceededException):
        await transport.call("Fail", b"{}")
    with pytest.raises(NetworkError, match="peer reset"):
        await transport.call("Drop", b"{}")
    assert calls == 4
    assert isinstance(transport, MockTransport)
    assert [r.action for r in transport.requests] == ["Echo", "Raw", "Fail", "Drop"]
    await transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        await transport.call("Echo", b"{}")


async def test_mock_transport_accepts_sync_handler_and_none() -> None:
    transport = MockTransport(lambda request: None)
    assert await transport.call("DeleteStream", b"{}") == b""
