"""The stream engine: every decision of the Kinesis Data Streams API, without IO.

Theory of operation
-------------------
``Engine.handle(action, body, now)`` takes a parsed JSON request body and the current
time (epoch seconds) and returns the response body (a dict, or ``None`` for actions
without output) or raises a :class:`~server.core.errors.KinesisError`. It never
sleeps, never reads a clock and never touches a socket; the web layer does those.
Responses hold ``bytes`` for blobs and ``float`` epoch seconds for timestamps; the
wire codec turns them into base64 and JSON numbers.

Streams advance through their states lazily, from ``now``, whenever they are looked at
(no timers)::

    CREATING --(state_delay)--> ACTIVE <--(state_delay)-- UPDATING (resharding, issue 3)
    any      --DeleteStream---> DELETING --(state_delay)--> gone

Records go to the open shard whose hash-key range holds the record's hash key (MD5 of
the partition key or the explicit hash key), found by bisecting the sorted range starts.
Each shard hands out sequence numbers ``base + counter`` (see ``seqnum``) with a
non-decreasing arrival time. Shard iterators are self-contained signed tokens
(``iterators``), so reading needs no per-iterator state.

Storage (``server.storage``) keeps metadata and records; the engine calls
``save_stream`` after every metadata change and ``append`` for records.
"""

from __future__ import annotations

import math
import random
import re
import string
from base64 import b64decode, b64encode
from binascii import Error as BinasciiError
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from kpl.protocol.hashing import EXPLICIT_HASH_KEY_RE as _EXPLICIT_HASH_KEY
from kpl.protocol.hashing import MAX_HASH_KEY, partition_key_hash
from kpl.protocol.hashing import uniform_ranges as _hash_ranges
from kpl.protocol.limits import (
    DEFAULT_RETENTION_HOURS,
    GET_RECORDS_MAX_BYTES,
    GET_RECORDS_MAX_LIMIT,
    MAX_PARTITION_KEY_LENGTH,
    MAX_RETENTION_HOURS,
    MIB,
    MIN_RETENTION_HOURS,
    PUT_RECORDS_MAX_BYTES,
    PUT_RECORDS_MAX_BYTES_LARGE,
)
from server.core.errors import (
    DryRunOperationException,
    ExpiredNextTokenException,
    InvalidArgumentException,
    LimitExceededException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    UnknownOperationException,
    ValidationException,
    for_code,
)
from server.core.hooks import FaultInjector, ThroughputGate
from server.core.iterators import IteratorCodec, IteratorState
from server.core.resharding import (
    Merge,
    ScalingHistory,
    check_merge,
    check_split,
    check_target,
    closed_shard_error,
    plan_uniform_scaling,
    shard_not_found,
)
from server.core.retention import cutoff as retention_cutoff
from server.core.retention import expired_shards
from server.core.seqnum import COUNTER_SPAN, parse_sequence_number, shard_base
from server.core.validation import DATA, constraint_error, decode_blob, validate
from server.storage.base import ShardMeta, Storage, StoredRecord, StreamMeta

__all__ = ["Engine", "EngineConfig"]

#: What a state turns into once ``state_delay`` has passed (``None``: the stream is gone).
_NEXT_STATE: dict[str, str | None] = {"CREATING": "ACTIVE", "UPDATING": "ACTIVE", "DELETING": None}
#: States in which records can be written and read.
_DATA_STATES = frozenset({"ACTIVE", "UPDATING"})
_ON_DEMAND_SHARDS = 4
_ON_DEMAND_STREAM_LIMIT = 50
_MAX_TAGS = 50
_TOKEN_TTL_MS = 300_000
_SHARD_ID = re.compile(r"shardId-(\d{1,20})")
#: GetShardIterator reads a shard id as the service does: the digits after one dash (or
#: bare digits), so ``shardId-1`` is ``shardId-000000000001``; anything else is unknown.
_LOOSE_SHARD_ID = re.compile(r"(?:[^-]*-)?(\d{1,40})")
_MAX_SHARD_INDEX = 2**31 - 1
_STAND_IN_ENTRIES = [{"Data": "", "PartitionKey": "k"}]
_TAG_PUNCTUATION = frozenset("_.:/=+-@% ")
_ID_CHARS = string.ascii_lowercase + string.digits
_CONTROL_ACTIONS = frozenset(
    {
        "CreateStream",
        "DeleteStream",
        "DescribeStream",
        "DescribeStreamSummary",
        "ListStreams",
        "ListShards",
        "AddTagsToStream",
        "RemoveTagsFromStream",
        "ListTagsForStream",
        "IncreaseStreamRetentionPeriod",
        "DecreaseStreamRetentionPeriod",
        "DescribeLimits",
        "UpdateMaxRecordSize",
        "SplitShard",
        "MergeShards",
        "UpdateShardCount",
    }
)


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


class _Shard:
    """A shard's metadata plus what the engine needs to write to it quickly."""

    __slots__ = ("base", "last_arrival", "meta", "next_seq", "seq_limit")

    def __init__(self, meta: ShardMeta, base: int, next_seq: int) -> None:
        self.meta = meta
        self.base = base
        self.next_seq = next_seq
        self.seq_limit = base + COUNTER_SPAN
        self.last_arrival = 0.0


class _Stream:
    """A stream's metadata plus its routing table over the open shards."""

    __slots__ = ("created_ms", "epoch", "meta", "route_shards", "route_starts", "shards")

    def __init__(self, meta: StreamMeta) -> None:
        self.meta = meta
        self.created_ms = int(meta.created_at * 1000)
        self.epoch = int(meta.created_at)
        self.shards: dict[str, _Shard] = {}
        self.route_starts: list[int] = []
        self.route_shards: list[_Shard] = []

    def rebuild_routes(self) -> None:
        """Recompute the sorted open-shard table (after create, load or reshard)."""
        open_shards = sorted(
            (s for s in self.shards.values() if s.meta.is_open),
            key=lambda s: s.meta.starting_hash_key,
        )
        self.route_starts = [s.meta.starting_hash_key for s in open_shards]
        self.route_shards = open_shards


def _shard_json(meta: ShardMeta) -> dict[str, Any]:
    shard: dict[str, Any] = {"ShardId": meta.shard_id}
    if meta.parent_shard_id is not None:
        shard["ParentShardId"] = meta.parent_shard_id
    if meta.adjacent_parent_shard_id is not None:
        shard["AdjacentParentShardId"] = meta.adjacent_parent_shard_id
    shard["HashKeyRange"] = {
        "StartingHashKey": str(meta.starting_hash_key),
        "EndingHashKey": str(meta.ending_hash_key),
    }
    seq_range = {"StartingSequenceNumber": str(meta.starting_sequence_number)}
    if meta.ending_sequence_number is not None:
        seq_range["EndingSequenceNumber"] = str(meta.ending_sequence_number)
    shard["SequenceNumberRange"] = seq_range
    return shard


