"""The Kinesis error codes and their policy: one exception class per code.

Both sides use these classes: the server raises them and renders an instance as
``{"__type": code, "message": message}`` with its ``status``; the producer builds them
from an error body (or a PutRecords entry's ``ErrorCode``) with
:meth:`KinesisError.for_code` and decides from their class attributes whether to retry.
The classes *are* the table; subclassing registers a class under its ``code``:

====================================  =========  ========  =======  ======
code                                  retryable  throttle  refresh  status
====================================  =========  ========  =======  ======
ProvisionedThroughputExceededExc.     yes        yes       no       400
KMSThrottlingException                yes        yes       no       400
LimitExceededException                yes        yes       no       400
ThrottlingException                   yes        yes       no       400
InternalFailure                       yes        no        no       500
ServiceUnavailable                    yes        no        no       503
ResourceInUseException                yes        no        yes      400
NetworkError, RequestTimeout          yes        no        no       0
MalformedResponse                     yes        no        no       500
ExpiredToken(Exception), RequestExp.  yes        no        no       400
every other registered code           no (fatal) no        no       400
====================================  =========  ========  =======  ======

A code no class registered is retryable exactly when its HTTP status is 5xx.
``NetworkError``, ``RequestTimeout`` and ``MalformedResponse`` never travel on the wire:
they name what a client saw below HTTP (status 0) or a 200 answer it could not read.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDeniedException",
    "DryRunOperationException",
    "ExpiredIteratorException",
    "ExpiredNextTokenException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "InternalFailure",
    "InvalidArgumentException",
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
    "ProvisionedThroughputExceededException",
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
    """A Kinesis error (a failed call, or a failed PutRecords entry) with its policy.

    The class attributes are the policy; an instance carries ``message`` and the ``code``
    and ``status`` it was made with (a generic :class:`KinesisError` stands for a code no
    subclass registered, and keeps that code).
    """

    #: The wire error code; subclasses set it, a generic instance carries the one received.
    code: str = "KinesisError"
    #: Worth trying again later.
    retryable: ClassVar[bool] = False
    #: Refresh the shard map before retrying.
    refresh_shard_map: ClassVar[bool] = False
    #: A throttle: ``fail_if_throttled`` fails it at once.
    throttling: ClassVar[bool] = False
    #: The HTTP status the service answers this error with.
    status: int = 400

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
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    @property
    def error_code(self) -> str:
        """The wire code (the same as :attr:`code`)."""
        return self.code

    @property
    def http_status(self) -> int:
        """The HTTP status (the same as :attr:`status`)."""
        return self.status

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

    def __init__(
        self,
        message: str = "Internal service failure.",
        *,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)


class ServiceUnavailable(KinesisError):
    """The service is unavailable (HTTP 503)."""

    code = "ServiceUnavailable"
    retryable = True
    status = 503


class ResourceInUseException(KinesisError):
    """The stream exists already, or is busy (creating, updating, deleting): a producer
    retries once its shard map is known again."""

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
# rotated). A client drops them from its cache on these codes, so the retry is signed
# with freshly fetched ones and succeeds; failing the records would lose them for a
# routine rotation. Keys that are unknown, revoked or not permitted stay permanent
# (AccessDenied, UnrecognizedClient, InvalidSignature ... below; InvalidClientTokenId and
# other unregistered 4xx codes by the 5xx rule): asking again gets the same answer
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
    """The request broke a constraint of the service model
    (``N validation errors detected: ...``)."""

    code = "ValidationException"


class SerializationException(KinesisError):
    """The request body did not parse, or a member has the wrong JSON type."""

    code = "SerializationException"


class UnknownOperationException(KinesisError):
    """The X-Amz-Target names no operation."""

    code = "UnknownOperationException"


class InvalidArgumentException(KinesisError):
    """An argument is invalid for the stream's current state."""

    code = "InvalidArgumentException"


class ResourceNotFoundException(KinesisError):
    """The stream (shard, consumer) does not exist or is not in a state that allows the
    call."""

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


class MissingAuthenticationTokenException(KinesisError):
    """No ``Authorization`` header nor query-string signature (the bundled server's code)."""

    code = "MissingAuthenticationTokenException"


class IncompleteSignatureException(KinesisError):
    """An ``Authorization`` header that is not a complete SigV4 header (the bundled
    server's code)."""

    code = "IncompleteSignatureException"


class DryRunOperationException(KinesisError):
    """A request that would have succeeded, refused because it set ``DryRun``."""

    code = "DryRunOperationException"

    def __init__(
        self,
        message: str = "The request was rejected because the DryRun parameter was specified.",
        *,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)


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
