"""The consumer's exceptions, each carrying what a caller should do about it.

``retryable`` says whether trying the same call again later may succeed: a lease store
that did not answer may answer next time; a lease another worker holds stays theirs.
Errors of a lower layer (sqlite3, botocore) are translated into these at the store's
boundary, so callers never catch a driver's exception types.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConsumerError",
    "DuplicateWorkerId",
    "InvalidLeaseStoreURL",
    "LeaseLost",
    "LeaseStoreError",
    "LeaseStoreUnavailable",
]


class ConsumerError(Exception):
    """Base class of every error the consumer raises."""

    #: Whether the same call may succeed when tried again later.
    retryable: ClassVar[bool] = False


class LeaseLost(ConsumerError):
    """A write for a shard's lease was refused: another worker holds the lease now.

    The worker must stop delivering that shard's records; what it had not checkpointed
    is delivered again by the new owner.
    """

    def __init__(self, shard_id: str, detail: str = "") -> None:
        self.shard_id = shard_id
        message = f"the lease of {shard_id} is held by another worker now"
        super().__init__(f"{message}: {detail}" if detail else message)

    def __reduce__(self) -> tuple[type[LeaseLost], tuple[str, str]]:
        # Survives pickling (a subprocess or a thread pool handing it back).
        return type(self), (self.shard_id, "")


class DuplicateWorkerId(ConsumerError):
    """Another live worker of the application uses this worker's ``worker_id``.

    Both would take each other's leases as their own. The worker that notices stops; give
    every worker process its own id (the default is unique per process and host).
    """

    def __init__(self, worker_id: str, shard_id: str) -> None:
        self.worker_id = worker_id
        self.shard_id = shard_id
        super().__init__(
            f"another live worker uses the worker id {worker_id!r}: it wrote the lease of "
            f"{shard_id} as its own; every worker needs a distinct worker_id"
        )

    def __reduce__(self) -> tuple[type[DuplicateWorkerId], tuple[str, str]]:
        return type(self), (self.worker_id, self.shard_id)


class LeaseStoreError(ConsumerError):
    """The lease store failed a call for a reason other than a lost compare-and-set."""


class LeaseStoreUnavailable(LeaseStoreError):
    """The lease store could not be reached or was too busy to answer in time."""

    retryable = True


class InvalidLeaseStoreURL(ConsumerError, ValueError):
    """A lease store URL that names no store this consumer knows, or names it wrongly."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"invalid lease store URL {url!r}: {reason}")

    def __reduce__(self) -> tuple[type[InvalidLeaseStoreURL], tuple[str, str]]:
        return type(self), (self.url, self.reason)
