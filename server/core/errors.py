"""One exception tree for everything the server answers with an error.

Each class carries its wire ``__type`` (``code``) and HTTP ``status`` as class
attributes; the web layer's one error middleware renders any :class:`KinesisError` as
``{"__type": code, "message": message}`` with that status. Look a class up by its wire
code with :func:`for_code` (the fault injection of issue 3 and the per-entry PutRecords
errors use the same codes).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDeniedException",
    "DryRunOperationException",
    "ExpiredIteratorException",
    "ExpiredNextTokenException",
    "IncompleteSignatureException",
    "InternalFailure",
    "InvalidArgumentException",
    "KinesisError",
    "LimitExceededException",
    "MissingAuthenticationTokenException",
    "ProvisionedThroughputExceededException",
    "ResourceInUseException",
    "ResourceNotFoundException",
    "SerializationException",
    "UnknownOperationException",
    "ValidationException",
    "for_code",
]


class KinesisError(Exception):
    """An error the service answers with: ``{"__type": code, "message": ...}``."""

    code: ClassVar[str] = "InternalFailure"
    status: ClassVar[int] = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ValidationException(KinesisError):
    """Input fails the model's constraints (``N validation errors detected: ...``)."""

    code = "ValidationException"


class SerializationException(KinesisError):
    """The body is not JSON, or a member has the wrong JSON type."""

    code = "SerializationException"


class UnknownOperationException(KinesisError):
    """The ``X-Amz-Target`` names no operation."""

    code = "UnknownOperationException"


class ResourceNotFoundException(KinesisError):
    """The stream (or shard) does not exist or is not in a state that allows the call."""

    code = "ResourceNotFoundException"


class ResourceInUseException(KinesisError):
    """The stream exists already, or is busy (CREATING, UPDATING, DELETING)."""

    code = "ResourceInUseException"


class LimitExceededException(KinesisError):
    """An account limit (shards, tags) or a control-plane rate was exceeded."""

    code = "LimitExceededException"


class InvalidArgumentException(KinesisError):
    """A valid-looking argument that the stream's state rejects."""

    code = "InvalidArgumentException"


class ExpiredIteratorException(KinesisError):
    """A shard iterator older than five minutes."""

    code = "ExpiredIteratorException"


class ExpiredNextTokenException(KinesisError):
    """A pagination token that expired."""

    code = "ExpiredNextTokenException"


class ProvisionedThroughputExceededException(KinesisError):
    """A shard's read or write rate was exceeded (issue 3 enforces the limits)."""

    code = "ProvisionedThroughputExceededException"


class DryRunOperationException(KinesisError):
    """A request that would have succeeded, refused because it set ``DryRun``."""

    code = "DryRunOperationException"

    def __init__(
        self, message: str = "The request was rejected because the DryRun parameter was specified."
    ) -> None:
        super().__init__(message)


class AccessDeniedException(KinesisError):
    """The caller may not do this."""

    code = "AccessDeniedException"


class MissingAuthenticationTokenException(KinesisError):
    """No ``Authorization`` header (nor query-string signature)."""

    code = "MissingAuthenticationTokenException"
    status = 400


class IncompleteSignatureException(KinesisError):
    """An ``Authorization`` header that is not a complete SigV4 header."""

    code = "IncompleteSignatureException"
    status = 400


class InternalFailure(KinesisError):
    """The server failed; the only modelled 500."""

    code = "InternalFailure"
    status = 500

    def __init__(self, message: str = "Internal service failure.") -> None:
        super().__init__(message)


_BY_CODE: dict[str, type[KinesisError]] = {
    cls.code: cls
    for cls in (
        ValidationException,
        SerializationException,
        UnknownOperationException,
        ResourceNotFoundException,
        ResourceInUseException,
        LimitExceededException,
        InvalidArgumentException,
        ExpiredIteratorException,
        ExpiredNextTokenException,
        ProvisionedThroughputExceededException,
        AccessDeniedException,
        DryRunOperationException,
        MissingAuthenticationTokenException,
        IncompleteSignatureException,
        InternalFailure,
    )
}


def for_code(code: str) -> type[KinesisError]:
    """The exception class for a wire ``__type``; unknown codes map to :class:`KinesisError`."""
    return _BY_CODE.get(code, KinesisError)
