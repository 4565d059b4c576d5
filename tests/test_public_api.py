"""Guards the public surface of ``kpl``: what is exported, and the exact signatures
users write against (a change here is a change to users' code)."""

from __future__ import annotations

import inspect

import kpl
import kpl.errors

EXPECTED = {
    "AioHttpTransport", "Attempt", "BatchResult", "BufferFull", "Credentials",
    "InvalidPartitionKey",
    "KinesisClient", "KinesisError", "MockTransport", "NetworkError", "NoCredentialsError",
    "Producer", "ProducerClosed", "ProducerConfig", "ProvisionedThroughputExceededException",
    "RecordExpired", "RecordFailed", "RecordResult", "RecordTooLarge", "RequestTimeout",
    "ResourceNotFoundException", "Transport", "UserRecord", "ValidationException",
    "deaggregate", "deaggregate_records", "errors", "run",
}


def test_all_is_sorted_and_exact() -> None:
    assert kpl.__all__ == sorted(kpl.__all__)
    assert set(kpl.__all__) == EXPECTED
    for name in kpl.__all__:
        assert getattr(kpl, name) is not None


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
    assert _signature(kpl.Transport.call) == "(self, action: 'str', body: 'bytes') -> 'bytes'"
    for name in ("create_stream", "wait_for_active", "describe_stream_summary", "list_shards",
                 "shard_ranges", "delete_stream", "put_record", "get_shard_iterator",
                 "get_records", "split_shard", "merge_shards", "update_shard_count"):
        assert inspect.iscoroutinefunction(getattr(kpl.KinesisClient, name)), name
