"""Stream consumers and SubscribeToShard subscriptions in the sans-IO engine (fake clock)."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from server.core.calls import EventStream, Reply
from server.core.engine import Engine, EngineConfig
from server.core.errors import (
    DryRunOperationException,
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from server.core.subscription import (
    HEARTBEAT_SECONDS,
    LIFETIME_SECONDS,
    MAX_EVENT_BYTES,
    Subscription,
)
from server.core.throughput import Limits, Throughput
from server.storage.memory import MemoryStorage

T0 = 1_800_000_000.0
ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


def make_engine(delay: float = 0.0, limits: Limits | None = None) -> Engine:
    throughput = Throughput(limits) if limits is not None else None
    return Engine(
        EngineConfig(state_delay_seconds=delay), MemoryStorage(), random.Random(5),
        throughput=throughput,
    )


def call(engine: Engine, action: str, body: dict[str, Any], now: float = T0) -> Any:
    result = engine.handle(action, body, now)
    if isinstance(result, Reply):
        return result.body
    return result


def stream_with_consumer(shards: int = 1, now: float = T0) -> tuple[Engine, str]:
    engine = make_engine()
    call(engine, "CreateStream", {"StreamName": "s", "ShardCount": shards}, now)
    out = call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "c"}, now)
    return engine, out["Consumer"]["ConsumerARN"]


def subscribe(
    engine: Engine, arn: str, now: float, kind: str = "TRIM_HORIZON", shard: int = 0, **extra: Any
) -> Subscription:
    result = call(engine, "SubscribeToShard", {
        "ConsumerARN": arn, "ShardId": f"shardId-{shard:012d}",
        "StartingPosition": {"Type": kind, **extra},
    }, now)
    assert isinstance(result, Subscription)
    return result


def put(engine: Engine, data: bytes, now: float, key: str = "k") -> str:
    body = {"StreamName": "s", "Data": base64.b64encode(data).decode(), "PartitionKey": key}
    out = call(engine, "PutRecord", body, now)
    return str(out["SequenceNumber"])


def test_register_describe_list_deregister_through_their_states() -> None:
    engine = make_engine(delay=1.0)
    call(engine, "CreateStream", {"StreamName": "s", "ShardCount": 1})
    out = call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "c"}, T0 + 2)
    consumer = out["Consumer"]
    assert consumer["ConsumerStatus"] == "CREATING"
    assert consumer["ConsumerARN"] == f"{ARN}/consumer/c:{int(T0 + 2)}"
    by_arn = call(
        engine, "DescribeStreamConsumer", {"ConsumerARN": consumer["ConsumerARN"]}, T0 + 4
    )
    assert by_arn["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE"
    assert by_arn["ConsumerDescription"]["StreamARN"] == ARN
    by_name = call(
        engine, "DescribeStreamConsumer", {"StreamARN": ARN, "ConsumerName": "c"}, T0 + 4
    )
    assert by_name == by_arn
    summary = call(engine, "DescribeStreamSummary", {"StreamName": "s"}, T0 + 4)
    assert summary["StreamDescriptionSummary"]["ConsumerCount"] == 1
    call(engine, "DeregisterStreamConsumer", {"ConsumerARN": consumer["ConsumerARN"]}, T0 + 5)
    listed = call(engine, "ListStreamConsumers", {"StreamARN": ARN}, T0 + 5.5)
    assert [c["ConsumerStatus"] for c in listed["Consumers"]] == ["DELETING"]
    summary = call(engine, "DescribeStreamSummary", {"StreamName": "s"}, T0 + 7)
    assert summary["StreamDescriptionSummary"]["ConsumerCount"] == 0
    assert call(engine, "ListStreamConsumers", {"StreamARN": ARN}, T0 + 7) == {"Consumers": []}
    with pytest.raises(ResourceNotFoundException):
        call(engine, "DescribeStreamConsumer", {"ConsumerARN": consumer["ConsumerARN"]}, T0 + 7)
    # The same name registered again is a new consumer with a new ARN.
    again = call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "c"}, T0 + 9)
    assert again["Consumer"]["ConsumerARN"] != consumer["ConsumerARN"]


def test_consumer_refusals() -> None:
    engine, arn = stream_with_consumer()
    with pytest.raises(ResourceInUseException, match="already exists"):
        call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "c"})
    for i in range(19):
        call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": f"c{i}"})
    with pytest.raises(LimitExceededException):
        call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "one-more"})
    with pytest.raises(InvalidArgumentException):
        call(engine, "DescribeStreamConsumer", {"ConsumerName": "c"})
    with pytest.raises(ValidationException, match="consumerName"):
        call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "bad name"})
    with pytest.raises(ResourceNotFoundException):
        call(engine, "RegisterStreamConsumer", {"StreamARN": ARN + "x", "ConsumerName": "c"})
    with pytest.raises(ResourceInUseException, match="consumers"):
        call(engine, "DeleteStream", {"StreamName": "s"})
    call(engine, "DeleteStream", {"StreamName": "s", "EnforceConsumerDeletion": True})
    with pytest.raises(ResourceNotFoundException):
        call(engine, "DescribeStreamConsumer", {"ConsumerARN": arn}, T0 + 1)


def test_list_pages_with_tokens() -> None:
    engine, _ = stream_with_consumer()
    for i in range(4):
        call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": f"d{i}"})
    names: list[str] = []
    body: dict[str, Any] = {"StreamARN": ARN, "MaxResults": 2}
    while True:
        page = call(engine, "ListStreamConsumers", body)
        names += [c["ConsumerName"] for c in page["Consumers"]]
        if "NextToken" not in page:
            break
        body = {"StreamARN": ARN, "NextToken": page["NextToken"], "MaxResults": 2}
    assert names == ["c", "d0", "d1", "d2", "d3"]


def test_consumers_are_kept_with_the_stream_metadata() -> None:
    engine, arn = stream_with_consumer()
    storage = engine.storage
    again = Engine(EngineConfig(state_delay_seconds=0.0), storage, random.Random(1))
    out = call(again, "DescribeStreamConsumer", {"ConsumerARN": arn})
    assert out["ConsumerDescription"]["ConsumerName"] == "c"


def test_subscription_sends_records_then_heartbeats_with_a_continuation() -> None:
    engine, arn = stream_with_consumer()
    first = put(engine, b"a", T0)
    second = put(engine, b"b", T0 + 0.5)
    sub = subscribe(engine, arn, T0 + 1)
    assert sub.initial == {}
    assert sub.wake_key == ("s", "shardId-000000000000")
    batch = sub.poll(T0 + 1)
    (event,) = batch.events
    assert event.event_type == "SubscribeToShardEvent"
    assert [r["Data"] for r in event.payload["Records"]] == [b"a", b"b"]
    assert event.payload["ContinuationSequenceNumber"] == second
    assert event.payload["MillisBehindLatest"] == 0
    assert batch.wake_at == T0 + 1 + HEARTBEAT_SECONDS
    # Nothing new: no event before the heartbeat, an empty one at it.
    assert sub.poll(T0 + 2).events == []
    idle = sub.poll(T0 + 1 + HEARTBEAT_SECONDS)
    (beat,) = idle.events
    assert beat.payload == {
        "Records": [], "ContinuationSequenceNumber": second, "MillisBehindLatest": 0
    }
    at = subscribe(engine, arn, T0 + 10, "AT_SEQUENCE_NUMBER", SequenceNumber=second)
    (again,) = at.poll(T0 + 10).events
    assert [r["Data"] for r in again.payload["Records"]] == [b"b"]
    # AFTER_SEQUENCE_NUMBER of a continuation resumes right after it.
    later = subscribe(engine, arn, T0 + 20, "AFTER_SEQUENCE_NUMBER", SequenceNumber=first)
    (resumed,) = later.poll(T0 + 20).events
    assert [r["Data"] for r in resumed.payload["Records"]] == [b"b"]


def test_latest_and_at_timestamp_positions() -> None:
    engine, arn = stream_with_consumer()
    put(engine, b"old", T0)
    sub = subscribe(engine, arn, T0 + 1, "LATEST")
    assert sub.poll(T0 + 1).events == []
    put(engine, b"new", T0 + 2)
    (event,) = sub.poll(T0 + 2).events
    assert [r["Data"] for r in event.payload["Records"]] == [b"new"]
    at = subscribe(engine, arn, T0 + 10, "AT_TIMESTAMP", Timestamp=T0 + 1)
    (event,) = at.poll(T0 + 10).events
    assert [r["Data"] for r in event.payload["Records"]] == [b"new"]


def test_millis_behind_latest_while_catching_up() -> None:
    engine, arn = stream_with_consumer()
    big = b"x" * (MAX_EVENT_BYTES // 2)
    for i in range(3):
        put(engine, big, T0 + i)
    sub = subscribe(engine, arn, T0 + 10)
    batch = sub.poll(T0 + 10)
    (event,) = batch.events
    assert len(event.payload["Records"]) == 1  # the event's byte cap
    assert event.payload["MillisBehindLatest"] == 10_000
    assert batch.wake_at == T0 + 10  # more is waiting: poll again at once
    rest = [e for _ in range(3) for e in sub.poll(T0 + 10).events]
    assert [len(e.payload["Records"]) for e in rest] == [1, 1]
    assert rest[-1].payload["MillisBehindLatest"] == 0


def test_takeover_within_five_seconds_is_refused_after_it_ends_the_old_one() -> None:
    engine, arn = stream_with_consumer()
    old = subscribe(engine, arn, T0)
    with pytest.raises(ResourceInUseException):
        subscribe(engine, arn, T0 + 4.9)
    new = subscribe(engine, arn, T0 + 5)
    assert old.poll(T0 + 5).wake_at is None
    assert new.poll(T0 + 5).wake_at is not None
    old.close()  # the shell releasing the old one does not drop the new one
    assert engine.consumers.subscriptions[(arn, "shardId-000000000000")] is new


def test_subscription_expires_after_five_minutes() -> None:
    engine, arn = stream_with_consumer()
    sub = subscribe(engine, arn, T0)
    assert sub.expires_at == T0 + LIFETIME_SECONDS
    batch = sub.poll(T0 + LIFETIME_SECONDS - 1)
    assert batch.wake_at is not None
    assert batch.wake_at <= T0 + LIFETIME_SECONDS
    assert sub.poll(T0 + LIFETIME_SECONDS).wake_at is None


def test_closed_shard_ends_with_child_shards() -> None:
    engine, arn = stream_with_consumer()
    put(engine, b"before", T0)
    sub = subscribe(engine, arn, T0)
    (_event,) = sub.poll(T0).events
    call(engine, "SplitShard", {
        "StreamName": "s", "ShardToSplit": "shardId-000000000000",
        "NewStartingHashKey": str(2**127),
    }, T0 + 1)
    end = sub.poll(T0 + 1)
    (last,) = end.events
    assert end.wake_at is None
    assert "ContinuationSequenceNumber" not in last.payload
    children = last.payload["ChildShards"]
    assert [c["ShardId"] for c in children] == ["shardId-000000000001", "shardId-000000000002"]
    assert all(c["ParentShards"] == ["shardId-000000000000"] for c in children)


def test_deregistering_ends_subscriptions_with_an_exception_event() -> None:
    engine, arn = stream_with_consumer()
    sub = subscribe(engine, arn, T0)
    call(engine, "DeregisterStreamConsumer", {"ConsumerARN": arn}, T0 + 1)
    batch = sub.poll(T0 + 1)
    assert batch.wake_at is None
    assert [(e.event_type, e.exception) for e in batch.events] == [
        ("ResourceNotFoundException", True)
    ]


def test_subscribe_refusals_and_rate() -> None:
    engine = make_engine(limits=Limits())
    call(engine, "CreateStream", {"StreamName": "s", "ShardCount": 1})
    arn = call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "c"})[
        "Consumer"]["ConsumerARN"]
    with pytest.raises(ResourceNotFoundException):
        subscribe(engine, arn, T0, shard=7)
    with pytest.raises(ResourceNotFoundException):
        subscribe(engine, arn.replace("/c:", "/zz:"), T0)
    with pytest.raises(InvalidArgumentException):
        subscribe(engine, arn, T0, "AT_SEQUENCE_NUMBER")
    with pytest.raises(DryRunOperationException):
        call(engine, "SubscribeToShard", {
            "ConsumerARN": arn, "ShardId": "shardId-000000000000",
            "StartingPosition": {"Type": "LATEST"}, "DryRun": True,
        })
    first = subscribe(engine, arn, T0 + 10)
    first.close()
    with pytest.raises(LimitExceededException):
        subscribe(engine, arn, T0 + 10.5)
    assert isinstance(subscribe(engine, arn, T0 + 11.5), EventStream)


def test_each_consumer_has_its_own_read_budget() -> None:
    # 1 KiB/s per consumer and shard, one second of burst.
    limits = Limits(read_bytes_per_second=1024.0, read_calls_per_second=5.0)
    engine = make_engine(limits=limits)
    call(engine, "CreateStream", {"StreamName": "s", "ShardCount": 1})
    arns = [
        call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": n})[
            "Consumer"]["ConsumerARN"]
        for n in ("a", "b")
    ]
    for i in range(4):
        put(engine, b"x" * 999, T0 + i * 0.01)
    subs = [subscribe(engine, a, T0 + 1) for a in arns]
    for sub in subs:
        (event,) = sub.poll(T0 + 1).events  # the whole backlog: 4 KB, into debt
        assert len(event.payload["Records"]) == 4
    put(engine, b"y", T0 + 1.1)
    for sub in subs:
        paused = sub.poll(T0 + 1.1)
        assert paused.events == []
        assert paused.wake_at is not None
        assert paused.wake_at > T0 + 3.5
        # Shard reads (GetRecords) are not charged by fan-out.
    assert engine.throughput is not None
    assert engine.throughput.admit_read("s", "shardId-000000000000", T0 + 1.1)


def test_deleting_the_stream_ends_its_subscriptions() -> None:
    engine, arn = stream_with_consumer()
    sub = subscribe(engine, arn, T0)
    changed: list[tuple[str, str]] = []
    engine.streams.on_shard_change = lambda name, shard: changed.append((name, shard))
    call(engine, "DeleteStream", {"StreamName": "s", "EnforceConsumerDeletion": True}, T0 + 1)
    assert changed == [("s", "shardId-000000000000")]
    (event,) = sub.poll(T0 + 1).events
    assert event.exception
    assert event.event_type == "ResourceNotFoundException"


def test_an_idle_continuation_on_an_empty_shard_loses_no_later_record() -> None:
    engine, arn = stream_with_consumer()
    sub = subscribe(engine, arn, T0)
    (beat,) = sub.poll(T0 + HEARTBEAT_SECONDS).events
    continuation = beat.payload["ContinuationSequenceNumber"]
    shards = call(engine, "ListShards", {"StreamName": "s"})["Shards"]
    assert continuation == shards[0]["SequenceNumberRange"]["StartingSequenceNumber"]
    sub.close()
    first = put(engine, b"first", T0 + 5)
    assert int(first) > int(continuation)
    resumed = subscribe(
        engine, arn, T0 + 10, "AFTER_SEQUENCE_NUMBER", SequenceNumber=continuation
    )
    (event,) = resumed.poll(T0 + 10).events
    assert [r["Data"] for r in event.payload["Records"]] == [b"first"]
