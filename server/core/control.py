"""The control plane: creating, deleting, describing and listing streams; tags, retention.

Theory of operation
-------------------
:class:`ControlPlane` answers the actions that change or show a stream's metadata
(CreateStream, DeleteStream, DescribeStream, DescribeStreamSummary, ListStreams,
ListShards, DescribeLimits, the tag actions, the retention actions and
UpdateMaxRecordSize). It keeps no state of its own: every stream lives in the engine's
:class:`~server.core.streams.StreamTable`, and every change is saved to storage at once.

* CreateStream splits the hash space evenly over the new shards (the service's split,
  the last shard ending at ``2^128 - 1``) and counts them against the account's shard
  limit; ON_DEMAND streams get 4 shards and count against the on-demand stream limit.
* Listing pages with tokens that carry what they list, where they stopped and when they
  were issued (they expire after 5 minutes, as the service's do).
* Settings change only on ACTIVE streams; retention is trimmed with the old period
  before a new one applies, so an increase never revives expired records.
"""

from __future__ import annotations

import random
import string
from base64 import b64decode, b64encode
from binascii import Error as BinasciiError
from typing import Any

import orjson

from kpl.protocol.hashing import uniform_ranges
from kpl.protocol.limits import (
    DEFAULT_RETENTION_HOURS,
    MAX_RETENTION_HOURS,
    MIB,
    MIN_RETENTION_HOURS,
)
from server.core.errors import (
    ExpiredNextTokenException,
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
)
from server.core.render import ms, shard_json, stream_summary, summary_fields
from server.core.seqnum import shard_base
from server.core.streams import Stream, StreamTable
from server.storage.base import ShardMeta, StreamMeta

__all__ = ["ControlPlane"]

_ON_DEMAND_SHARDS = 4
_ON_DEMAND_STREAM_LIMIT = 50
_MAX_TAGS = 50
_TOKEN_TTL_MS = 300_000
_TAG_PUNCTUATION = frozenset("_.:/=+-@% ")
_ID_CHARS = string.ascii_lowercase + string.digits



def _tag_chars_ok(text: str) -> bool:
    # "White space" is the space character: a tab or a line break is refused.
    return all(c.isalnum() or c in _TAG_PUNCTUATION for c in text)