def _ms(seconds: float) -> float:
    """Epoch seconds with millisecond precision, as the service answers timestamps."""
    return math.floor(seconds * 1000.0) / 1000.0


def _record_too_large(
    path: str, data: bytes, key_bytes: int, max_size: int
) -> ValidationException:
    """The refusal of a record whose data plus UTF-8 partition key exceed ``max_size``.

    A data blob that alone exceeds the limit gets the service's own words (captured
    from AWS in public bug reports). For data that fits alone but not with its key we
    found no capture of the service's answer (only mocks, which reuse the data-length
    text with the data-only limit), so that message is ours: the same exception and
    shape, naming both sizes and the limit.
    """
    if len(data) > max_size:
        rule = f"Member must have length less than or equal to {max_size}"
    else:
        rule = (
            f"Member's length plus the partition key's UTF-8 length ({len(data)} + "
            f"{key_bytes} = {len(data) + key_bytes} bytes) must be less than or equal "
            f"to {max_size}"
        )
    return constraint_error(path, DATA, data, rule)


def _tag_chars_ok(text: str) -> bool:
    return all(c.isalnum() or c.isspace() or c in _TAG_PUNCTUATION for c in text)


class Engine:
    """The Kinesis Data Streams API as a synchronous state machine over a storage.

    ``throughput`` and ``faults`` are the issue-3 seams (see ``server.core.hooks``);
    ``rng`` makes ids and the iterator secret deterministic in tests.
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
        self._account = config.account_id
        self._streams: dict[str, _Stream] = {}
        self._scalings = ScalingHistory()
        for meta in storage.load_streams():
            self._adopt(meta)
        self._handlers: dict[str, Callable[[dict[str, Any], float], dict[str, Any] | None]] = {
            "CreateStream": self.create_stream,
            "DeleteStream": self.delete_stream,
            "DescribeStream": self.describe_stream,
            "DescribeStreamSummary": self.describe_stream_summary,
            "ListStreams": self.list_streams,
            "ListShards": self.list_shards,
            "PutRecord": self.put_record,
            "PutRecords": self.put_records,
            "GetShardIterator": self.get_shard_iterator,
            "GetRecords": self.get_records,
            "AddTagsToStream": self.add_tags_to_stream,
            "RemoveTagsFromStream": self.remove_tags_from_stream,
            "ListTagsForStream": self.list_tags_for_stream,
            "IncreaseStreamRetentionPeriod": self.increase_stream_retention_period,
            "DecreaseStreamRetentionPeriod": self.decrease_stream_retention_period,
            "DescribeLimits": self.describe_limits,
            "UpdateMaxRecordSize": self.update_max_record_size,
            "SplitShard": self.split_shard,
            "MergeShards": self.merge_shards,
            "UpdateShardCount": self.update_shard_count,
        }

    # -- entry point ----------------------------------------------------------------

    @property
    def actions(self) -> frozenset[str]:
        """The action names this engine answers."""
        return frozenset(self._handlers)

    def handle(self, action: str, body: Any, now: float) -> dict[str, Any] | None:
        """Run one action: the response body, or a :class:`KinesisError`."""
        handler = self._handlers.get(action)
        if handler is None:
            raise UnknownOperationException()
        if action == "PutRecords":
            return self._put_records_raw(body, now)
        request = validate(action, body)
        gate = self.throughput
        if gate is not None and action in _CONTROL_ACTIONS:
            name: str | None = request.get("StreamName")
            arn: str | None = request.get("StreamARN")
            if name is None and arn is not None:
                name = arn.rpartition("/")[2]
            if not gate.admit_control(action, name, now):
                # The service names the stream when there is one ("Rate exceeded for
                # stream S under account A.", the text SDK retry rules match on).
                where = f"stream {name} under account " if name else "account "
                raise LimitExceededException(f"Rate exceeded for {where}{self._account}.")
        return handler(request, now)

    # -- streams: lookup and lazy states --------------------------------------------

    def _adopt(self, meta: StreamMeta) -> _Stream:
        stream = _Stream(meta)
        for shard_meta in meta.shards:
            base = shard_base(shard_meta.index, stream.epoch)
            last = self.storage.last_sequence_number(meta.name, shard_meta.shard_id)
            next_seq = max(base, shard_meta.starting_sequence_number, (last or 0) + 1)
            stream.shards[shard_meta.shard_id] = _Shard(shard_meta, base, next_seq)
        stream.rebuild_routes()
        self._streams[meta.name] = stream
        return stream

    def _advance(self, stream: _Stream, now: float) -> _Stream | None:
        """Apply a due state change; ``None`` if the stream has finished deleting."""
        meta = stream.meta
        due = meta.status_since + self.config.state_delay_seconds
        if meta.status in _NEXT_STATE and now >= due:
            nxt = _NEXT_STATE[meta.status]
            if nxt is None:
                del self._streams[meta.name]
                self.storage.delete_stream(meta.name)
                if self.throughput is not None:
                    self.throughput.forget_stream(meta.name)
                return None
            meta.status = nxt
            meta.status_since = now
            self.storage.save_stream(meta)
        return stream

    def _all_streams(self, now: float) -> list[_Stream]:
        return [s for s in list(self._streams.values()) if self._advance(s, now) is not None]

    def _not_found(self, name: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(f"Stream {name} under account {self._account} not found.")

    def _stream_name(self, request: dict[str, Any]) -> str:
        name: str | None = request.get("StreamName")
        arn: str | None = request.get("StreamARN")
        if arn is None:
            assert name is not None  # validation requires one of the two
            return name
        prefix = f"arn:aws:kinesis:{self.config.region}:{self._account}:stream/"
        arn_name = arn[len(prefix) :] if arn.startswith(prefix) else None
        if arn_name is None:
            parts = arn.split(":", 5)
            account = parts[4] if len(parts) > 4 else self._account
            raise ResourceNotFoundException(
                f"Stream {arn.rpartition('/')[2]} under account {account} not found."
            )
        if name is not None and name != arn_name:
            raise InvalidArgumentException(
                f"StreamName {name} and StreamARN {arn} do not refer to the same stream."
            )
        return arn_name

    def _stream(self, request: dict[str, Any], now: float) -> _Stream:
        name = self._stream_name(request)
        stream = self._streams.get(name)
        if stream is None or self._advance(stream, now) is None:
            raise self._not_found(name)
        return stream

    def _data_stream(self, request: dict[str, Any], now: float) -> _Stream:
        """A stream that takes reads and writes (ACTIVE or UPDATING)."""
        stream = self._stream(request, now)
        if stream.meta.status not in _DATA_STATES:
            raise self._not_found(stream.meta.name)
        return stream

    def _active_stream(self, request: dict[str, Any], now: float) -> _Stream:
        """A stream whose settings may change now (ACTIVE only)."""
        stream = self._stream(request, now)
        if stream.meta.status != "ACTIVE":
            raise ResourceInUseException(
                f"Stream {stream.meta.name} under account {self._account} not ACTIVE, "
                f"instead in state {stream.meta.status}"
            )
        return stream

    def _open_shard_count(self, now: float) -> int:
        return sum(len(s.route_shards) for s in self._all_streams(now))

    def _trim(self, stream: _Stream, shard: _Shard, now: float) -> None:
        """Retention: drop the shard's records older than the stream's retention.

        Lazily, on reads (rules in ``server.core.retention``).
        """
        cutoff = retention_cutoff(stream.meta.retention_hours, now)
        if cutoff > 0:
            self.storage.trim(stream.meta.name, shard.meta.shard_id, cutoff)

    def _expire_closed_shards(self, stream: _Stream, now: float) -> None:
        """Forget closed shards whose records have all expired (the service stops listing them)."""
        if len(stream.shards) == len(stream.route_shards):
            return  # no closed shard: the common case costs one comparison
        meta = stream.meta
        gone = expired_shards(meta.shards, meta.retention_hours, now)
        if not gone:
            return
        for shard_meta in gone:
            self._trim(stream, stream.shards.pop(shard_meta.shard_id), now)
        meta.shards = [m for m in meta.shards if m.shard_id in stream.shards]
        self.storage.save_stream(meta)

    # -- control plane --------------------------------------------------------------

    def create_stream(self, request: dict[str, Any], now: float) -> None:
        """CreateStream: PROVISIONED with ShardCount, or ON_DEMAND with 4 shards."""
        name: str = request["StreamName"]
        mode = request.get("StreamModeDetails", {}).get("StreamMode")
        count: int | None = request.get("ShardCount")
        if mode is None:
            mode = "PROVISIONED" if count is not None else "ON_DEMAND"
        if mode == "ON_DEMAND":
            if count is not None:
                raise InvalidArgumentException(
                    "ShardCount must not be specified for a stream in ON_DEMAND mode."
                )
            count = _ON_DEMAND_SHARDS
        elif count is None:
            raise InvalidArgumentException(
                "ShardCount must be specified for a stream in PROVISIONED mode."
            )
        if request.get("RecordDistributionStrategy") == "AUTO":
            # Service-managed placement is not modelled: refused rather than ignored, so
            # no one tests a producer against a distribution this server does not do.
            raise InvalidArgumentException(
                "RecordDistributionStrategy AUTO is not supported by this server; "
                "use USER_PARTITION_KEY (the default)."
            )
        existing = self._streams.get(name)
        if existing is not None and self._advance(existing, now) is not None:
            raise ResourceInUseException(
                f"Stream {name} under account {self._account} already exists."
            )
        tags: dict[str, str] = request.get("Tags", {})
        self._check_tags(name, tags, {})
        current = self._open_shard_count(now)
        if current + count > self.config.shard_limit:
            raise self._shard_limit_error(current, count)
        if mode == "ON_DEMAND":
            on_demand = sum(1 for s in self._all_streams(now) if s.meta.mode == "ON_DEMAND")
            if on_demand >= _ON_DEMAND_STREAM_LIMIT:
                raise LimitExceededException(
                    f"This request would exceed the on-demand stream limit for the account "
                    f"{self._account} in {self.config.region}."
                )
        created = _ms(now)
        epoch = int(created)
        meta = StreamMeta(
            name=name,
            arn=f"arn:aws:kinesis:{self.config.region}:{self._account}:stream/{name}",
            status="CREATING",
            status_since=now,
            created_at=created,
            mode=mode,
            retention_hours=DEFAULT_RETENTION_HOURS,
            max_record_size_kib=request.get("MaxRecordSizeInKiB", MIB // 1024),
            tags=dict(tags),
            stream_id="".join(self.rng.choice(_ID_CHARS) for _ in range(20))
            + "-"
            + "".join(self.rng.choice(_ID_CHARS) for _ in range(3)),
        )
        for index, (start, end) in enumerate(_hash_ranges(count)):
            meta.shards.append(
                ShardMeta(
                    shard_id=f"shardId-{index:012d}",
                    starting_hash_key=start,
                    ending_hash_key=end,
                    starting_sequence_number=shard_base(index, epoch),
                    created_at=created,
                )
            )
        meta.next_shard_index = count
        self.storage.save_stream(meta)
        self._adopt(meta)

    def _shard_limit_error(self, current: int, extra: int) -> LimitExceededException:
        return LimitExceededException(
            f"This request would exceed the shard limit for the account {self._account} in "
            f"{self.config.region}. Current shard count for the account: {current}. Limit: "
            f"{self.config.shard_limit}. Number of additional shards that would have resulted "
            f"from this request: {extra}. Refer to the AWS Service Limits page "
            "(http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) "
            "for current limits and how to request higher limits."
        )

    def delete_stream(self, request: dict[str, Any], now: float) -> None:
        """DeleteStream: DELETING now, gone after the state delay."""
        stream = self._stream(request, now)
        meta = stream.meta
        if meta.status == "DELETING":
            raise self._not_found(meta.name)
        meta.status = "DELETING"
        meta.status_since = now
        self.storage.save_stream(meta)

    def _summary_fields(self, meta: StreamMeta) -> dict[str, Any]:
        return {
            "StreamName": meta.name,
            "StreamARN": meta.arn,
            "StreamStatus": meta.status,
            "StreamModeDetails": {"StreamMode": meta.mode},
            "RetentionPeriodHours": meta.retention_hours,
            "StreamCreationTimestamp": meta.created_at,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
        }

    def describe_stream(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """DescribeStream: every shard (open and closed), paged by Limit."""
        stream = self._stream(request, now)
        self._expire_closed_shards(stream, now)
        # "If you specify a value greater than 100, at most 100 results are returned."
        limit: int = min(request.get("Limit", 100), 100)
        start: str | None = request.get("ExclusiveStartShardId")
        shards = [s.meta for s in stream.shards.values()]
        if start is not None:
            shards = [m for m in shards if m.shard_id > start]
        description = self._summary_fields(stream.meta)
        description["Shards"] = [_shard_json(m) for m in shards[:limit]]
        description["HasMoreShards"] = len(shards) > limit
        return {"StreamDescription": description}

    def describe_stream_summary(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """DescribeStreamSummary."""
        stream = self._stream(request, now)
        meta = stream.meta
        summary = self._summary_fields(meta)
        summary["StreamId"] = meta.stream_id
        summary["OpenShardCount"] = len(stream.route_shards)
        summary["ConsumerCount"] = 0
        summary["MaxRecordSizeInKiB"] = meta.max_record_size_kib
        return {"StreamDescriptionSummary": summary}

    def list_streams(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """ListStreams: names in order, with ExclusiveStartStreamName or NextToken."""
        # The service answers at most 100 names per call, whatever Limit asks for.
        limit: int = min(request.get("Limit", 100), 100)
        start: str | None = request.get("ExclusiveStartStreamName")
        token: str | None = request.get("NextToken")
        if token is not None:
            if start is not None:
                raise InvalidArgumentException(
                    "ExclusiveStartStreamName and NextToken cannot be provided together."
                )
            start = self._read_token(token, now, "ListStreams")[0]
        streams = sorted(self._all_streams(now), key=lambda s: s.meta.name)
        if start is not None:
            streams = [s for s in streams if s.meta.name > start]
        page = streams[:limit]
        more = len(streams) > limit
        result: dict[str, Any] = {
            "StreamNames": [s.meta.name for s in page],
            "HasMoreStreams": more,
            "StreamSummaries": [
                {
                    "StreamName": s.meta.name,
                    "StreamARN": s.meta.arn,
                    "StreamStatus": s.meta.status,
                    "StreamModeDetails": {"StreamMode": s.meta.mode},
                    "StreamCreationTimestamp": s.meta.created_at,
                }
                for s in page
            ],
        }
        if more and page:
            result["NextToken"] = self._make_token("ListStreams", page[-1].meta.name, now)
        return result

    def _make_token(self, kind: str, position: str, now: float, extra: str = "") -> str:
        return b64encode(orjson.dumps([kind, position, int(now * 1000), extra])).decode()

    def _read_token(self, token: str, now: float, kind: str) -> tuple[str, str]:
        try:
            got_kind, position, issued_ms, extra = orjson.loads(b64decode(token, validate=True))
            if got_kind != kind or not isinstance(position, str) or not isinstance(extra, str):
                raise ValueError(token)
            issued = int(issued_ms)
        except (ValueError, TypeError, BinasciiError, orjson.JSONDecodeError):
            raise InvalidArgumentException("Invalid NextToken.") from None
        if now * 1000 - issued > _TOKEN_TTL_MS:
            raise ExpiredNextTokenException(
                f"The timestamp {issued} of the NextToken has expired."
            )
        return position, extra

    def list_shards(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """ListShards: paged by MaxResults/NextToken, filtered by ShardFilter."""
        token: str | None = request.get("NextToken")
        start: str | None = request.get("ExclusiveStartShardId")
        if token is not None:
            for member in ("StreamName", "StreamARN"):
                if member in request:
                    raise InvalidArgumentException(
                        f"NextToken and {member} cannot be provided together."
                    )
            if start is not None:
                raise InvalidArgumentException(
                    "NextToken and ExclusiveStartShardId cannot be provided together."
                )
            start, name = self._read_token(token, now, "ListShards")
            stream = self._stream({"StreamName": name}, now)
        elif "StreamName" not in request and "StreamARN" not in request:
            raise InvalidArgumentException("Either NextToken or StreamName should be provided.")
        else:
            stream = self._stream(request, now)
        self._expire_closed_shards(stream, now)
        # "If you specify a value greater than 1000, at most 1000 results are returned."
        limit: int = min(request.get("MaxResults", 1000), 1000)
        shards = [s.meta for s in stream.shards.values()]
        shard_filter: dict[str, Any] | None = request.get("ShardFilter")
        if shard_filter is not None:
            shards = self._filter_shards(stream, shards, shard_filter)
        if start is not None:
            shards = [m for m in shards if m.shard_id > start]
        page = shards[:limit]
        result: dict[str, Any] = {"Shards": [_shard_json(m) for m in page]}
        if len(shards) > limit and page:
            result["NextToken"] = self._make_token(
                "ListShards", page[-1].shard_id, now, stream.meta.name
            )
        return result

    def _filter_shards(
        self, stream: _Stream, shards: list[ShardMeta], shard_filter: dict[str, Any]
    ) -> list[ShardMeta]:
        kind = shard_filter["Type"]
        if kind == "AFTER_SHARD_ID":
            after = shard_filter.get("ShardId")
            if after is None:
                raise InvalidArgumentException(
                    "Must specify ShardId in ShardFilter when Type is AFTER_SHARD_ID."
                )
            return [m for m in shards if m.shard_id > after]
        if kind in ("AT_TIMESTAMP", "FROM_TIMESTAMP"):
            ts = shard_filter.get("Timestamp")
            if ts is None:
                raise InvalidArgumentException(
                    f"Must specify Timestamp in ShardFilter when Type is {kind}."
                )
            if kind == "AT_TIMESTAMP":
                return [
                    m for m in shards
                    if m.created_at <= ts and (m.closed_at is None or m.closed_at > ts)
                ]
            return [m for m in shards if m.closed_at is None or m.closed_at > ts]
        if kind == "AT_LATEST":
            return [m for m in shards if m.is_open]
        # AT_TRIM_HORIZON / FROM_TRIM_HORIZON: every shard still kept is readable.
        return shards

    def describe_limits(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """DescribeLimits: the shard quota and current use."""
        streams = self._all_streams(now)
        return {
            "ShardLimit": self.config.shard_limit,
            "OpenShardCount": sum(len(s.route_shards) for s in streams),
            "OnDemandStreamCount": sum(1 for s in streams if s.meta.mode == "ON_DEMAND"),
            "OnDemandStreamCountLimit": _ON_DEMAND_STREAM_LIMIT,
        }

    # -- tags, retention, record size -----------------------------------------------

    def _check_tag_texts(self, name: str, texts: list[str], verb: str) -> None:
        """The service's two character checks, in its order (kinesalite's recording).

        ``%`` passes the first (its list of valid characters names it) and is then refused
        by the second, with a different message.
        """
        if not all(_tag_chars_ok(t) for t in texts):
            raise InvalidArgumentException(
                "Some tags contain invalid characters. Valid characters: "
                "Unicode letters, digits, white space, _ . / = + - % @."
            )
        if any("%" in t for t in texts):
            raise InvalidArgumentException(
                f"Failed to {verb} stream {name} under account {self._account} because some "
                "tags contained illegal characters. The allowed characters are Unicode "
                "letters, white-spaces, '_',',','/','=','+','-','@'."
            )

    def _check_tags(self, name: str, new: dict[str, str], old: dict[str, str]) -> None:
        self._check_tag_texts(name, [*new.keys(), *new.values()], "add tags to")
        if len(old.keys() | new.keys()) > _MAX_TAGS:
            # InvalidArgumentException and this wording as recorded against the service by
            # kinesalite (there with the older limit of 10 in the text).
            raise InvalidArgumentException(
                f"Failed to add tags to stream {name} under account {self._account} because "
                f"a given stream cannot have more than {_MAX_TAGS} tags associated with it."
            )

    def add_tags_to_stream(self, request: dict[str, Any], now: float) -> None:
        """AddTagsToStream: set (or overwrite) tags; at most 50 per stream."""
        stream = self._active_stream(request, now)
        tags: dict[str, str] = request["Tags"]
        self._check_tags(stream.meta.name, tags, stream.meta.tags)
        stream.meta.tags.update(tags)
        self.storage.save_stream(stream.meta)

    def remove_tags_from_stream(self, request: dict[str, Any], now: float) -> None:
        """RemoveTagsFromStream: remove the keys that exist; others are ignored."""
        stream = self._active_stream(request, now)
        self._check_tag_texts(stream.meta.name, request["TagKeys"], "remove tags from")
        for key in request["TagKeys"]:
            stream.meta.tags.pop(key, None)
        self.storage.save_stream(stream.meta)

    def list_tags_for_stream(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """ListTagsForStream: tags sorted by key, paged by ExclusiveStartTagKey/Limit."""
        stream = self._stream(request, now)
        # No Limit: every tag (at most 50), as kinesalite recorded the service answering.
        limit: int = request.get("Limit", _MAX_TAGS)
        start: str | None = request.get("ExclusiveStartTagKey")
        keys = sorted(stream.meta.tags)
        if start is not None:
            keys = [k for k in keys if k > start]
        return {
            "Tags": [{"Key": k, "Value": stream.meta.tags[k]} for k in keys[:limit]],
            "HasMoreTags": len(keys) > limit,
        }

    def _retention(self, request: dict[str, Any], now: float, increase: bool) -> None:
        stream = self._active_stream(request, now)
        hours: int = request["RetentionPeriodHours"]
        current = stream.meta.retention_hours
        name = stream.meta.name
        if hours < MIN_RETENTION_HOURS:
            raise InvalidArgumentException(
                f"Minimum allowed retention period is {MIN_RETENTION_HOURS} hours. "
                f"Requested retention period ({hours} hours) is too short."
            )
        if hours > MAX_RETENTION_HOURS:
            raise InvalidArgumentException(
                f"Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. "
                f"Requested retention period ({hours} hours) is too long."
            )
        if increase and hours < current:
            raise InvalidArgumentException(
                f"Requested retention period ({hours} hours) for stream {name} can not be "
                f"shorter than existing retention period ({current} hours). "
                "Use DecreaseRetentionPeriod API."
            )
        if not increase and hours > current:
            raise InvalidArgumentException(
                f"Requested retention period ({hours} hours) for stream {name} can not be "
                f"longer than existing retention period ({current} hours). "
                "Use IncreaseRetentionPeriod API."
            )
        # Trim with the old retention first: an increase never revives expired records.
        for shard in stream.shards.values():
            self._trim(stream, shard, now)
        stream.meta.retention_hours = hours
        self.storage.save_stream(stream.meta)

    def increase_stream_retention_period(self, request: dict[str, Any], now: float) -> None:
        """IncreaseStreamRetentionPeriod (24-8760 hours, not below the current one)."""
        self._retention(request, now, increase=True)

    def decrease_stream_retention_period(self, request: dict[str, Any], now: float) -> None:
        """DecreaseStreamRetentionPeriod (24-8760 hours, not above the current one)."""
        self._retention(request, now, increase=False)

    def update_max_record_size(self, request: dict[str, Any], now: float) -> None:
        """UpdateMaxRecordSize: the stream's largest record, 1024-10240 KiB."""
        if "StreamARN" not in request:
            raise InvalidArgumentException("StreamARN must be specified.")
        stream = self._active_stream(request, now)
        stream.meta.max_record_size_kib = request["MaxRecordSizeInKiB"]
        self.storage.save_stream(stream.meta)

    # -- writes ---------------------------------------------------------------------

    def _explicit_hash_key(self, value: str) -> int:
        number = int(value)
        if number > MAX_HASH_KEY:
            raise InvalidArgumentException(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: "
                f"[0, 2^128-1]. Specified value was {value}"
            )
        return number

    def _throttled(self, stream: _Stream, shard: _Shard) -> str:
        return (
            f"Rate exceeded for shard {shard.meta.shard_id} in stream {stream.meta.name} "
            f"under account {self._account}."
        )

    def put_record(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """PutRecord: one record, optionally ordered after SequenceNumberForOrdering."""
        stream = self._data_stream(request, now)
        data: bytes = request["Data"]
        key: str = request["PartitionKey"]
        max_size = stream.meta.max_record_size_kib * 1024
        key_bytes = len(key) if key.isascii() else len(key.encode())
        if len(data) + key_bytes > max_size:
            raise _record_too_large("data", data, key_bytes, max_size)
        explicit = request.get("ExplicitHashKey")
        hash_key = (
            self._explicit_hash_key(explicit) if explicit is not None else partition_key_hash(key)
        )
        shard = stream.route_shards[bisect_right(stream.route_starts, hash_key) - 1]
        size = len(data) + key_bytes
        if request.get("DryRun"):
            raise DryRunOperationException()
        gate = self.throughput
        if gate is not None and not gate.admit_write(
            stream.meta.name, shard.meta.shard_id, 1, size, now
        ):
            raise ProvisionedThroughputExceededException(self._throttled(stream, shard))
        if self.faults is not None:
            code = self.faults.entry_error(self.rng)
            if code is not None:
                raise for_code(code)(
                    self._throttled(stream, shard)
                    if code == ProvisionedThroughputExceededException.code
                    else "Internal service failure."
                )
        ordering = request.get("SequenceNumberForOrdering")
        if ordering is not None:
            after = int(ordering)
            if parse_sequence_number(after) is None:
                raise InvalidArgumentException(
                    f"ExclusiveMinimumSequenceNumber {ordering} used in PutRecord on stream "
                    f"{stream.meta.name} under account {self._account} is invalid."
                )
            # Only a number of this shard can be exceeded by this shard's counter.
            if shard.next_seq <= after < shard.seq_limit - 1:
                shard.next_seq = after + 1
        seq = shard.next_seq
        shard.next_seq = seq + 1
        arrival = _ms(now)
        if arrival < shard.last_arrival:
            arrival = shard.last_arrival
        shard.last_arrival = arrival
        self.storage.append(stream.meta.name, shard.meta.shard_id, [(seq, arrival, key, data)])
        return {"ShardId": shard.meta.shard_id, "SequenceNumber": str(seq)}

    def put_records(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """PutRecords from an already validated request (see :meth:`_put_records_raw`)."""
        entries = [
            (e["Data"], e["PartitionKey"], e.get("ExplicitHashKey")) for e in request["Records"]
        ]
        return self._put_entries(request, entries, now)

    def _put_records_raw(self, body: Any, now: float) -> dict[str, Any]:
        """PutRecords' hot path: check entries inline, fall back to full validation.

        The inline checks only decide "certainly valid"; on any doubt the generic
        validator runs over the whole body, so errors read exactly as for other actions.
        """
        entries: list[tuple[bytes, str, str | None]] | None = None
        records = body.get("Records") if type(body) is dict else None
        if type(records) is list and 0 < len(records) <= 500:
            entries = []
            append = entries.append
            for entry in records:
                if type(entry) is not dict:
                    entries = None
                    break
                b64 = entry.get("Data")
                key = entry.get("PartitionKey")
                explicit = entry.get("ExplicitHashKey")
                if (
                    type(b64) is not str
                    or type(key) is not str
                    or not 0 < len(key) <= MAX_PARTITION_KEY_LENGTH
                    or (
                        explicit is not None
                        and (
                            type(explicit) is not str
                            or not _EXPLICIT_HASH_KEY.fullmatch(explicit)
                        )
                    )
                ):
                    entries = None
                    break
                data = decode_blob(b64)
                if data is None:
                    entries = None
                    break
                append((data, key, explicit))
        if entries is None:
            request = validate("PutRecords", body)
            return self.put_records(request, now)
        # The entries are fine; validate the other members with one stand-in entry.
        rest = {k: v for k, v in body.items() if k != "Records"}
        rest["Records"] = _STAND_IN_ENTRIES
        request = validate("PutRecords", rest)
        return self._put_entries(request, entries, now)

    def _put_entries(
        self,
        request: dict[str, Any],
        entries: list[tuple[bytes, str, str | None]],
        now: float,
    ) -> dict[str, Any]:
        stream = self._data_stream(request, now)
        meta = stream.meta
        max_size = meta.max_record_size_kib * 1024
        total = 0
        # Every whole-request refusal comes before any entry takes a sequence number.
        for i, (data, key, explicit) in enumerate(entries, 1):
            size = len(data) + (len(key) if key.isascii() else len(key.encode()))
            if size > max_size:
                raise _record_too_large(
                    f"records.{i}.member.data", data, size - len(data), max_size
                )
            if explicit is not None and len(explicit) > 38:
                self._explicit_hash_key(explicit)
            total += size
        request_cap = PUT_RECORDS_MAX_BYTES if max_size <= MIB else PUT_RECORDS_MAX_BYTES_LARGE
        if total > request_cap:
            raise InvalidArgumentException(
                f"Records size exceeds {request_cap // MIB} MB limit"
            )
        if request.get("DryRun"):
            raise DryRunOperationException()
        starts = stream.route_starts
        shards = stream.route_shards
        single = shards[0] if len(shards) == 1 else None
        arrival = _ms(now)
        name = meta.name
        gate = self.throughput
        faults = self.faults
        results: list[dict[str, str]] = []
        batches: dict[_Shard, list[StoredRecord]] = {}
        failed = 0
        for data, key, explicit in entries:
            if single is not None and explicit is None:
                shard = single
            else:
                hash_key = (
                    self._explicit_hash_key(explicit)
                    if explicit is not None
                    else partition_key_hash(key)
                )
                shard = shards[bisect_right(starts, hash_key) - 1]
            if gate is not None or faults is not None:
                code = self._entry_fault(gate, faults, name, shard, data, key, now)
                if code is not None:
                    failed += 1
                    message = (
                        self._throttled(stream, shard)
                        if code == "ProvisionedThroughputExceededException"
                        else "Internal service failure."
                    )
                    results.append({"ErrorCode": code, "ErrorMessage": message})
                    continue
            seq = shard.next_seq
            shard.next_seq = seq + 1
            batch = batches.get(shard)
            if batch is None:
                batch = batches[shard] = []
            batch.append((seq, arrival, key, data))
            results.append({"SequenceNumber": str(seq), "ShardId": shard.meta.shard_id})
        for shard, batch in batches.items():
            if arrival < shard.last_arrival:
                # Keep arrivals non-decreasing per shard even if the clock stepped back.
                batch = [(s, shard.last_arrival, k, d) for s, _, k, d in batch]
            shard.last_arrival = batch[-1][1]
            self.storage.append(name, shard.meta.shard_id, batch)
        return {"FailedRecordCount": failed, "Records": results}

    def _entry_fault(
        self,
        gate: ThroughputGate | None,
        faults: FaultInjector | None,
        stream_name: str,
        shard: _Shard,
        data: bytes,
        key: str,
        now: float,
    ) -> str | None:
        """The issue-3 hook for one PutRecords entry: an error code, or ``None``."""
        if gate is not None and not gate.admit_write(
            stream_name, shard.meta.shard_id, 1, len(data) + len(key.encode()), now
        ):
            return "ProvisionedThroughputExceededException"
        if faults is not None:
            return faults.entry_error(self.rng)
        return None

    # -- resharding (rules and plans: server.core.resharding) -------------------------

    def _reshardable(self, request: dict[str, Any], now: float) -> _Stream:
        """An ACTIVE, PROVISIONED stream (resharding is refused otherwise)."""
        stream = self._active_stream(request, now)
        if stream.meta.mode != "PROVISIONED":
            raise ValidationException(
                f"Request is invalid. Stream {stream.meta.name} under account "
                f"{self._account} is in On-Demand mode."
            )
        return stream

    def _open_shard_to_reshard(self, stream: _Stream, shard_id: str) -> _Shard:
        shard = stream.shards.get(shard_id)
        match = _SHARD_ID.fullmatch(shard_id) if shard is None else None
        if match is not None:
            shard = stream.shards.get(f"shardId-{int(match.group(1)):012d}")
        if shard is None:
            raise shard_not_found(shard_id, stream.meta.name, self._account)
        if not shard.meta.is_open:
            raise closed_shard_error(shard.meta.shard_id, stream.meta.name, self._account)
        return shard

    def _check_shard_limit(self, extra: int, now: float) -> None:
        current = self._open_shard_count(now)
        if extra > 0 and current + extra > self.config.shard_limit:
            raise self._shard_limit_error(current, extra)

    def _new_shard(
        self, stream: _Stream, start: int, end: int, now: float, parent: str, adjacent: str | None
    ) -> _Shard:
        meta = stream.meta
        index = meta.next_shard_index
        meta.next_shard_index = index + 1
        base = shard_base(index, stream.epoch)
        shard_meta = ShardMeta(
            shard_id=f"shardId-{index:012d}",
            starting_hash_key=start,
            ending_hash_key=end,
            starting_sequence_number=base,
            created_at=_ms(now),
            parent_shard_id=parent,
            adjacent_parent_shard_id=adjacent,
        )
        meta.shards.append(shard_meta)
        shard = stream.shards[shard_meta.shard_id] = _Shard(shard_meta, base, base)
        return shard

    def _close_shard(self, shard: _Shard, now: float) -> None:
        # The last number handed out in the shard (its first one if it took no record).
        meta = shard.meta
        meta.ending_sequence_number = max(meta.starting_sequence_number, shard.next_seq - 1)
        meta.closed_at = _ms(now)

    def _split(self, stream: _Stream, shard: _Shard, key: int, now: float) -> list[_Shard]:
        meta = shard.meta
        children = [
            self._new_shard(stream, meta.starting_hash_key, key - 1, now, meta.shard_id, None),
            self._new_shard(stream, key, meta.ending_hash_key, now, meta.shard_id, None),
        ]
        self._close_shard(shard, now)
        return children

    def _merge(self, stream: _Stream, shard: _Shard, adjacent: _Shard, now: float) -> _Shard:
        a, b = shard.meta, adjacent.meta
        child = self._new_shard(
            stream,
            min(a.starting_hash_key, b.starting_hash_key),
            max(a.ending_hash_key, b.ending_hash_key),
            now,
            a.shard_id,
            b.shard_id,
        )
        self._close_shard(shard, now)
        self._close_shard(adjacent, now)
        return child

    def _resharded(self, stream: _Stream, now: float) -> None:
        """The new shards take writes at once; the stream is UPDATING for the state delay."""
        stream.rebuild_routes()
        stream.meta.status = "UPDATING"
        stream.meta.status_since = now
        self.storage.save_stream(stream.meta)

    def split_shard(self, request: dict[str, Any], now: float) -> None:
        """SplitShard: close the shard, open two children at NewStartingHashKey."""
        stream = self._reshardable(request, now)
        shard = self._open_shard_to_reshard(stream, request["ShardToSplit"])
        key = int(request["NewStartingHashKey"])
        meta = shard.meta
        check_split(
            meta.shard_id, meta.starting_hash_key, meta.ending_hash_key, key,
            stream.meta.name, self._account,
        )
        self._check_shard_limit(1, now)
        self._split(stream, shard, key, now)
        self._resharded(stream, now)

    def merge_shards(self, request: dict[str, Any], now: float) -> None:
        """MergeShards: close two adjacent shards, open one child over both ranges."""
        stream = self._reshardable(request, now)
        shard = self._open_shard_to_reshard(stream, request["ShardToMerge"])
        adjacent = self._open_shard_to_reshard(stream, request["AdjacentShardToMerge"])
        a, b = shard.meta, adjacent.meta
        check_merge(
            (a.shard_id, a.starting_hash_key, a.ending_hash_key),
            (b.shard_id, b.starting_hash_key, b.ending_hash_key),
            stream.meta.name,
            self._account,
        )
        self._merge(stream, shard, adjacent, now)
        self._resharded(stream, now)

    def update_shard_count(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """UpdateShardCount (UNIFORM_SCALING) as a plan of splits then merges."""
        stream = self._reshardable(request, now)
        name = stream.meta.name
        target: int = request["TargetShardCount"]
        open_shards = list(stream.route_shards)
        current = len(open_shards)
        check_target(current, target, name, self._account)
        history_key = f"{name}/{stream.created_ms}"
        if self.throughput is not None:
            self._scalings.check(history_key, name, self._account, now)
        plan = plan_uniform_scaling(
            [(s.meta.starting_hash_key, s.meta.ending_hash_key) for s in open_shards], target
        )
        # Short-lived shards count against the account limit while they exist.
        self._check_shard_limit(sum(1 for step in plan if not isinstance(step, Merge)), now)
        handles = open_shards
        for step in plan:
            if isinstance(step, Merge):
                left, right = handles[step.handle], handles[step.adjacent]
                handles.append(self._merge(stream, left, right, now))
            else:
                handles.extend(self._split(stream, handles[step.handle], step.key, now))
        if self.throughput is not None:
            self._scalings.record(history_key, now)
        self._resharded(stream, now)
        return {
            "StreamName": name,
            "CurrentShardCount": current,
            "TargetShardCount": target,
            "StreamARN": stream.meta.arn,
        }

    # -- reads ----------------------------------------------------------------------

    def _iterator_shard(self, request: dict[str, Any], now: float) -> tuple[_Stream, _Shard]:
        """GetShardIterator's stream and shard, refused with the service's messages.

        The shard id is read first: one that cannot name a shard is ``Could not find
        shard``; a missing stream or shard is ``Shard ... does not exist`` (the service
        words a missing stream that way here too, as kinesalite recorded).
        """
        name = self._stream_name(request)
        text: str = request["ShardId"]
        match = _LOOSE_SHARD_ID.fullmatch(text)
        if match is None or int(match.group(1)) > _MAX_SHARD_INDEX:
            raise ResourceNotFoundException(
                f"Could not find shard {text} in stream {name} under account {self._account}."
            )
        shard_id = f"shardId-{int(match.group(1)):012d}"
        stream = self._streams.get(name)
        if stream is not None:
            stream = self._advance(stream, now)
        if stream is not None and stream.meta.status in _DATA_STATES:
            self._expire_closed_shards(stream, now)
            shard = stream.shards.get(shard_id)
            if shard is not None:
                return stream, shard
        raise ResourceNotFoundException(
            f"Shard {shard_id} in stream {name} under account {self._account} does not exist"
        )

    def get_shard_iterator(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """GetShardIterator: all five iterator types."""
        stream, shard = self._iterator_shard(request, now)
        shard_id = shard.meta.shard_id
        kind: str = request["ShardIteratorType"]
        seq_text: str | None = request.get("StartingSequenceNumber")
        timestamp: float | None = request.get("Timestamp")
        name = stream.meta.name
        self._trim(stream, shard, now)
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if seq_text is None:
                raise InvalidArgumentException(
                    "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
                    "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no "
                    f"StartingSequenceNumber. Request specified {kind} and no "
                    "StartingSequenceNumber."
                )
            seq = int(seq_text)
            parsed = parse_sequence_number(seq)
            if parsed is None:
                raise InvalidArgumentException(
                    f"StartingSequenceNumber {seq_text} used in GetShardIterator on shard "
                    f"{shard_id} in stream {name} under account {self._account} is invalid."
                )
            if parsed.shard_index != shard.meta.index:
                raise InvalidArgumentException(
                    f"Invalid StartingSequenceNumber. It encodes shardId-{parsed.shard_index:012d}"
                    f", while it was used in a call to a shard with {shard_id}"
                )
            if parsed.stream_epoch != stream.epoch % 10**10:
                raise InvalidArgumentException(
                    f"StartingSequenceNumber {seq_text} used in GetShardIterator on shard "
                    f"{shard_id} in stream {name} under account {self._account} is invalid "
                    "because it did not come from this stream."
                )
            position = seq if kind == "AT_SEQUENCE_NUMBER" else seq + 1
        elif seq_text is not None:
            raise InvalidArgumentException(
                "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
                "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no "
                f"StartingSequenceNumber. Request specified {kind} and also a "
                "StartingSequenceNumber."
            )
        elif kind == "TRIM_HORIZON":
            position = shard.base
        elif kind == "LATEST":
            position = shard.next_seq
        else:  # AT_TIMESTAMP
            if timestamp is None:
                raise InvalidArgumentException(
                    "Must specify timestampInMillis parameter for iterator of type "
                    "AT_TIMESTAMP. Current request has no timestamp parameter."
                )
            if timestamp > now:
                raise InvalidArgumentException(
                    "The timestampInMillis parameter cannot be greater than the "
                    f"currentTimestampInMillis. timestampInMillis: {int(timestamp * 1000)}, "
                    f"currentTimestampInMillis: {int(now * 1000)}"
                )
            found = self.storage.sequence_number_at(name, shard_id, timestamp)
            position = shard.next_seq if found is None else found
        if timestamp is not None and kind != "AT_TIMESTAMP":
            raise InvalidArgumentException(
                "Must specify timestampInMillis parameter only for iterator of type "
                f"AT_TIMESTAMP. Current request has timestamp parameter with type {kind}."
            )
        if request.get("DryRun"):
            raise DryRunOperationException()
        gate = self.throughput
        if gate is not None and not gate.admit_control(
            "GetShardIterator", f"{name}/{shard_id}", now
        ):
            raise ProvisionedThroughputExceededException(self._throttled(stream, shard))
        token = self.iterators.encode(
            IteratorState(name, shard_id, position, int(now * 1000), stream.created_ms)
        )
        return {"ShardIterator": token}

    def get_records(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """GetRecords: up to Limit records (10 MiB) from the iterator's position."""
        state = self.iterators.decode(request["ShardIterator"], now)
        stream = self._streams.get(state.stream_name)
        if stream is not None:
            stream = self._advance(stream, now)
        if stream is not None:
            self._expire_closed_shards(stream, now)
        if (
            stream is None
            or stream.created_ms != state.stream_created_ms
            or stream.meta.status not in _DATA_STATES
            or state.shard_id not in stream.shards
        ):
            raise ResourceNotFoundException(
                f"Shard {state.shard_id} in stream {state.stream_name} under account "
                f"{self._account} does not exist"
            )
        shard = stream.shards[state.shard_id]
        name = stream.meta.name
        if request.get("DryRun"):
            raise DryRunOperationException()
        gate = self.throughput
        if gate is not None and not gate.admit_read(name, state.shard_id, now):
            raise ProvisionedThroughputExceededException(self._throttled(stream, shard))
        self._trim(stream, shard, now)
        limit: int = request.get("Limit", GET_RECORDS_MAX_LIMIT)
        stored = self.storage.read(
            name, state.shard_id, state.position, limit, GET_RECORDS_MAX_BYTES
        )
        records = [
            {
                "SequenceNumber": str(seq),
                "ApproximateArrivalTimestamp": arrival,
                "Data": data,
                "PartitionKey": key,
            }
            for seq, arrival, key, data in stored
        ]
        if gate is not None:
            gate.record_read(
                name, state.shard_id, sum(len(r[3]) + len(r[2]) for r in stored), now
            )
        last = self.storage.last_sequence_number(name, state.shard_id)
        position = stored[-1][0] + 1 if stored else state.position
        caught_up = last is None or position > last
        result: dict[str, Any] = {
            "Records": records,
            "MillisBehindLatest": 0
            if caught_up or not stored
            else max(0, int((now - stored[-1][1]) * 1000)),
        }
        if caught_up and not shard.meta.is_open:
            result["ChildShards"] = self._child_shards(stream, state.shard_id)
        else:
            result["NextShardIterator"] = self.iterators.encode(
                IteratorState(name, state.shard_id, position, int(now * 1000), stream.created_ms)
            )
        return result

    def _child_shards(self, stream: _Stream, shard_id: str) -> list[dict[str, Any]]:
        children = []
        for child in stream.shards.values():
            meta = child.meta
            parents = [p for p in (meta.parent_shard_id, meta.adjacent_parent_shard_id) if p]
            if shard_id in parents:
                children.append(
                    {
                        "ShardId": meta.shard_id,
                        "ParentShards": parents,
                        "HashKeyRange": {
                            "StartingHashKey": str(meta.starting_hash_key),
                            "EndingHashKey": str(meta.ending_hash_key),
                        },
                    }
                )
        return children

