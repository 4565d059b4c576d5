"""The errors the server answers with: the shared Kinesis error classes, by wire code.

The classes (and their wire ``code`` and HTTP ``status``) are :mod:`kpl.protocol.errors`,
the same ones the producer catches; the web layer's one error middleware renders any
:class:`KinesisError` as ``{"__type": code, "message": message}`` with that status.
:func:`for_code` looks up, among the codes this server answers with, the class to raise
for a wire code (fault injection and the per-entry PutRecords errors use it).
"""

from __future__ import annotations

from kpl.protocol.errors import (
    AccessDeniedException,
    DryRunOperationException,
    ExpiredIteratorException,
    ExpiredNextTokenException,
    IncompleteSignatureException,
    InternalFailure,
    InvalidArgumentException,
    InvalidSignatureException,
    KinesisError,
    LimitExceededException,
    MissingAuthenticationTokenException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    SerializationException,
    UnknownOperationException,
    UnrecognizedClientException,
    ValidationException,
)

__all__ = [
    "AccessDeniedException",
    "DryRunOperationException",
    "ExpiredIteratorException",
    "ExpiredNextTokenException",
    "IncompleteSignatureException",
    "InternalFailure",
    "InvalidArgumentException",
    "InvalidSignatureException",
    "KinesisError",
    "LimitExceededException",
    "MissingAuthenticationTokenException",
    "ProvisionedThroughputExceededException",
    "ResourceInUseException",
    "ResourceNotFoundException",
    "SerializationException",
    "UnknownOperationException",
    "UnrecognizedClientException",
    "ValidationException",
    "for_code",
]

# The codes this server answers with (a client's own codes, such as NetworkError or
# ExpiredToken, are never the server's to send).
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
        UnrecognizedClientException,
        InvalidSignatureException,
        InternalFailure,
    )
}


def for_code(code: str) -> type[KinesisError]:
    """The exception class for a wire ``__type``; unknown codes map to :class:`KinesisError`."""
    return _BY_CODE.get(code, KinesisError)