class ControlPlane:
    """The control-plane actions over the engine's stream table."""

    def __init__(self, table: StreamTable, rng: random.Random) -> None:
        self.table = table
        self.config = table.config
        self.storage = table.storage
        self.rng = rng
        self._account = table.account

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
        existing = self.table.by_name.get(name)
        if existing is not None and self.table.advance(existing, now) is not None:
            raise ResourceInUseException(
                f"Stream {name} under account {self._account} already exists."
            )
        tags: dict[str, str] = request.get("Tags", {})
        self._check_tags(name, tags, {})
        current = self.table.open_shard_count(now)
        if current + count > self.config.shard_limit:
            raise self.table.shard_limit_error(current, count)
        if mode == "ON_DEMAND":
            on_demand = sum(1 for s in self.table.all(now) if s.meta.mode == "ON_DEMAND")
            if on_demand >= _ON_DEMAND_STREAM_LIMIT:
                raise LimitExceededException(
                    f"This request would exceed the on-demand stream limit for the account "
                    f"{self._account} in {self.config.region}."
                )
        created = ms(now)
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
        for index, (start, end) in enumerate(uniform_ranges(count)):
            meta.shards.append(
                ShardMeta(
                    shard_id=f"shardId-{index:012d}",
                    starting_hash_key=start,
                    ending_hash_key=end,
                    starting_sequence_number=shard_base(index, int(created)),
                    created_at=created,
                )
            )
        meta.next_shard_index = count
        self.storage.save_stream(meta)
        self.table.adopt(meta)

    def delete_stream(self, request: dict[str, Any], now: float) -> None:
        """DeleteStream: DELETING now, gone after the state delay."""
        stream = self.table.stream(request, now)
        meta = stream.meta
        if meta.status == "DELETING":
            raise self.table.not_found(meta.name)
        if meta.consumers and not request.get("EnforceConsumerDeletion"):
            raise ResourceInUseException(
                f"Stream {meta.name} under account {self._account} has registered consumers; "
                "deregister them or set EnforceConsumerDeletion."
            )
        meta.status = "DELETING"
        meta.status_since = now
        self.storage.save_stream(meta)
        for shard_id in stream.shards:  # its subscriptions end now
            self.table.shard_changed(meta.name, shard_id)

    def describe_stream(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """DescribeStream: every shard (open and closed), paged by Limit."""
        stream = self.table.stream(request, now)
        self.table.expire_closed_shards(stream, now)
        # "If you specify a value greater than 100, at most 100 results are returned."
        limit: int = min(request.get("Limit", 100), 100)
        start: str | None = request.get("ExclusiveStartShardId")
        shards = [s.meta for s in stream.shards.values()]
        if start is not None:
            shards = [m for m in shards if m.shard_id > start]
        description = summary_fields(stream.meta)
        description["Shards"] = [shard_json(m) for m in shards[:limit]]
        description["HasMoreShards"] = len(shards) > limit
        return {"StreamDescription": description}

    def describe_stream_summary(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """DescribeStreamSummary."""
        stream = self.table.stream(request, now)
        meta = stream.meta
        summary = summary_fields(meta)
        summary["StreamId"] = meta.stream_id
        summary["OpenShardCount"] = len(stream.route_shards)
        delay = self.config.state_delay_seconds
        summary["ConsumerCount"] = sum(
            1
            for c in meta.consumers
            if c["status"] != "DELETING" or now < c["status_since"] + delay
        )
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
        streams = sorted(self.table.all(now), key=lambda s: s.meta.name)
        if start is not None:
            streams = [s for s in streams if s.meta.name > start]
        page = streams[:limit]
        more = len(streams) > limit
        result: dict[str, Any] = {
            "StreamNames": [s.meta.name for s in page],
            "HasMoreStreams": more,
            "StreamSummaries": [stream_summary(s.meta) for s in page],
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

    def list_shards_token_stream(self, token: str, now: float) -> str:
        """The stream a ListShards ``NextToken`` pages through (the service's error when
        it is not a valid token), for checks made before the call runs."""
        return self._read_token(token, now, "ListShards")[1]

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
            stream = self.table.stream({"StreamName": name}, now)
        elif "StreamName" not in request and "StreamARN" not in request:
            raise InvalidArgumentException("Either NextToken or StreamName should be provided.")
        else:
            stream = self.table.stream(request, now)
        self.table.expire_closed_shards(stream, now)
        # "If you specify a value greater than 1000, at most 1000 results are returned."
        limit: int = min(request.get("MaxResults", 1000), 1000)
        shards = [s.meta for s in stream.shards.values()]
        shard_filter: dict[str, Any] | None = request.get("ShardFilter")
        if shard_filter is not None:
            shards = self._filter_shards(stream, shards, shard_filter)
        if start is not None:
            shards = [m for m in shards if m.shard_id > start]
        page = shards[:limit]
        result: dict[str, Any] = {"Shards": [shard_json(m) for m in page]}
        if len(shards) > limit and page:
            result["NextToken"] = self._make_token(
                "ListShards", page[-1].shard_id, now, stream.meta.name
            )
        return result

    def _filter_shards(
        self, stream: Stream, shards: list[ShardMeta], shard_filter: dict[str, Any]
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
        streams = self.table.all(now)
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
        """The tag checks: those of the request alone first (they need no lookup), then
        the count with the stream's own tags."""
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
        tags: dict[str, str] = request["Tags"]
        self._check_tags(self.table.stream_name(request), tags, {})  # before "not found"
        stream = self.table.active_stream(request, now)
        self._check_tags(stream.meta.name, tags, stream.meta.tags)
        stream.meta.tags.update(tags)
        self.storage.save_stream(stream.meta)

    def remove_tags_from_stream(self, request: dict[str, Any], now: float) -> None:
        """RemoveTagsFromStream: remove the keys that exist; others are ignored."""
        name = self.table.stream_name(request)
        self._check_tag_texts(name, request["TagKeys"], "remove tags from")  # no lookup
        stream = self.table.active_stream(request, now)
        for key in request["TagKeys"]:
            stream.meta.tags.pop(key, None)
        self.storage.save_stream(stream.meta)

    def list_tags_for_stream(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """ListTagsForStream: tags sorted by key, paged by ExclusiveStartTagKey/Limit."""
        stream = self.table.stream(request, now)
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
        hours: int = request["RetentionPeriodHours"]
        # The range needs no lookup: refused even for a stream that does not exist.
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
        stream = self.table.active_stream(request, now)
        current = stream.meta.retention_hours
        name = stream.meta.name
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
            self.table.trim(stream, shard, now)
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
        stream = self.table.active_stream(request, now)
        stream.meta.max_record_size_kib = request["MaxRecordSizeInKiB"]
        self.storage.save_stream(stream.meta)
