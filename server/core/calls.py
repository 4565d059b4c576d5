"""What goes into one engine call besides the body, and what comes out of it.

Theory of operation
-------------------
``Engine.handle(action, body, now, context=...)`` gets a :class:`RequestContext`: who
asked and from where (the request id the web layer stamps on the answer, the caller's
principal once requests are authenticated, the peer address, the ``User-Agent``). The
core never reads a socket or a header; the shell fills the context in.

The answer is a :data:`Result`, one of two kinds:

* :class:`Reply`: one response body (a dict, or ``None`` for actions without output),
  written at once;
* :class:`EventStream`: a response that is a sequence of events over time
  (SubscribeToShard). It stays sans-IO: the shell writes :attr:`EventStream.initial`
  first, then calls :meth:`EventStream.poll` with ``now``, writes the events it returns
  and sleeps until the deadline it names (or until its :attr:`~EventStream.wake_key`
  shard changes), until a poll says the stream has ended; then it calls
  :meth:`EventStream.close`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "NO_CONTEXT",
    "Event",
    "EventBatch",
    "EventStream",
    "Reply",
    "RequestContext",
    "Result",
    "Validated",
]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who made a request and from where, as the shell saw it."""

    request_id: str = ""
    """The ``x-amzn-RequestId`` the answer carries (empty when there is no wire)."""
    principal: str | None = None
    """The authenticated caller (an IAM ARN), or ``None`` when requests are not verified."""
    source_address: str | None = None
    """The peer's IP address, or ``None`` when unknown."""
    user_agent: str | None = None
    """The ``User-Agent`` header, or ``None`` when absent."""


#: The context of a call made without a wire (tests, benchmarks, embedded use).
NO_CONTEXT: Final = RequestContext()


@dataclass(frozen=True, slots=True)
class Reply:
    """A one-shot answer: the response body, or ``None`` for an empty 200."""

    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One message of a stream: an event (its ``:event-type``) or an exception.

    An exception message (``exception=True``) names the error code in ``event_type``
    (written as ``:exception-type``) and carries ``{"message": ...}``; it ends the stream.
    """

    event_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    exception: bool = False


@dataclass(frozen=True, slots=True)
class EventBatch:
    """What one :meth:`EventStream.poll` produced."""

    events: list[Event]
    """The events to write now, in order."""
    wake_at: float | None
    """When to poll next (epoch seconds), or ``None``: the stream has ended."""


class EventStream(ABC):
    """An answer written as a sequence of events (the shell drives it with ``now``)."""

    @property
    @abstractmethod
    def initial(self) -> dict[str, Any]:
        """The ``initial-response`` event's payload, written before any event."""

    @abstractmethod
    def poll(self, now: float) -> EventBatch:
        """The events due at ``now`` and when to ask again."""

    @property
    def wake_key(self) -> tuple[str, str] | None:
        """``(stream name, shard id)`` whose changes make a poll worth doing before the
        deadline (``StreamTable.on_shard_change``), or ``None``: only the deadline."""
        return None

    @property
    def expires_at(self) -> float | None:
        """When the stream ends at the latest (epoch seconds), or ``None``."""
        return None

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """The shell has stopped writing (the stream ended, the client left, shutdown)."""


@dataclass(frozen=True, slots=True)
class Validated:
    """A request already validated against its action's shape (``Engine.validate``,
    which touches no engine state, so a shell may run it on another thread): given to
    ``Engine.handle`` in place of the parsed body, it is not validated again."""

    action: str
    """The action whose shape it satisfies."""
    request: dict[str, Any]
    """The cleaned request (unknown members and nulls dropped, blobs decoded)."""


#: What ``Engine.handle`` returns.
Result = Reply | EventStream
