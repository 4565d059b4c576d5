"""The shared error table: one class per wire code, used by the producer and the server."""

from __future__ import annotations

import pytest

import kpl.errors
import server.core.errors
from kpl.protocol import errors
from kpl.protocol.errors import KinesisError


def test_the_server_raises_the_classes_the_producer_catches() -> None:
    for name in server.core.errors.__all__:
        if name == "for_code":
            continue
        assert getattr(server.core.errors, name) is getattr(errors, name)
        assert getattr(kpl.errors, name) is getattr(errors, name)


def test_every_registered_code_has_one_class_named_after_it() -> None:
    for code, cls in KinesisError.registered().items():
        assert cls.code == code
        if cls.__module__ == errors.__name__:
            assert cls.__name__ in errors.__all__


@pytest.mark.parametrize(
    ("code", "retryable", "throttling", "refresh", "status"),
    [
        ("ProvisionedThroughputExceededException", True, True, False, 400),
        ("LimitExceededException", True, True, False, 400),
        ("InternalFailure", True, False, False, 500),
        ("ServiceUnavailable", True, False, False, 503),
        ("ResourceInUseException", True, False, True, 400),
        ("ExpiredTokenException", True, False, False, 400),
        ("ValidationException", False, False, False, 400),
        ("DryRunOperationException", False, False, False, 400),
        ("MissingAuthenticationTokenException", False, False, False, 400),
    ],
)
def test_policy_of_a_code(
    code: str, retryable: bool, throttling: bool, refresh: bool, status: int
) -> None:
    error = KinesisError.for_code(code, "m")
    cls = type(error)
    assert (cls.retryable, cls.throttling, cls.refresh_shard_map) == (
        retryable,
        throttling,
        refresh,
    )
    assert (error.error_code, error.http_status, error.message) == (code, status, "m")
    assert error.is_retryable is retryable


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (500, True), (503, True)])
def test_an_unknown_code_is_retryable_when_5xx(status: int, retryable: bool) -> None:
    error = KinesisError.for_code("SomethingNew", "?", status)
    assert type(error) is KinesisError
    assert (error.error_code, error.http_status) == ("SomethingNew", status)
    assert error.is_retryable is retryable


def test_server_default_messages() -> None:
    assert errors.InternalFailure().message == "Internal service failure."
    assert errors.DryRunOperationException().message == (
        "The request was rejected because the DryRun parameter was specified."
    )
    assert str(errors.ValidationException("bad")) == "ValidationException: bad"


def test_server_for_code_knows_only_the_codes_it_answers_with() -> None:
    assert server.core.errors.for_code("ResourceNotFoundException") is (
        errors.ResourceNotFoundException
    )
    assert server.core.errors.for_code("NetworkError") is KinesisError
