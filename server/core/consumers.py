"""Stream consumers (enhanced fan-out): register, describe, list, deregister, subscribe.

Theory of operation
-------------------
A consumer is a name registered on a stream; it lives in the stream's metadata
(``StreamMeta.consumers``, plain dicts, saved to storage after every change) and goes
through its states lazily, from ``now``, like streams do::

    CREATING --(state_delay)--> ACTIVE --DeregisterStreamConsumer--> DELETING
    DELETING --(state_delay)--> gone

Its ARN is ``<stream ARN>/consumer/<name>:<creation epoch seconds>``, so a name
registered again later gets a new ARN. A stream holds at most 20 consumers (deleting
ones included, as the service counts them).

SubscribeToShard (``subscribe_to_shard``) answers with a
:class:`~server.core.subscription.Subscription`, an event stream the shell drives. One
subscription per consumer and shard is current; the rules, per consumer and shard:

=========================================  ===============================================
a new call while ...                       answer
=========================================  ===============================================
the current one started less than 5 s ago  ``ResourceInUseException``
the current one started 5 s ago or more    the new one takes over; the old one ends
the previous call came under 1 s ago       ``LimitExceededException`` (only with limits on)
=========================================  ===============================================
"""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson

from server.core.errors import (
    DryRunOperationException,
    ExpiredNextTokenException,
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from server.core.hooks import ThroughputGate
from server.core.records import Records
from server.core.render import ms
from server.core.streams import DATA_STATES, Stream, StreamTable, resolve_shard_id
from server.core.subscription import Subscription

__all__ = ["MAX_CONSUMERS", "TAKEOVER_SECONDS", "Consumers", "consumer_json"]

#: Consumers a stream may hold.
MAX_CONSUMERS = 20
#: A subscription younger than this refuses a second one for its consumer and shard.
TAKEOVER_SECONDS = 5.0
_LIST_DEFAULT = 100
_TOKEN_TTL_SECONDS = 300.0
_NEXT_STATE: dict[str, str | None] = {"CREATING": "ACTIVE", "DELETING": None}

Consumer = dict[str, Any]


def consumer_json(consumer: Consumer) -> dict[str, Any]:
    """A ``Consumer`` as RegisterStreamConsumer and ListStreamConsumers answer it."""
    return {
        "ConsumerName": consumer["name"],
        "ConsumerARN": consumer["arn"],
        "ConsumerStatus": consumer["status"],
        "ConsumerCreationTimestamp": consumer["created_at"],
    }


class Consumers:
    """The consumer actions and the live subscriptions over the engine's stream table."""

    def __init__(
        self,
        table: StreamTable,
        records: Records,
        rng: random.Random,
        *,
        throughput: ThroughputGate | None = None,
    ) -> None:
        self.table = table
        self.records = records
        self.rng = rng
        self.throughput = throughput
        self.config = table.config
        self._account = table.account
        #: The current subscription per (consumer ARN, shard id).
        self.subscriptions: dict[tuple[str, str], Subscription] = {}

    # -- lookups ---------------------------------------------------------------------

    def _advance(self, stream: Stream, now: float) -> list[Consumer]:
        """The stream's consumers as of ``now`` (due state changes applied and saved)."""
        meta = stream.meta
        changed = False
        kept: list[Consumer] = []
        delay = self.config.state_delay_seconds
        for consumer in meta.consumers:
            state = consumer["status"]
            if state in _NEXT_STATE and now >= consumer["status_since"] + delay:
                nxt = _NEXT_STATE[state]
                changed = True
                if nxt is None:
                    continue
                consumer["status"] = nxt
                consumer["status_since"] = now
            kept.append(consumer)
        if changed:
            meta.consumers = kept
            self.table.storage.save_stream(meta)
        return meta.consumers

    def active_count(self, stream: Stream, now: float) -> int:
        """How many consumers the stream has (DescribeStreamSummary's ConsumerCount)."""
        return len(self._advance(stream, now))

    def _stream_by_arn(self, arn: str, now: float) -> Stream:
        return self.table.stream({"StreamARN": arn}, now)

    def _not_found(self, what: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(
            f"Consumer {what} under account {self._account} not found."
        )

    def find(self, request: dict[str, Any], now: float) -> tuple[Stream, Consumer]:
        """The consumer a request names: by ConsumerARN, or by StreamARN and ConsumerName."""
        arn: str | None = request.get("ConsumerARN")
        name: str | None = request.get("ConsumerName")
        stream_arn: str | None = request.get("StreamARN")
        if arn is not None:
            stream_part, _, _rest = arn.partition("/consumer/")
            stream_name = stream_part.rpartition("/")[2]
            stream = self.table.find(stream_name, now)
            if stream is None or not arn.startswith(stream.meta.arn + "/consumer/"):
                raise self._not_found(arn)
            for consumer in self._advance(stream, now):
                if consumer["arn"] == arn:
                    return stream, consumer
            raise self._not_found(arn)
        if stream_arn is None or name is None:
            raise InvalidArgumentException(
                "Either ConsumerARN or both ConsumerName and StreamARN must be provided."
            )
        stream = self._stream_by_arn(stream_arn, now)
        for consumer in self._advance(stream, now):
            if consumer["name"] == name:
                return stream, consumer
        raise self._not_found(name)

    # -- actions ---------------------------------------------------------------------

    def register_stream_consumer(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """RegisterStreamConsumer: CREATING now, ACTIVE after the state delay."""
        stream = self._stream_by_arn(request["StreamARN"], now)
        meta = stream.meta
        if meta.status not in DATA_STATES:
            raise ResourceInUseException(
                f"Stream {meta.name} under account {self._account} not ACTIVE, "
                f"instead in state {meta.status}"
            )
        name: str = request["ConsumerName"]
        consumers = self._advance(stream, now)
        for consumer in consumers:
            if consumer["name"] == name:
                raise ResourceInUseException(
                    f"Consumer {consumer['arn']} under account {self._account} already exists."
                )
        if len(consumers) >= MAX_CONSUMERS:
            raise LimitExceededException(
                f"Consumer limit of {MAX_CONSUMERS} has been reached for stream {meta.arn}."
            )
        created = ms(now)
        consumer = {
            "name": name,
            "arn": f"{meta.arn}/consumer/{name}:{int(created)}",
            "status": "CREATING",
            "status_since": now,
            "created_at": created,
            "tags": dict(request.get("Tags", {})),
        }
        consumers.append(consumer)
        self.table.storage.save_stream(meta)
        return {"Consumer": consumer_json(consumer)}

    def describe_stream_consumer(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """DescribeStreamConsumer: by ARN, or by stream ARN and name."""
        stream, consumer = self.find(request, now)
        description = consumer_json(consumer)
        description["StreamARN"] = stream.meta.arn
        return {"ConsumerDescription": description}

    def list_stream_consumers(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """ListStreamConsumers: in registration order, paged by MaxResults and NextToken."""
        stream = self._stream_by_arn(request["StreamARN"], now)
        limit: int = request.get("MaxResults", _LIST_DEFAULT)
        start = 0
        token: str | None = request.get("NextToken")
        if token is not None:
            start = self._read_token(token, stream, now)
        consumers = self._advance(stream, now)
        page = consumers[start : start + limit]
        result: dict[str, Any] = {"Consumers": [consumer_json(c) for c in page]}
        if start + limit < len(consumers):
            result["NextToken"] = self._make_token(stream, start + limit, now)
        return result

    def _make_token(self, stream: Stream, offset: int, now: float) -> str:
        doc = {"s": stream.meta.arn, "o": offset, "t": now}
        return base64.urlsafe_b64encode(orjson.dumps(doc)).decode("ascii")

    def _read_token(self, token: str, stream: Stream, now: float) -> int:
        try:
            doc = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
            offset, issued, arn = int(doc["o"]), float(doc["t"]), str(doc["s"])
        except (ValueError, KeyError, TypeError):
            raise InvalidArgumentException(f"Invalid NextToken {token}.") from None
        if arn != stream.meta.arn:
            raise InvalidArgumentException(
                f"NextToken {token} does not belong to stream {stream.meta.arn}."
            )
        if now - issued > _TOKEN_TTL_SECONDS:
            raise ExpiredNextTokenException(f"NextToken {token} has expired.")
        return max(0, offset)

    def deregister_stream_consumer(self, request: dict[str, Any], now: float) -> None:
        """DeregisterStreamConsumer: DELETING now, gone after the state delay."""
        stream, consumer = self.find(request, now)
        if consumer["status"] == "DELETING":
            raise self._not_found(consumer["arn"])
        consumer["status"] = "DELETING"
        consumer["status_since"] = now
        stream.meta.policies.pop(consumer["arn"], None)
        self.table.storage.save_stream(stream.meta)
        # Its subscriptions look now (and end) rather than at their next heartbeat.
        for arn, shard_id in list(self.subscriptions):
            if arn == consumer["arn"]:
                self.table.shard_changed(stream.meta.name, shard_id)

    def consumer_active(self, stream: Stream, arn: str, now: float) -> bool:
        """Whether ``arn`` is still an ACTIVE consumer of ``stream`` (a subscription's check)."""
        if self.table.find(stream.meta.name, now) is not stream or stream.meta.status == "DELETING":
            return False
        return any(
            c["arn"] == arn and c["status"] == "ACTIVE" for c in self._advance(stream, now)
        )

    def subscribe_to_shard(self, request: dict[str, Any], now: float) -> Subscription:
        """SubscribeToShard: an event stream of the shard's records for one consumer."""
        stream, consumer = self.find(request, now)
        arn: str = consumer["arn"]
        if consumer["status"] != "ACTIVE":
            raise ResourceInUseException(
                f"Consumer {arn} under account {self._account} is not in ACTIVE state."
            )
        meta = stream.meta
        if meta.status not in DATA_STATES:
            raise ResourceInUseException(
                f"Stream {meta.name} under account {self._account} not ACTIVE, "
                f"instead in state {meta.status}"
            )
        shard_id: str = resolve_shard_id(request["ShardId"]) or request["ShardId"]
        self.table.expire_closed_shards(stream, now)
        shard = stream.shards.get(shard_id)
        if shard is None:
            raise ResourceNotFoundException(
                f"Shard {shard_id} in stream {meta.name} under account {self._account} "
                "does not exist"
            )
        position_request: dict[str, Any] = request["StartingPosition"]
        self.table.trim(stream, shard, now)
        position = self.records.start_position(
            stream, shard, position_request["Type"], position_request.get("SequenceNumber"),
            position_request.get("Timestamp"), now, "SubscribeToShard",
        )
        key = (arn, shard_id)
        current = self.subscriptions.get(key)
        if (
            current is not None
            and not current.ended
            and now - current.started_at < TAKEOVER_SECONDS
        ):
            raise ResourceInUseException(
                f"Another active subscription exists for consumer {arn} and shard "
                f"{shard_id} in stream {meta.name} under account {self._account}."
            )
        gate = self.throughput
        if gate is not None and not gate.admit_control(
            "SubscribeToShard", f"{meta.name}/{arn}/{shard_id}", now
        ):
            raise LimitExceededException(
                f"Rate exceeded for consumer {arn} and shard {shard_id} in stream "
                f"{meta.name} under account {self._account}."
            )
        if request.get("DryRun"):
            raise DryRunOperationException()
        if current is not None and not current.ended:
            current.end()
            self.table.shard_changed(meta.name, shard_id)
        subscription = Subscription(self, stream, shard, arn, position, now)
        self.subscriptions[key] = subscription
        return subscription

    def release(self, subscription: Subscription) -> None:
        """Forget a finished subscription (the shell calls this when it stops writing)."""
        subscription.end()
        key = (subscription.consumer_arn, subscription.shard_id)
        if self.subscriptions.get(key) is subscription:
            del self.subscriptions[key]
