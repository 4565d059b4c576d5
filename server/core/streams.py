"""The stream table: every stream's metadata, its shards, and their lazy states.

Theory of operation
-------------------
A :class:`Stream` is a stream's :class:`~server.storage.base.StreamMeta` plus what the
engine needs to serve it quickly: a :class:`Shard` per shard (its sequence-number base,
the next number it hands out, the last arrival time) and a routing table over the open
shards (their sorted starting hash keys, for bisecting a record's hash key).

Streams advance through their states lazily, from ``now``, whenever they are looked at
(no timers)::

    CREATING --(state_delay)--> ACTIVE <--(state_delay)-- UPDATING (after a reshard)
    any      --DeleteStream---> DELETING --(state_delay)--> gone

Every lookup goes through :meth:`StreamTable.stream` and its variants, which apply a due
state change first and answer the service's "not found" / "not ACTIVE" errors.
Retention is lazy too: a shard's expired records are trimmed when it is read, and closed
shards whose records have all expired are forgotten when their stream is listed or read.
The table saves metadata to storage after every change it makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.core.errors import (
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from server.core.hooks import ThroughputGate
from server.core.retention import cutoff as retention_cutoff
from server.core.retention import expired_shards
from server.core.seqnum import (
    ARRIVAL_SHIFT,
    ARRIVAL_SPAN,
    INDEX_SPAN,
    INDEX_UNIT,
    ParsedSequenceNumber,
    next_index,
    parse_sequence_number,
    sequence_head,
)
from server.storage.base import ShardMeta, Storage, StreamMeta

__all__ = ["DATA_STATES", "MAX_SHARD_INDEX", "EngineConfig", "Shard", "Stream", "StreamTable",
           "resolve_shard_id"]

#: The largest shard index a shard id may name (a Java int).
MAX_SHARD_INDEX = 2**31 - 1


def resolve_shard_id(text: str) -> str | None:
    """The shard id a request's ``ShardId`` names, as the service reads it: by the number
    after its last ``-`` (``anything-2`` and ``2`` are ``shardId-000000000002``); ``None``
    when that is not a number in ``0..2147483647``."""
    digits = text.rpartition("-")[2]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 40:
        return None
    index = int(digits)
    return None if index > MAX_SHARD_INDEX else f"shardId-{index:012d}"


#: What a state turns into once ``state_delay`` has passed (``None``: the stream is gone).
_NEXT_STATE: dict[str, str | None] = {"CREATING": "ACTIVE", "UPDATING": "ACTIVE", "DELETING": None}
#: States in which records can be written and read.
DATA_STATES = frozenset({"ACTIVE", "UPDATING"})


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's settings (a subset of ``server.ServerConfig``)."""

    region: str = "us-east-1"
    account_id: str = "000000000000"
    shard_limit: int = 500
    """The account's shard quota: open shards over all streams."""
    state_delay_seconds: float = 0.05
    """How long CREATING, UPDATING and DELETING last."""
    iterator_ttl_seconds: float = 300.0


class Shard:
    """A shard's metadata plus what the engine needs to write to it quickly.

    ``next_seq`` is the lowest number the next record can take (its sequence index with
    arrival 0): the record's number is ``next_seq + arrival_part(arrival)``, and taking it
    moves ``next_seq`` on by ``INDEX_UNIT``. ``last`` is the highest number the shard holds
    (from storage after a restart), ``None`` for none.
    """

    __slots__ = ("base", "created", "head", "last_arrival", "last_seq", "meta", "next_seq")

    def __init__(self, meta: ShardMeta, last: int | None = None) -> None:
        self.meta = meta
        #: The shard's StartingSequenceNumber (TRIM_HORIZON's position).
        self.base = meta.starting_sequence_number
        self.created = int(meta.created_at)
        self.head = sequence_head(self.created, meta.index)
        self.next_seq = self.head + next_index(self.head, last) * INDEX_UNIT
        #: The last number handed out (the starting number before any record).
        self.last_seq = self.base if last is None else max(last, self.base)
        self.last_arrival = 0.0

    def owns(self, parsed: ParsedSequenceNumber) -> bool:
        """Whether a number with these fields may be this shard's (as opposed to one of an
        earlier stream's shard with the same index); the shard index is checked apart."""
        if parsed.origin == (2, self.created % ARRIVAL_SPAN):
            return True
        own = parse_sequence_number(self.base)
        return own is not None and parsed.origin == own.origin

    def order_after(self, parsed: ParsedSequenceNumber) -> None:
        """SequenceNumberForOrdering: the next record is numbered above a number of this
        shard (a number of another shard, or one below the next, changes nothing)."""
        if parsed.version != 2 or parsed.shard_index != self.meta.index:
            return
        if parsed.created != self.created % ARRIVAL_SPAN or parsed.counter + 1 >= INDEX_SPAN:
            return
        self.next_seq = max(self.next_seq, self.head + (parsed.counter + 1) * INDEX_UNIT)

    def floor(self, value: int) -> int:
        """The greatest number at or below ``value`` that this shard could hand out: what a
        position between two numbers is named by (a subscription's continuation)."""
        if value < self.head:
            return value
        index, rest = divmod(value - self.head, INDEX_UNIT)
        arrival = min(rest >> ARRIVAL_SHIFT, ARRIVAL_SPAN - 1)
        return self.head + index * INDEX_UNIT + (arrival << ARRIVAL_SHIFT)


