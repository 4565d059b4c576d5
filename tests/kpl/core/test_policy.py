"""Config validation, the error tree, the retry table, backoff bounds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kpl.config import ProducerConfig
from kpl.core.retry import ACTIONS, Action, Backoff, action_for_error, classify
from kpl.errors import (
    AccessDeniedException,
    InternalFailure,
    KinesisError,
    NetworkError,
    ProvisionedThroughputExceededException,
    RecordFailed,
    RequestTimeout,
    ResourceInUseException,
    ValidationException,
)


def test_defaults_are_the_kpl_defaults() -> None:
    config = ProducerConfig()
    assert (
        config.record_max_buffered_time,
        config.record_ttl,
        config.aggregation_max_size,
        config.collection_max_count,
        config.collection_max_size,
        config.rate_limit,
        config.max_connections,
        config.request_timeout,
    ) == (0.1, 30.0, 51_200, 500, 5 * 1024 * 1024, 150.0, 24, 6.0)
    assert config.aggregation_enabled
    assert not config.fail_if_throttled
    assert not config.preserve_order


def test_config_is_frozen() -> None:
    config = ProducerConfig()
    with pytest.raises(AttributeError):
        config.record_ttl = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"record_ttl": 0}, "record_ttl must be a finite positive"),
        ({"record_ttl": float("inf")}, "record_ttl"),
        ({"record_max_buffered_time": -1}, "record_max_buffered_time"),
        (
            {"record_max_buffered_time": 3.0, "record_ttl": 1.0},
            r"record_max_buffered_time \(3\.0\) must not exceed record_ttl \(1\.0\)",
        ),
        ({"request_timeout": "6"}, "request_timeout must be a number"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"shard_map_hold_time": -0.5}, "shard_map_hold_time must be a finite non-negative"),
        ({"shard_map_hold_time": float("nan")}, "shard_map_hold_time"),
        ({"collection_max_count": 501}, "collection_max_count must be between 1 and 500"),
        ({"collection_max_count": 0}, "collection_max_count"),
        ({"collection_max_size": 11 * 1024 * 1024}, "collection_max_size"),
        ({"collection_max_size": 1000}, "collection_max_size .* must hold"),
        ({"aggregation_max_size": 2 * 1024 * 1024}, "aggregation_max_size"),
        ({"aggregation_max_count": 0}, "aggregation_max_count"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_buffered_records": 0}, "max_buffered_records"),
        ({"max_buffered_bytes": 10}, "max_buffered_bytes"),
        ({"min_backoff": 2.0, "max_backoff": 1.0}, "max_backoff"),
        ({"jitter": "none"}, "jitter"),
        ({"preserve_order": 1}, "preserve_order must be a bool"),
        ({"max_connections": True}, "max_connections must be an integer"),
        ({"max_record_size": 11 * 1024 * 1024}, "max_record_size"),
    ],
)
def test_config_rejects_bad_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProducerConfig(**options)


def test_buffering_up_to_the_ttl_is_accepted() -> None:
    config = ProducerConfig(record_max_buffered_time=1.0, record_ttl=1.0)
    assert (config.record_max_buffered_time, config.record_ttl) == (1.0, 1.0)


def test_large_record_streams_can_raise_limits() -> None:
    config = ProducerConfig(max_record_size=10 * 1024 * 1024, collection_max_size=10 * 1024 * 1024)
    assert config.collection_max_size == 10 * 1024 * 1024


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls", "retryable"),
    [
        ("ProvisionedThroughputExceededException", ProvisionedThroughputExceededException, True),
        ("InternalFailure", InternalFailure, True),
        ("ValidationException", ValidationException, False),
        ("AccessDeniedException", AccessDeniedException, False),
        ("ResourceInUseException", ResourceInUseException, True),
        ("NetworkError", NetworkError, True),
        ("RequestTimeout", RequestTimeout, True),
    ],
)
def test_for_code_gives_the_subclass(code: str, cls: type[KinesisError], retryable: bool) -> None:
    error = KinesisError.for_code(code, "boom")
    assert type(error) is cls
    assert error.error_code == code == cls.code
    assert error.message == "boom"
    assert error.is_retryable is retryable
    assert str(error) == f"{code}: boom"


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (500, True), (503, True)])
def test_unknown_codes_are_generic_and_retryable_when_5xx(status: int, retryable: bool) -> None:
    error = KinesisError.for_code("SomethingNew", "?", status)
    assert type(error) is KinesisError
    assert error.error_code == "SomethingNew"
    assert error.http_status == status
    assert error.is_retryable is retryable
    assert classify("SomethingNew", status=status) is (Action.RETRY if retryable else Action.FAIL)


def test_record_failed_carries_code_message_attempts() -> None:
    failure = RecordFailed("ValidationException", "bad", (), cause=ValidationException("bad"))
    assert (failure.code, failure.message, failure.attempts) == ("ValidationException", "bad", ())
    assert isinstance(failure.cause, ValidationException)
    assert "ValidationException" in str(failure)


# --- the retry table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("ProvisionedThroughputExceededException", Action.RETRY),
        ("KMSThrottlingException", Action.RETRY),
        ("LimitExceededException", Action.RETRY),
        ("InternalFailure", Action.RETRY),
        ("ServiceUnavailable", Action.RETRY),
        ("NetworkError", Action.RETRY),
        ("RequestTimeout", Action.RETRY),
        ("ResourceInUseException", Action.RETRY_AFTER_REFRESH),
        # Credentials rotating: the transport fetches new ones, so a retry succeeds.
        ("ExpiredTokenException", Action.RETRY),
        ("ExpiredToken", Action.RETRY),
        ("RequestExpired", Action.RETRY),
        # A garbled 200 answer (not JSON, not an object, wrong entries).
        ("MalformedResponse", Action.RETRY),
        ("ValidationException", Action.FAIL),
        ("ResourceNotFoundException", Action.FAIL),
        ("AccessDeniedException", Action.FAIL),
        ("InvalidArgumentException", Action.FAIL),
        ("UnrecognizedClientException", Action.FAIL),
        ("InvalidSignatureException", Action.FAIL),
        ("KMSAccessDeniedException", Action.FAIL),
        ("SerializationException", Action.FAIL),
    ],
)
def test_retry_table(code: str, action: Action) -> None:
    assert ACTIONS[code] is action
    assert classify(code) is action


@pytest.mark.parametrize(
    "code",
    [
        "ProvisionedThroughputExceededException",
        "KMSThrottlingException",
        "LimitExceededException",
        "ThrottlingException",
    ],
)
def test_fail_if_throttled_fails_throttles(code: str) -> None:
    assert classify(code) is Action.RETRY
    assert classify(code, fail_if_throttled=True) is Action.FAIL


@pytest.mark.parametrize("status", [400, 403])
def test_unregistered_auth_refusals_stay_permanent(status: int) -> None:
    assert "InvalidClientTokenId" not in ACTIONS
    assert classify("InvalidClientTokenId", status=status) is Action.FAIL


def test_fail_if_throttled_does_not_touch_other_retries() -> None:
    assert classify("InternalFailure", fail_if_throttled=True) is Action.RETRY


def test_action_for_error() -> None:
    assert action_for_error(NetworkError("refused")) is Action.RETRY
    assert action_for_error(ValidationException("x")) is Action.FAIL
    assert action_for_error(RuntimeError("bug")) is Action.FAIL


# --- backoff -------------------------------------------------------------------------


def test_full_jitter_bounds() -> None:
    backoff = Backoff(0.1, 5.0, "full", random.Random(1))
    for attempt in range(1, 20):
        cap = min(5.0, 0.1 * 2 ** (attempt - 1))
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range, not stuck low


def test_decorrelated_jitter_bounds() -> None:
    backoff = Backoff(0.1, 5.0, "decorrelated", random.Random(2))
    previous = 0.0
    for attempt in range(1, 200):
        delay = backoff.delay(attempt, previous)
        assert 0.1 <= delay <= min(5.0, max(0.1, 3 * previous))
        previous = delay
    assert previous > 1.0  # it grows


def test_backoff_is_reproducible_from_the_rng() -> None:
    first = [Backoff(0.1, 5.0, "full", random.Random(9)).delay(3) for _ in range(3)]
    again = [Backoff(0.1, 5.0, "full", random.Random(9)).delay(3) for _ in range(3)]
    assert first == again


def test_backoff_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff(0.1, 5.0, "full", random.Random(1)).delay(0)


def test_huge_attempt_numbers_stay_capped() -> None:
    assert Backoff(0.1, 5.0, "full", random.Random(1)).delay(10_000) <= 5.0


def test_record_result_is_immutable_and_compares_by_value() -> None:
    from kpl.core.results import Attempt, RecordResult

    ok = Attempt(0.0, 1.0, True, None, None)
    result = RecordResult("shardId-000000000000", "49", 3, (ok,))
    assert (
        result.shard_id,
        result.sequence_number,
        result.sub_sequence_number,
        result.attempts,
    ) == ("shardId-000000000000", "49", 3, (ok,))
    assert result == RecordResult("shardId-000000000000", "49", 3, (ok,))
    assert result != RecordResult("shardId-000000000000", "49", 4, (ok,))
    assert hash(result) == hash(RecordResult("shardId-000000000000", "49", 3, (ok,)))
    assert "sub_sequence_number=3" in repr(result)
    with pytest.raises(AttributeError):
        result.shard_id = "other"  # type: ignore[misc]
    assert result._replace(sub_sequence_number=4).sub_sequence_number == 4
