"""The stream engine: every decision of the Kinesis Data Streams API, without IO.

Theory of operation
-------------------
``Engine.handle(action, body, now, context=...)`` takes a parsed request body, the
current time (epoch seconds) and who asked (:class:`~server.core.calls.RequestContext`),
and returns a :data:`~server.core.calls.Result` (a :class:`~server.core.calls.Reply`
holding the response body, or ``None`` for actions without output) or raises a
:class:`~server.core.errors.KinesisError`. It never sleeps, never reads a clock and never
touches a socket; the web layer does those. Responses hold ``bytes`` for blobs and
``float`` epoch seconds for timestamps; the wire codec turns them into base64 and JSON
numbers.

The engine is the coordinator. It owns the stream table (``server.core.streams``: every
stream, its shards and their lazy states) and three parts that act on it, split by the
state they change:

* ``control`` (``server.core.control``): stream metadata: create, delete, describe,
  list, tags, retention, limits;
* ``records`` (``server.core.records``): record writes and reads, sequence numbers,
  shard iterators;
* ``resharding`` (``server.core.resharder``): splits, merges and shard-count updates;
* ``settings`` (``server.core.settings``): encryption, capacity mode, enhanced
  monitoring and resource policies;
* ``consumers`` (``server.core.consumers``): registered stream consumers and their
  SubscribeToShard subscriptions (answered with an
  :class:`~server.core.calls.EventStream`, see ``server.core.subscription``).

Dispatch is read from the action registry (``server.core.actions``): each answered
action names its part and method. A request is validated against the action's input
shape (``server.core.validation``), then a control-plane call is counted against its
published rate, then the handler runs. Storage (``server.storage``) keeps metadata and
records: the parts call ``save_stream`` after every metadata change and ``append`` for
records.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from server.core.actions import ACTIONS, Action
from server.core.calls import (
    NO_CONTEXT,
    EventStream,
    Reply,
    RequestContext,
    Result,
    Validated,
)
from server.core.consumers import Consumers
from server.core.control import ControlPlane
from server.core.errors import LimitExceededException, UnknownOperationException
from server.core.hooks import FaultInjector, ThroughputGate
from server.core.iterators import IteratorCodec
from server.core.records import Records
from server.core.resharder import Resharder
from server.core.settings import StreamSettings
from server.core.shapes import Shape
from server.core.streams import EngineConfig, StreamTable
from server.core.validation import validate_shape
from server.storage.base import Storage

__all__ = ["Engine", "EngineConfig"]

_Handler = Callable[[Any, float], dict[str, Any] | EventStream | None]


class Engine:
    """The Kinesis Data Streams API as a synchronous state machine over a storage.

    ``throughput`` and ``faults`` are the seams of ``server.core.hooks`` (``None``: not
    consulted); ``rng`` makes ids and the iterator secret deterministic in tests.
    ``iterator_secret`` is a kept signing key (a durable data dir's), so iterators
    outlive a restart; without one the engine draws a fresh key from ``rng``.
    """

    def __init__(
        self,
        config: EngineConfig,
        storage: Storage,
        rng: random.Random,
        *,
        throughput: ThroughputGate | None = None,
        faults: FaultInjector | None = None,
        iterator_secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.rng = rng
        self.throughput = throughput
        self.faults = faults
        # Drawn even when unused so ids from a given seed do not depend on the storage.
        fresh = rng.randbytes(32)
        self.iterators = IteratorCodec(
            iterator_secret if iterator_secret is not None else fresh,
            config.iterator_ttl_seconds,
        )
        self.streams = StreamTable(config, storage, throughput)
        for meta in storage.load_streams():
            self.streams.adopt(meta)
        self.control = ControlPlane(self.streams, rng)
        self.records = Records(
            self.streams, rng, self.iterators, throughput=throughput, faults=faults
        )
        self.resharding = Resharder(self.streams, throughput)
        self.settings = StreamSettings(self.streams)
        self.consumers = Consumers(self.streams, self.records, rng, throughput=throughput)
        self._routes: dict[str, tuple[Action, _Handler, Shape]] = {}
        #: The handlers of validated requests for actions that validate themselves.
        self._validated: dict[str, _Handler] = {}
        for action in ACTIONS.values():
            if action.handler is not None:
                assert action.input is not None, f"{action.name} is answered without a shape"
                handler: _Handler = attrgetter(action.handler)(self)
                self._routes[action.name] = (action, handler, action.input)
                if action.validated_handler is not None:
                    self._validated[action.name] = attrgetter(action.validated_handler)(self)

    @property
    def actions(self) -> frozenset[str]:
        """The action names this engine answers."""
        return frozenset(self._routes)

    def handle(
        self,
        action: str,
        body: Any,
        now: float,
        *,
        context: RequestContext = NO_CONTEXT,
    ) -> Result:
        """Run one action: its result, or a :class:`KinesisError`.

        ``context`` says who asked and from where (the request id, the peer, the user
        agent, and the principal once requests are authenticated); calls made without a
        wire leave it at :data:`~server.core.calls.NO_CONTEXT`.
        """
        route = self._routes.get(action)
        if route is None:
            raise UnknownOperationException()
        entry, handler, shape = route
        if type(body) is Validated:
            assert body.action == action, f"{body.action} request given to {action}"
            handler = self._validated.get(action, handler)
        elif entry.validates_itself:
            return self._reply(handler(body, now))
        return self._reply(handler(self._admit(action, entry, shape, body, now), now))

    def validate(self, action: str, body: Any) -> Validated:
        """``body`` validated for ``action`` (both phases), for :meth:`handle`; raises
        the validation error. It reads no engine state, so it may run on any thread."""
        route = self._routes.get(action)
        if route is None:
            raise UnknownOperationException()
        return Validated(action, validate_shape(route[2], body))

    @staticmethod
    def _reply(result: dict[str, Any] | EventStream | None) -> Result:
        if isinstance(result, EventStream):
            return result
        return Reply(result)

    def _admit(self, action: str, entry: Action, shape: Shape, body: Any, now: float) -> Any:
        """The validated request, once a control-plane call is within its rate."""
        request = body.request if type(body) is Validated else validate_shape(shape, body)
        gate = self.throughput
        if gate is not None and entry.control_plane:
            name: str | None = request.get("StreamName")
            arn: str | None = request.get("StreamARN")
            if arn is None and "ConsumerARN" in request:
                arn = request["ConsumerARN"].partition("/consumer/")[0]
            if name is None and arn is not None:
                name = arn.rpartition("/")[2]
            if not gate.admit_control(action, name, now):
                # The service names the stream when there is one ("Rate exceeded for
                # stream S under account A.", the text SDK retry rules match on).
                where = f"stream {name} under account " if name else "account "
                raise LimitExceededException(
                    f"Rate exceeded for {where}{self.config.account_id}."
                )
        return request