class Stream:
    """A stream's metadata plus its routing table over the open shards."""

    __slots__ = ("created_ms", "meta", "route_shards", "route_starts", "shards")

    def __init__(self, meta: StreamMeta) -> None:
        self.meta = meta
        self.created_ms = int(meta.created_at * 1000)
        self.shards: dict[str, Shard] = {}
        self.route_starts: list[int] = []
        self.route_shards: list[Shard] = []

    def rebuild_routes(self) -> None:
        """Recompute the sorted open-shard table (after create, load or reshard)."""
        open_shards = sorted(
            (s for s in self.shards.values() if s.meta.is_open),
            key=lambda s: s.meta.starting_hash_key,
        )
        self.route_starts = [s.meta.starting_hash_key for s in open_shards]
        self.route_shards = open_shards


class StreamTable:
    """Every stream by name, with lookups that apply due state changes first."""

    def __init__(
        self, config: EngineConfig, storage: Storage, throughput: ThroughputGate | None
    ) -> None:
        self.config = config
        self.storage = storage
        self.throughput = throughput
        self.account = config.account_id
        self.by_name: dict[str, Stream] = {}
        #: Called with ``(stream name, shard id)`` when a shard's readers should look again
        #: (records appended, the shard closed, a subscription taken over); the shell
        #: wakes the shard's SubscribeToShard streams. ``None``: nobody listens.
        self.on_shard_change: Callable[[str, str], None] | None = None

    def shard_changed(self, stream_name: str, shard_id: str) -> None:
        """Tell the listener (if any) that a shard has something new for its readers."""
        listener = self.on_shard_change
        if listener is not None:
            listener(stream_name, shard_id)

    def adopt(self, meta: StreamMeta) -> Stream:
        """Add a stream (new or loaded from storage), numbering on from its stored records."""
        stream = Stream(meta)
        for shard_meta in meta.shards:
            # A shard's first record is numbered above its StartingSequenceNumber (as on
            # the service), so AFTER_SEQUENCE_NUMBER of the starting number reads the whole
            # shard: an idle subscription's continuation can name it.
            last = self.storage.last_sequence_number(meta.name, shard_meta.shard_id)
            stream.shards[shard_meta.shard_id] = Shard(shard_meta, last)
        stream.rebuild_routes()
        self.by_name[meta.name] = stream
        return stream

    def advance(self, stream: Stream, now: float) -> Stream | None:
        """Apply a due state change; ``None`` if the stream has finished deleting."""
        meta = stream.meta
        due = meta.status_since + self.config.state_delay_seconds
        if meta.status in _NEXT_STATE and now >= due:
            nxt = _NEXT_STATE[meta.status]
            if nxt is None:
                del self.by_name[meta.name]
                self.storage.delete_stream(meta.name)
                if self.throughput is not None:
                    self.throughput.forget_stream(meta.name)
                return None
            meta.status = nxt
            meta.status_since = now
            self.storage.save_stream(meta)
        return stream

    def find(self, name: str, now: float) -> Stream | None:
        """The stream called ``name`` as of ``now``, or ``None``."""
        stream = self.by_name.get(name)
        if stream is not None:
            stream = self.advance(stream, now)
        return stream

    def all(self, now: float) -> list[Stream]:
        """Every stream that still exists at ``now``."""
        return [s for s in list(self.by_name.values()) if self.advance(s, now) is not None]

    def not_found(self, name: str) -> ResourceNotFoundException:
        """The service's answer for a stream that does not exist."""
        return ResourceNotFoundException(f"Stream {name} under account {self.account} not found.")

    def stream_name(self, request: dict[str, Any]) -> str:
        """The stream a request names, by StreamName or StreamARN (which must agree)."""
        name: str | None = request.get("StreamName")
        arn: str | None = request.get("StreamARN")
        if arn is None:
            assert name is not None  # validation requires one of the two
            return name
        prefix = f"arn:aws:kinesis:{self.config.region}:{self.account}:stream/"
        arn_name = arn[len(prefix) :] if arn.startswith(prefix) else None
        if arn_name is None:
            parts = arn.split(":", 5)
            account = parts[4] if len(parts) > 4 else self.account
            raise ResourceNotFoundException(
                f"Stream {arn.rpartition('/')[2]} under account {account} not found."
            )
        if name is not None and name != arn_name:
            raise InvalidArgumentException(
                f"StreamName {name} and StreamARN {arn} do not refer to the same stream."
            )
        return arn_name

    def stream(self, request: dict[str, Any], now: float) -> Stream:
        """The stream a request names, in any state."""
        name = self.stream_name(request)
        stream = self.by_name.get(name)
        if stream is None or self.advance(stream, now) is None:
            raise self.not_found(name)
        return stream

    def data_stream(self, request: dict[str, Any], now: float) -> Stream:
        """A stream that takes reads and writes (ACTIVE or UPDATING)."""
        stream = self.stream(request, now)
        if stream.meta.status not in DATA_STATES:
            raise self.not_found(stream.meta.name)
        return stream

    def active_stream(self, request: dict[str, Any], now: float) -> Stream:
        """A stream whose settings may change now (ACTIVE only)."""
        stream = self.stream(request, now)
        if stream.meta.status != "ACTIVE":
            raise ResourceInUseException(
                f"Stream {stream.meta.name} under account {self.account} not ACTIVE, "
                f"instead in state {stream.meta.status}"
            )
        return stream

    def open_shard_count(self, now: float) -> int:
        """Open shards over all streams (what the account's shard limit counts)."""
        return sum(len(s.route_shards) for s in self.all(now))

    def check_shard_limit(self, extra: int, now: float) -> None:
        """Refuse ``extra`` more open shards if they would pass the account's limit."""
        current = self.open_shard_count(now)
        if extra > 0 and current + extra > self.config.shard_limit:
            raise self.shard_limit_error(current, extra)

    def shard_limit_error(self, current: int, extra: int) -> LimitExceededException:
        """The service's refusal of ``extra`` shards over the account's limit."""
        return LimitExceededException(
            f"This request would exceed the shard limit for the account {self.account} in "
            f"{self.config.region}. Current shard count for the account: {current}. Limit: "
            f"{self.config.shard_limit}. Number of additional shards that would have resulted "
            f"from this request: {extra}. Refer to the AWS Service Limits page "
            "(http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) "
            "for current limits and how to request higher limits."
        )

    def trim(self, stream: Stream, shard: Shard, now: float) -> None:
        """Retention: drop the shard's records older than the stream's retention.

        Lazily, on reads (rules in ``server.core.retention``).
        """
        cutoff = retention_cutoff(stream.meta.retention_hours, now)
        if cutoff > 0:
            self.storage.trim(stream.meta.name, shard.meta.shard_id, cutoff)

    def expire_closed_shards(self, stream: Stream, now: float) -> None:
        """Forget closed shards whose records have all expired (the service stops listing them)."""
        if len(stream.shards) == len(stream.route_shards):
            return  # no closed shard: the common case costs one comparison
        meta = stream.meta
        gone = expired_shards(meta.shards, meta.retention_hours, now)
        if not gone:
            return
        for shard_meta in gone:
            self.trim(stream, stream.shards.pop(shard_meta.shard_id), now)
        meta.shards = [m for m in meta.shards if m.shard_id in stream.shards]
        self.storage.save_stream(meta)
