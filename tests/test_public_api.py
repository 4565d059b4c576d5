"""Guards the public surface of ``kpl``: what is exported, that each name does what its
docstring's first line says, and the exact signatures users write against (a change here
is a change to users' code)."""

from __future__ import annotations

import asyncio
import base64
import inspect
from typing import Any

import pytest

import kpl
import kpl.errors
from kpl.protocol.aggregation import SubRecord, encode
from kpl.transport import MockRequest
from tests.support import EngineKinesis, virtual_time

EXPECTED = {
    "AioHttpTransport", "Attempt", "BatchResult", "BufferFull", "Credentials",
    "InvalidPartitionKey",
    "KinesisClient", "KinesisError", "MockTransport", "NetworkError", "NoCredentialsError",
    "Producer", "ProducerClosed", "ProducerConfig", "ProvisionedThroughputExceededException",
    "RecordExpired", "RecordFailed", "RecordResult", "RecordTooLarge", "RequestTimeout",
    "ResourceNotFoundException", "Transport", "UserRecord", "ValidationException",
    "deaggregate", "deaggregate_records", "errors", "run",
    "Batch", "Consumer", "ConsumerConfig", "ConsumerError", "LeaseLost",
    "ConsumerHooks", "DuplicateWorkerId",
}


def test_all_is_sorted_and_exact() -> None:
    assert kpl.__all__ == sorted(kpl.__all__)
    assert set(kpl.__all__) == EXPECTED


def test_public_names_have_docstrings() -> None:
    for name in kpl.__all__:
        member = getattr(kpl, name)
        assert inspect.getdoc(member), f"kpl.{name} has no docstring"


def test_every_kinesis_error_is_reachable_through_kpl_errors() -> None:
    for cls in kpl.KinesisError.registered().values():
        assert getattr(kpl.errors, cls.__name__) is cls
        assert cls.__name__ in kpl.errors.__all__


def _signature(obj: object) -> str:
    return str(inspect.signature(obj))  # type: ignore[arg-type]


def test_producer_signatures() -> None:
    assert _signature(kpl.Producer) == (
        "(stream_name: 'str', endpoint_url: 'str | None' = None, region: 'str | None' = None, "
        "config: 'ProducerConfig | None' = None, *, "
        "credentials: 'Credentials | CredentialProvider | None' = None, "
        "transport: 'Transport | None' = None, stream_arn: 'str | None' = None, "
        "rng: 'random.Random | None' = None) -> 'None'"
    )
    assert _signature(kpl.Producer.put) == (
        "(self, data: 'bytes', partition_key: 'str', explicit_hash_key: 'str | None' = None)"
        " -> 'asyncio.Future[RecordResult]'"
    )
    assert _signature(kpl.Producer.put_nowait) == _signature(kpl.Producer.put)
    for name in ("flush", "close", "__aenter__", "__aexit__", "metrics", "start"):
        assert callable(getattr(kpl.Producer, name))
    assert inspect.iscoroutinefunction(kpl.Producer.put)
    assert not inspect.iscoroutinefunction(kpl.Producer.put_nowait)
    assert inspect.iscoroutinefunction(kpl.Producer.flush)
    assert inspect.iscoroutinefunction(kpl.Producer.close)


def test_result_and_failure_shapes() -> None:
    # A named tuple (built on the hot path); its field names and order are the API.
    assert kpl.RecordResult._fields == (
        "shard_id", "sequence_number", "sub_sequence_number", "attempts")
    attempt_fields = list(kpl.Attempt.__dataclass_fields__)
    assert attempt_fields == ["started", "ended", "success", "error_code", "error_message"]
    failed = kpl.RecordFailed("Expired", "too old", ())
    assert (failed.code, failed.message, failed.attempts) == ("Expired", "too old", ())


def test_client_and_transport_signatures() -> None:
    assert _signature(kpl.KinesisClient.call) == (
        "(self, action: 'str', payload: 'Mapping[str, Any] | None' = None) -> 'dict[str, Any]'"
    )
    assert _signature(kpl.Transport.call) == (
        "(self, action: 'str', body: 'bytes', content_type: 'str' = 'application/x-amz-json-1.1')"
        " -> 'bytes'"
    )
    for name in ("create_stream", "wait_for_active", "describe_stream_summary", "list_shards",
                 "shard_ranges", "delete_stream", "put_record", "get_shard_iterator",
                 "get_records", "split_shard", "merge_shards", "update_shard_count"):
        assert inspect.iscoroutinefunction(getattr(kpl.KinesisClient, name)), name


