"""One SubscribeToShard subscription: the shard's records as events, pulled from storage.

Theory of operation
-------------------
A :class:`Subscription` holds no records: only its position (the next sequence number
to send) and a few times. Each :meth:`Subscription.poll` reads from storage what is
there at that position, so a subscriber that reads slowly simply falls behind and
catches up from storage; nothing is queued for it beyond the one event being written.
The shell polls when the shard changes (records appended, the shard closed, a takeover)
or at the deadline the poll names, whichever comes first.

What a poll answers, in order:

=============================================  ==========================================
situation                                      answer
=============================================  ==========================================
ended (taken over, released)                   nothing; the stream ends
consumer gone or stream deleted                ``ResourceNotFoundException``; ends
``now`` past ``started_at + 5 min``            nothing; the stream ends
consumer's fan-out budget in debt              nothing; poll again when it is repaid
records at the position                        one event (at most ``MAX_EVENT_RECORDS``
                                               records, ``MAX_EVENT_BYTES``); poll again
                                               at once if more may be waiting
caught up with a closed shard                  ``ChildShards`` event (no continuation
                                               number); the stream ends
caught up, nothing sent for ``HEARTBEAT``      an empty event (a valid continuation)
otherwise                                      nothing; poll again at the heartbeat
=============================================  ==========================================

``ContinuationSequenceNumber`` is the last record sent, so resubscribing with
AFTER_SEQUENCE_NUMBER continues exactly; before any record was sent it is the number
just before the position, at the least the shard's starting number (which no record
takes, so "after" it is the whole shard). ``MillisBehindLatest`` is how far the last
record sent is behind now, 0 once caught up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from server.core.calls import Event, EventBatch, EventStream
from server.core.render import child_shards
from server.core.streams import Shard, Stream

if TYPE_CHECKING:
    from server.core.consumers import Consumers

__all__ = [
    "EVENT_TYPE",
    "HEARTBEAT_SECONDS",
    "LIFETIME_SECONDS",
    "MAX_EVENT_BYTES",
    "MAX_EVENT_RECORDS",
    "Subscription",
]

#: The ``:event-type`` of every record event.
EVENT_TYPE: Final = "SubscribeToShardEvent"
#: A subscription ends this long after it started.
LIFETIME_SECONDS: Final = 300.0
#: An idle subscription gets an empty event at least this often (the service: every 5 s).
HEARTBEAT_SECONDS: Final = 4.0
#: At most this many record bytes (data + partition key) in one event: with the transport's
#: own buffer, what one subscription can hold in server memory.
MAX_EVENT_BYTES: Final = 1024 * 1024
#: At most this many records in one event.
MAX_EVENT_RECORDS: Final = 10_000


class Subscription(EventStream):
    """The event stream SubscribeToShard answers (driven by the shell with ``now``)."""

    def __init__(
        self,
        owner: Consumers,
        stream: Stream,
        shard: Shard,
        consumer_arn: str,
        position: int,
        now: float,
    ) -> None:
        self.owner = owner
        self.stream = stream
        self.shard = shard
        self.consumer_arn = consumer_arn
        self.shard_id = shard.meta.shard_id
        self.position = position
        """The next sequence number to send."""
        self.started_at = now
        self.last_event_at = now
        self.last_sent: int | None = None
        self.ended = False

    @property
    def initial(self) -> dict[str, Any]:
        """SubscribeToShard's output has no members besides the event stream."""
        return {}

    @property
    def wake_key(self) -> tuple[str, str]:
        """The shard whose changes this subscription waits for."""
        return (self.stream.meta.name, self.shard_id)

    @property
    def expires_at(self) -> float:
        """Five minutes after the subscription started."""
        return self.started_at + LIFETIME_SECONDS

    def end(self) -> None:
        """End the stream at the next poll (taken over, deregistered, released)."""
        self.ended = True

    def close(self) -> None:
        """The shell stopped writing: forget the subscription."""
        self.owner.release(self)

    def _continuation(self) -> str:
        if self.last_sent is not None:
            return str(self.last_sent)
        # No record is numbered the shard's starting number, so "after it" is the start.
        return str(self.shard.floor(max(self.position - 1, self.shard.base)))

    def _finish(self, events: list[Event]) -> EventBatch:
        self.ended = True
        return EventBatch(events, None)

    def poll(self, now: float) -> EventBatch:
        """The events due at ``now`` and when to poll next (see the module's table)."""
        if self.ended:
            return self._finish([])
        owner = self.owner
        stream = self.stream
        name = stream.meta.name
        if not owner.consumer_active(stream, self.consumer_arn, now):
            return self._finish([Event(
                "ResourceNotFoundException",
                {"message": f"Consumer {self.consumer_arn} under account "
                 f"{owner.table.account} not found."},
                exception=True,
            )])
        if now >= self.expires_at:
            return self._finish([])
        heartbeat = min(self.last_event_at + HEARTBEAT_SECONDS, self.expires_at)
        gate = owner.throughput
        if gate is not None:
            wait = gate.fanout_wait(self.consumer_arn, self.shard_id, now)
            if wait > 0:
                return EventBatch([], min(now + wait, heartbeat))
        storage = owner.table.storage
        stored = storage.read(
            name, self.shard_id, self.position, MAX_EVENT_RECORDS, MAX_EVENT_BYTES
        )
        last = storage.last_sequence_number(name, self.shard_id)
        if stored:
            self.position = stored[-1][0] + 1
            self.last_sent = stored[-1][0]
            caught_up = last is None or self.position > last
            size = 0
            records = []
            for seq, arrival, key, data in stored:
                size += len(data) + len(key)
                records.append({
                    "SequenceNumber": str(seq),
                    "ApproximateArrivalTimestamp": arrival,
                    "Data": data,
                    "PartitionKey": key,
                })
            if gate is not None:
                gate.record_fanout(self.consumer_arn, self.shard_id, size, now)
            self.last_event_at = now
            event = Event(EVENT_TYPE, {
                "Records": records,
                "ContinuationSequenceNumber": self._continuation(),
                "MillisBehindLatest": 0
                if caught_up
                else max(0, int((now - stored[-1][1]) * 1000)),
            })
            # More may be waiting, or a closed shard's ChildShards: poll again at once
            # (the budget check paces it); else wait for the shard or the heartbeat.
            if caught_up and self.shard.meta.is_open:
                return EventBatch([event], min(now + HEARTBEAT_SECONDS, self.expires_at))
            return EventBatch([event], now)
        if not self.shard.meta.is_open:
            shards = (s.meta for s in stream.shards.values())
            return self._finish([Event(EVENT_TYPE, {
                "Records": [],
                "MillisBehindLatest": 0,
                "ChildShards": child_shards(shards, self.shard_id),
            })])
        if now >= heartbeat:
            self.last_event_at = now
            event = Event(EVENT_TYPE, {
                "Records": [],
                "ContinuationSequenceNumber": self._continuation(),
                "MillisBehindLatest": 0,
            })
            return EventBatch([event], min(now + HEARTBEAT_SECONDS, self.expires_at))
        return EventBatch([], heartbeat)

