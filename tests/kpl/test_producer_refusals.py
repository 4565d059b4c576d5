"""What the producer does with a refused or unreadable answer, through the real Producer
over the server's engine (virtual time): a rotating credential's refusal is retried, a
permanent auth refusal fails the records at once, a garbled 200 answer is retried as
MalformedResponse and never surfaces as a Python class name."""

from __future__ import annotations

import asyncio

import pytest

from kpl.config import ProducerConfig
from kpl.core.results import RecordResult
from kpl.errors import MalformedResponse, RecordFailed
from kpl.producer import Producer
from kpl.sender import parse_put_records
from kpl.transport import MockRequest, MockResponse
from tests.support import EngineKinesis, virtual_time

# No zero waits: on virtual time a retry without a wait would be a busy loop.
FAST = ProducerConfig(record_max_buffered_time=0.01, min_backoff=0.01, max_backoff=0.05,
                      shard_map_refresh_min_interval=0.05)


def refuse(code: str, message: str) -> MockResponse:
    return MockResponse(400, {"__type": code, "message": message})


async def put_and_settle(
    fake: EngineKinesis, count: int, config: ProducerConfig = FAST
) -> list[asyncio.Future[RecordResult]]:
    async with Producer("s", config=config, transport=fake.transport()) as producer:
        futures = [await producer.put(b"r%d" % i, partition_key=f"k{i}") for i in range(count)]
        await producer.flush()
    assert all(f.done() for f in futures)
    return futures


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize("code", ["ExpiredTokenException", "ExpiredToken", "RequestExpired"])
@virtual_time
async def test_a_rotating_credential_refusal_is_retried(code: str) -> None:
    def first_call_refused(request: MockRequest, call: int) -> MockResponse | None:
        return refuse(code, "The security token included in the request is expired") \
            if call == 0 else None

    fake = EngineKinesis(request_fault=first_call_refused)
    futures = await put_and_settle(fake, 10)
    results = [f.result() for f in futures]  # raises if any record was failed
    assert len(fake.delivered()) == 10
    for result in results:
        assert [a.error_code for a in result.attempts] == [code, None]


@pytest.mark.parametrize(
    "code",
    ["AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
     "InvalidSignatureException"],
)
@virtual_time
async def test_a_permanent_auth_refusal_fails_at_once(code: str) -> None:
    fake = EngineKinesis(request_fault=lambda request, call: refuse(code, "no"))
    futures = await put_and_settle(fake, 3)
    for future in futures:
        error = future.exception()
        assert isinstance(error, RecordFailed)
        assert error.code == code
        assert len(error.attempts) == 1
    assert fake.put_calls == 1


# --------------------------------------------------------------------------- bad answers

GARBLED = [
    pytest.param(b"<html>not json</html>", id="not-json"),
    pytest.param(b"", id="empty"),
    pytest.param(b"[1,2]", id="json-list"),
    pytest.param(b'"text"', id="json-string"),
    pytest.param(b"null", id="json-null"),
    pytest.param(b'{"Records": [], "FailedRecordCount": 0}', id="object-wrong-entries"),
]


@pytest.mark.parametrize("body", GARBLED)
@virtual_time
async def test_a_garbled_answer_is_retried_as_malformed_response(body: bytes) -> None:
    def first_call_garbled(request: MockRequest, call: int) -> MockResponse | None:
        return MockResponse(200, body) if call == 0 else None

    fake = EngineKinesis(request_fault=first_call_garbled)
    futures = await put_and_settle(fake, 5)
    for future in futures:
        attempts = future.result().attempts
        assert [a.error_code for a in attempts] == ["MalformedResponse", None]
    assert len(fake.delivered()) == 5


@pytest.mark.parametrize("body", GARBLED)
@virtual_time
async def test_records_never_carry_a_python_class_name_as_code(body: bytes) -> None:
    fake = EngineKinesis(request_fault=lambda request, call: MockResponse(200, body))
    config = ProducerConfig(record_ttl=0.2, record_max_buffered_time=0.01, min_backoff=0.01,
                            max_backoff=0.01)
    futures = await put_and_settle(fake, 3, config)
    for future in futures:
        error = future.exception()
        assert isinstance(error, RecordFailed)
        assert error.code == "Expired"  # retried until the TTL, not failed at once
        assert len(error.attempts) > 1
        assert {a.error_code for a in error.attempts} == {"MalformedResponse"}


def test_parse_put_records_names_what_it_got() -> None:
    assert parse_put_records(b'{"Records": []}') == {"Records": []}
    with pytest.raises(MalformedResponse, match=r"not JSON \(21 bytes: '<html>not json</html>'\)"):
        parse_put_records(b"<html>not json</html>")
    with pytest.raises(MalformedResponse, match="a JSON list, not an object") as caught:
        parse_put_records(b"[1,2]")
    assert caught.value.error_code == "MalformedResponse"
    assert caught.value.http_status == 500
    assert caught.value.is_retryable