# --------------------------------------------------------------------------- behaviour
# One check per exported name of what its docstring says it is or does.


@virtual_time
async def test_a_producer_puts_records_and_resolves_their_futures() -> None:
    stream = EngineKinesis()
    config = kpl.ProducerConfig(record_max_buffered_time=0.01, max_buffered_records=1)
    async with kpl.Producer("s", config=config, transport=stream.transport()) as producer:
        result = await (await producer.put(b"data", partition_key="k"))
        assert isinstance(result, kpl.RecordResult)
        assert result.shard_id.startswith("shardId-")
        assert [a.success for a in result.attempts] == [True]
        assert isinstance(result.attempts[0], kpl.Attempt)
        with pytest.raises(kpl.InvalidPartitionKey):
            await producer.put(b"x", partition_key="")
        with pytest.raises(kpl.RecordTooLarge):
            await producer.put(b"x" * (config.max_record_size + 1), partition_key="k")
        producer.put_nowait(b"fills the one-record budget", partition_key="k")
        with pytest.raises(kpl.BufferFull):
            producer.put_nowait(b"one too many", partition_key="k")
    with pytest.raises(kpl.ProducerClosed):
        await producer.put(b"late", partition_key="k")
    assert [r.data for r in stream.delivered()] == [b"data", b"fills the one-record budget"]


def test_producer_config_has_the_kpl_defaults() -> None:
    config = kpl.ProducerConfig()
    assert (config.record_max_buffered_time, config.record_ttl, config.aggregation_enabled) == (
        0.1, 30.0, True)


@virtual_time
async def test_a_mock_transport_answers_with_its_handler_and_is_a_transport() -> None:
    seen: list[MockRequest] = []

    def handler(request: MockRequest) -> dict[str, Any]:
        seen.append(request)
        return {"StreamNames": ["a"]}

    transport = kpl.MockTransport(handler)
    assert isinstance(transport, kpl.Transport)
    async with kpl.KinesisClient(transport=transport) as client:
        assert await client.call("ListStreams", {"Limit": 1}) == {"StreamNames": ["a"]}
    assert [(r.action, r.json()) for r in seen] == [("ListStreams", {"Limit": 1})]


async def test_an_aiohttp_transport_is_a_transport_and_closes() -> None:
    credentials = kpl.Credentials("AKID", "secret", token="session")
    transport = kpl.AioHttpTransport(
        "http://127.0.0.1:1", region="us-east-1", credentials=credentials
    )
    assert isinstance(transport, kpl.Transport)
    await transport.close()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        "AKID", "secret", "session")
    assert "secret" not in repr(credentials)


def test_errors_carry_their_code_and_retry_policy() -> None:
    assert kpl.errors.RecordFailed is kpl.RecordFailed
    for cls, retryable in [
        (kpl.ProvisionedThroughputExceededException, True),
        (kpl.NetworkError, True),
        (kpl.RequestTimeout, True),
        (kpl.ResourceNotFoundException, False),
        (kpl.ValidationException, False),
    ]:
        error = cls("message")
        assert isinstance(error, kpl.KinesisError)
        assert (error.code, error.message, error.retryable) == (cls.__name__, "message", retryable)
    assert kpl.RecordExpired("late").code == "Expired"
    assert issubclass(kpl.NoCredentialsError, Exception)
    assert str(kpl.NoCredentialsError("none found")) == "none found"


def test_deaggregate_gives_the_user_records_of_a_kinesis_record() -> None:
    data = encode(["a", "b"], [], [SubRecord(0, None, b"one"), SubRecord(1, None, b"two")])
    records = kpl.deaggregate(data, partition_key="x", sequence_number="7")
    assert [(r.partition_key, r.data, r.sub_sequence_number) for r in records] == [
        ("a", b"one", 0), ("b", b"two", 1)]
    assert all(isinstance(r, kpl.UserRecord) and r.aggregated for r in records)
    assert kpl.deaggregate(b"plain", partition_key="k") == [kpl.UserRecord("k", b"plain")]
    got = kpl.deaggregate_records(
        [{"Data": base64.b64encode(data).decode(), "PartitionKey": "x", "SequenceNumber": "7"}]
    )
    assert [(r.data, r.sequence_number) for r in got] == [(b"one", "7"), (b"two", "7")]


def test_run_runs_a_coroutine_to_its_result() -> None:
    async def main() -> int:
        await asyncio.sleep(0)
        return 42

    assert kpl.run(main()) == 42
