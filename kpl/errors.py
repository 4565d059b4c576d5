"""One exception tree for the producer; each class carries its policy.

A Kinesis error class states, as class attributes, the wire ``code`` (``__type`` of an
error body, ``ErrorCode`` of a PutRecords entry), whether the call is worth retrying
(``retryable``), whether the producer's shard map should be refreshed first
(``refresh_shard_map``) and whether it is a throttle (``throttling``, which
``fail_if_throttled`` turns into an immediate failure). These classes *are* the table:
:meth:`KinesisError.for_code` looks a code up in the registry filled by subclassing, and
``kpl.core.retry`` derives its RETRY / RETRY_AFTER_REFRESH / FAIL decision from them.

Lower-layer failures (aiohttp, sockets, timeouts) are translated by the transport into
:class:`NetworkError` / :class:`RequestTimeout` at one boundary; nothing above it sees
a library exception.
"""

from __future__ import annotations

from typing import ClassVar

from kpl.core.results import Attempt

__all__ = [
    "AccessDeniedException",
    "BufferFull",
    "ExpiredIteratorException",
    "ExpiredNextTokenException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
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


class KinesisError(Exception):
    """A failed Kinesis call (or entry), with its policy as class attributes."""

    #: The wire error code; subclasses set it, the generic class carries the one received.
    code: ClassVar[str] = "KinesisError"
    #: Worth trying again later.
    retryable: ClassVar[bool] = False
    #: Refresh the shard map before retrying.
    refresh_shard_map: ClassVar[bool] = False
    #: A throttle: ``fail_if_throttled`` fails it at once.
    throttling: ClassVar[bool] = False
    #: The HTTP status the service answers this error with.
    status: ClassVar[int] = 400

    _registry: ClassVar[dict[str, type[KinesisError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            KinesisError._registry[cls.code] = cls

    def __init__(
        self, message: str = "", *, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        # A generic KinesisError keeps the code it was made for (an unknown code).
        self.error_code: str = code if code is not None else type(self).code
        self.http_status: int = status if status is not None else type(self).status

    def __str__(self) -> str:
        return f"{self.error_code}: {self.message}" if self.message else self.error_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    @property
    def is_retryable(self) -> bool:
        """The instance's verdict (an unknown code is retryable when the status is 5xx)."""
        if type(self) is KinesisError:
            return self.http_status >= 500
        return self.retryable

    @staticmethod
    def class_for(code: str) -> type[KinesisError] | None:
        """The registered subclass for a wire code, or ``None`` when unknown."""
        return KinesisError._registry.get(code)

    @staticmethod
    def for_code(code: str, message: str = "", status: int | None = None) -> KinesisError:
        """An instance of the subclass registered for ``code``; an unknown code gives a
        generic :class:`KinesisError` that is retryable when ``status`` is 5xx."""
        cls = KinesisError._registry.get(code)
        if cls is None:
            return KinesisError(message, code=code, status=status if status else 400)
        return cls(message, status=status)

    @staticmethod
    def registered() -> dict[str, type[KinesisError]]:
        """A copy of the code -> class registry (the policy table)."""
        return dict(KinesisError._registry)


# --- retryable: throttles --------------------------------------------------------------


class ProvisionedThroughputExceededException(KinesisError):
    """A shard's write (or read) limit was exceeded."""

    code = "ProvisionedThroughputExceededException"
    retryable = True
    throttling = True


class KMSThrottlingException(KinesisError):
    """KMS throttled the stream's encryption key."""

    code = "KMSThrottlingException"
    retryable = True
    throttling = True


class LimitExceededException(KinesisError):
    """A control-plane rate or count limit was exceeded."""

    code = "LimitExceededException"
    retryable = True
    throttling = True


class ThrottlingException(KinesisError):
    """The generic AWS throttling error."""

    code = "ThrottlingException"
    retryable = True
    throttling = True


# --- retryable: service-side trouble ----------------------------------------------------


class InternalFailure(KinesisError):
    """The service failed internally (HTTP 500)."""

    code = "InternalFailure"
    retryable = True
    status = 500


class ServiceUnavailable(KinesisError):
    """The service is unavailable (HTTP 503)."""

    code = "ServiceUnavailable"
    retryable = True
    status = 503


class ResourceInUseException(KinesisError):
    """The stream is changing shape (creating, resharding): retry once the map is known."""

    code = "ResourceInUseException"
    retryable = True
    refresh_shard_map = True


# --- retryable: below HTTP --------------------------------------------------------------


class NetworkError(KinesisError):
    """The connection failed (refused, reset, DNS): the request may not have arrived."""

    code = "NetworkError"
    retryable = True
    status = 0


class RequestTimeout(KinesisError):
    """No answer within ``request_timeout``: the request may or may not have been applied."""

    code = "RequestTimeout"
    retryable = True
    status = 0


class MalformedResponse(KinesisError):
    """A 200 answer that is not a PutRecords result (not JSON, not an object, wrong
    entries): a proxy or a half-written body, so the records are sent again."""

    code = "MalformedResponse"
    retryable = True
    status = 500


# --- retryable: credentials rotating ----------------------------------------------------
# The signing credentials expired between fetch and use (temporary credentials being
# rotated). The transport drops them from its cache on these codes, so the retry is
# signed with freshly fetched ones and succeeds; failing the records would lose them for
# a routine rotation. Keys that are unknown, revoked or not permitted stay permanent
# (AccessDenied, UnrecognizedClient, InvalidSignature ... below; InvalidClientTokenId and
# other unregistered 4xx codes by classify()'s default): asking again gets the same answer
# until someone fixes the setup, so retrying would only hide the cause until record_ttl.


class ExpiredTokenException(KinesisError):
    """The session token of temporary credentials expired (Kinesis's spelling)."""

    code = "ExpiredTokenException"
    retryable = True


class ExpiredToken(KinesisError):
    """The session token of temporary credentials expired (STS-style spelling)."""

    code = "ExpiredToken"
    retryable = True


class RequestExpired(KinesisError):
    """The request's signature date is too old (signed with stale time or credentials)."""

    code = "RequestExpired"
    retryable = True


# --- not retryable ----------------------------------------------------------------------


class ValidationException(KinesisError):
    """The request broke a constraint of the service model."""

    code = "ValidationException"


class SerializationException(KinesisError):
    """The request body did not parse."""

    code = "SerializationException"


class UnknownOperationException(KinesisError):
    """The X-Amz-Target names no operation."""

    code = "UnknownOperationException"


class InvalidArgumentException(KinesisError):
    """An argument is invalid for the stream's current state."""

    code = "InvalidArgumentException"


class ResourceNotFoundException(KinesisError):
    """The stream (or consumer) does not exist."""

    code = "ResourceNotFoundException"


class ExpiredIteratorException(KinesisError):
    """A shard iterator is older than five minutes."""

    code = "ExpiredIteratorException"


class ExpiredNextTokenException(KinesisError):
    """A pagination token expired."""

    code = "ExpiredNextTokenException"


class AccessDeniedException(KinesisError):
    """The credentials may not perform this call."""

    code = "AccessDeniedException"


class UnrecognizedClientException(KinesisError):
    """The access key is unknown."""

    code = "UnrecognizedClientException"


class InvalidSignatureException(KinesisError):
    """The SigV4 signature does not match."""

    code = "InvalidSignatureException"


class IncompleteSignature(KinesisError):
    """The SigV4 signature is missing parts."""

    code = "IncompleteSignature"


class MissingAuthenticationToken(KinesisError):
    """The request is not signed."""

    code = "MissingAuthenticationToken"


class KMSAccessDeniedException(KinesisError):
    """KMS denied access to the stream's key."""

    code = "KMSAccessDeniedException"


class KMSDisabledException(KinesisError):
    """The stream's KMS key is disabled."""

    code = "KMSDisabledException"


class KMSInvalidStateException(KinesisError):
    """The stream's KMS key is in an invalid state."""

    code = "KMSInvalidStateException"


class KMSNotFoundException(KinesisError):
    """The stream's KMS key does not exist."""

    code = "KMSNotFoundException"


class KMSOptInRequired(KinesisError):
    """The account is not subscribed to KMS."""

    code = "KMSOptInRequired"


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


class InvalidPartitionKey(ValueError):
    """A partition key that is empty, longer than 256 characters, or not a str."""
