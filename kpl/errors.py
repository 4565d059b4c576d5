"""One exception tree for the producer; each class carries its policy.

The Kinesis error classes come from :mod:`kpl.protocol.errors`, shared with the bundled
server: each states, as class attributes, the wire ``code`` (``__type`` of an error
body, ``ErrorCode`` of a PutRecords entry), whether the call is worth retrying
(``retryable``), whether the producer's shard map should be refreshed first
(``refresh_shard_map``) and whether it is a throttle (``throttling``, which
``fail_if_throttled`` turns into an immediate failure). :meth:`KinesisError.for_code`
looks a code up, and ``kpl.core.retry`` derives its RETRY / RETRY_AFTER_REFRESH / FAIL
decision from them. The producer's own outcomes (a record expired, the producer closed,
a full buffer, a record too large) are defined here.

Lower-layer failures (aiohttp, sockets, timeouts) are translated by the transport into
:class:`NetworkError` / :class:`RequestTimeout` at one boundary; nothing above it sees
a library exception.
"""

from __future__ import annotations

from kpl.core.results import Attempt
from kpl.protocol.errors import (
    AccessDeniedException,
    DryRunOperationException,
    ExpiredIteratorException,
    ExpiredNextTokenException,
    ExpiredToken,
    ExpiredTokenException,
    IncompleteSignature,
    IncompleteSignatureException,
    InternalFailure,
    InvalidArgumentException,
    InvalidSignatureException,
    KinesisError,
    KMSAccessDeniedException,
    KMSDisabledException,
    KMSInvalidStateException,
    KMSNotFoundException,
    KMSOptInRequired,
    KMSThrottlingException,
    LimitExceededException,
    MalformedResponse,
    MissingAuthenticationToken,
    MissingAuthenticationTokenException,
    NetworkError,
    ProvisionedThroughputExceededException,
    RequestExpired,
    RequestTimeout,
    ResourceInUseException,
    ResourceNotFoundException,
    SerializationException,
    ServiceUnavailable,
    ThrottlingException,
    UnknownOperationException,
    UnrecognizedClientException,
    ValidationException,
)
from kpl.protocol.hashing import InvalidPartitionKey

__all__ = [
    "AccessDeniedException",
    "BufferFull",
    "DryRunOperationException",
    "ExpiredIteratorException",
    "ExpiredNextTokenException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "InternalFailure",
    "InvalidArgumentException",
    "InvalidPartitionKey",
    "InvalidSignatureException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "KMSThrottlingException",
    "KinesisError",
    "LimitExceededException",
    "MalformedResponse",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "NetworkError",
    "ProducerClosed",
    "ProvisionedThroughputExceededException",
    "RecordExpired",
    "RecordFailed",
    "RecordTooLarge",
    "RequestExpired",
    "RequestTimeout",
    "ResourceInUseException",
    "ResourceNotFoundException",
    "SerializationException",
    "ServiceUnavailable",
    "ThrottlingException",
    "UnknownOperationException",
    "UnrecognizedClientException",
    "ValidationException",
]


# --- the producer's own outcomes ---------------------------------------------------------


class RecordExpired(KinesisError):
    """A record was not delivered within ``record_ttl`` (the KPL's ``Expired``)."""

    code = "Expired"


class ProducerClosed(KinesisError):
    """The producer shut down with the record still undelivered."""

    code = "ProducerClosed"


class RecordFailed(Exception):
    """Raised from a user record's future when it cannot be delivered.

    Every failed record gets its own instance; ``attempts`` lists every try, the last
    one holding the final error. ``cause`` is the error that decided the failure.
    """

    def __init__(
        self,
        code: str,
        message: str,
        attempts: tuple[Attempt, ...],
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.attempts = attempts
        self.cause = cause

    def __repr__(self) -> str:
        return (
            f"RecordFailed(code={self.code!r}, message={self.message!r}, "
            f"attempts={len(self.attempts)})"
        )


class BufferFull(Exception):
    """``put_nowait`` found the buffer budget (bytes or records) exhausted."""


class RecordTooLarge(ValueError):
    """A user record's data plus partition key exceeds ``max_record_size``."""
