"""Enhanced fan-out end to end: boto3's subscribe_to_shard against the real server."""

from __future__ import annotations

import http.client
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import cbor2
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError

from server.core.subscription import MAX_EVENT_BYTES, Subscription
from server.web.app import SIGNALS_KEY
from server.web.subscriptions import ShardSignals
from tests.server.test_wire import AUTH, CBOR, _millis
from tests.support import FakeClock, ServerThread, make_client

SHARD0 = "shardId-000000000000"


def create(kinesis: Any, shards: int) -> tuple[str, str]:
    name = f"fan-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.01, "MaxAttempts": 100}
    )
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    return name, arn


def register(kinesis: Any, stream_arn: str, name: str) -> str:
    arn: str = kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName=name)[
        "Consumer"]["ConsumerARN"]
    while kinesis.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"][
            "ConsumerStatus"] != "ACTIVE":
        pass  # state delay 0: ACTIVE at the next look
    return arn


def test_consumer_actions_over_the_wire(kinesis: Any) -> None:
    _, stream_arn = create(kinesis, 1)
    arn = register(kinesis, stream_arn, "one")
    listed = kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"]
    assert [(c["ConsumerName"], c["ConsumerARN"]) for c in listed] == [("one", arn)]
    assert listed[0]["ConsumerCreationTimestamp"].year >= 2024
    with pytest.raises(ClientError) as info:
        kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="one")
    assert info.value.response["Error"]["Code"] == "ResourceInUseException"
    kinesis.deregister_stream_consumer(StreamARN=stream_arn, ConsumerName="one")
    with pytest.raises(ClientError) as info:
        kinesis.describe_stream_consumer(ConsumerARN=arn)
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


class Reader:
    """One consumer reading every shard of a stream over SubscribeToShard, following
    ChildShards, in one thread per shard (each with its own client and connection)."""

    def __init__(self, url: str, consumer_arn: str) -> None:
        self.url = url
        self.arn = consumer_arn
        self.received: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.started: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Condition()
        self.done = threading.Event()
        self.errors: list[BaseException] = []

    def start(self, shard_id: str) -> None:
        with self.lock:
            if shard_id in self.started:
                return
            self.started.add(shard_id)
            thread = threading.Thread(target=self._read, args=(shard_id,), daemon=True)
            self.threads.append(thread)
        thread.start()

    def wait_for(self, total: int) -> bool:
        """Block until ``total`` records have arrived (False after 30 s)."""
        with self.lock:
            return self.lock.wait_for(
                lambda: sum(len(v) for v in self.received.values()) >= total, 30
            )

    def _read(self, shard_id: str) -> None:
        client = make_client(self.url)
        events: Any = None
        try:
            response = client.subscribe_to_shard(
                ConsumerARN=self.arn, ShardId=shard_id,
                StartingPosition={"Type": "TRIM_HORIZON"},
            )
            events = response["EventStream"]
            for event in events:
                body = event["SubscribeToShardEvent"]
                with self.lock:
                    self.received[shard_id] += [
                        (r["SequenceNumber"], r["Data"]) for r in body["Records"]
                    ]
                    self.lock.notify_all()
                for child in body.get("ChildShards", []):
                    self.start(child["ShardId"])
        except BaseException as error:  # surfaced by the test, unless ended by stop()
            if not self.done.is_set():
                self.errors.append(error)
        finally:
            if events is not None:
                events.close()
            client.close()

    def stop(self, kinesis: Any) -> None:
        """Deregister the consumer, which ends its streams at once, and join the threads."""
        self.done.set()
        kinesis.deregister_stream_consumer(ConsumerARN=self.arn)
        for thread in list(self.threads):
            thread.join(30)
        assert not self.errors, self.errors


def test_two_consumers_each_get_every_record_across_a_split(server_url: str) -> None:
    kinesis = make_client(server_url)
    name, stream_arn = create(kinesis, 4)
    readers = [Reader(server_url, register(kinesis, stream_arn, n)) for n in ("a", "b")]
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]]
    for reader in readers:
        for shard_id in shards:
            reader.start(shard_id)
    expected: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    total = 0
    try:
        for batch in range(20):
            if batch == 10:
                kinesis.split_shard(
                    StreamName=name, ShardToSplit=SHARD0, NewStartingHashKey=str(2**125)
                )
            entries = [
                {"Data": f"{batch}-{i}".encode(), "PartitionKey": f"k{batch}-{i}"}
                for i in range(25)
            ]
            out = kinesis.put_records(StreamName=name, Records=entries)
            assert out["FailedRecordCount"] == 0
            for entry, result in zip(entries, out["Records"], strict=True):
                expected[result["ShardId"]].append((result["SequenceNumber"], entry["Data"]))
            total += len(entries)
        assert {"shardId-000000000004", "shardId-000000000005"} <= set(expected)
        for reader in readers:  # every record is pushed: woken as each one arrives
            assert reader.wait_for(total)
    finally:
        for reader in readers:
            reader.stop(kinesis)
        kinesis.close()
    for reader in readers:
        got = {shard: records for shard, records in reader.received.items() if records}
        assert got == dict(expected)  # none lost, none duplicated, in order per shard
        assert {"shardId-000000000004", "shardId-000000000005"} <= reader.started


@pytest.fixture
def clocked_server() -> Iterator[tuple[ServerThread, FakeClock]]:
    clock = FakeClock()
    thread = ServerThread(clock=clock, state_delay_seconds=0.0, limits="off").start()
    try:
        yield thread, clock
    finally:
        thread.stop()


def test_second_subscription_within_five_seconds_is_refused_then_takes_over(
    clocked_server: tuple[ServerThread, FakeClock],
) -> None:
    thread, clock = clocked_server
    kinesis = make_client(thread.url)
    _, stream_arn = create(kinesis, 1)
    arn = register(kinesis, stream_arn, "c")
    position = {"Type": "LATEST"}
    first = kinesis.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition=position)
    clock.now += 4.9
    with pytest.raises(ClientError) as info:
        kinesis.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition=position)
    assert info.value.response["Error"]["Code"] == "ResourceInUseException"
    clock.now += 0.1
    other = make_client(thread.url)
    second = other.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0, StartingPosition=position)
    # The old stream ends (its iteration finishes, after at most a heartbeat).
    old_events = list(first["EventStream"])
    first["EventStream"].close()
    assert all(e["SubscribeToShardEvent"]["Records"] == [] for e in old_events)
    assert len(old_events) <= 1
    second["EventStream"].close()
    other.close()
    kinesis.close()


def test_a_subscription_ends_after_five_minutes(
    clocked_server: tuple[ServerThread, FakeClock],
) -> None:
    thread, clock = clocked_server
    kinesis = make_client(thread.url)
    name, stream_arn = create(kinesis, 1)
    arn = register(kinesis, stream_arn, "c")
    response = kinesis.subscribe_to_shard(
        ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "LATEST"}
    )
    clock.now += 300
    # The record wakes the stream, which finds itself expired: it ends without sending it.
    kinesis.put_record(StreamName=name, Data=b"late", PartitionKey="p")
    records = [r for e in response["EventStream"] for r in e["SubscribeToShardEvent"]["Records"]]
    response["EventStream"].close()
    assert records == []
    # A new subscription (as a client renews every 5 minutes) reads on from there.
    renewed = kinesis.subscribe_to_shard(
        ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "TRIM_HORIZON"}
    )
    for event in renewed["EventStream"]:
        if event["SubscribeToShardEvent"]["Records"]:
            assert event["SubscribeToShardEvent"]["Records"][0]["Data"] == b"late"
            break
    renewed["EventStream"].close()
    kinesis.close()


def _live(thread: ServerThread) -> ShardSignals:
    assert thread.server is not None
    runner = thread.server._runner
    assert runner is not None
    return runner.app[SIGNALS_KEY]


def test_a_subscriber_that_stops_reading_does_not_grow_server_memory() -> None:
    with ServerThread(state_delay_seconds=0.0, limits="off") as thread:
        kinesis = make_client(thread.url)
        name, stream_arn = create(kinesis, 1)
        arn = register(kinesis, stream_arn, "slow")
        stalled = kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "TRIM_HORIZON"}
        )
        record = b"z" * 1_000_000
        written = 0
        for _ in range(6):  # 30 MB: more than the socket buffers on both sides hold
            out = kinesis.put_records(
                StreamName=name, Records=[{"Data": record, "PartitionKey": "p"}] * 5
            )
            assert out["FailedRecordCount"] == 0
            written += 5
        (live,) = _live(thread).live
        sub = live.stream
        assert isinstance(sub, Subscription)
        # The server holds at most one event and the transport's buffer for it: an event
        # carries at most MAX_EVENT_BYTES of data, base64 in JSON (4 bytes for 3), plus
        # its JSON and framing ...
        one_event = 4 * -(-MAX_EVENT_BYTES // 3) + 2**16
        assert live.buffered_bytes() <= one_event + 2**17
        # ... and has not read the backlog into memory: the subscription lags behind.
        last = int(out["Records"][-1]["SequenceNumber"])
        assert sub.position <= last, (sub.position, last)
        # Once read again, it catches up from storage: every record, in order.
        seen = 0
        for event in stalled["EventStream"]:
            seen += len(event["SubscribeToShardEvent"]["Records"])
            if seen >= written:
                break
        stalled["EventStream"].close()
        assert seen == written
        kinesis.close()


def test_stopping_the_server_ends_a_stalled_stream() -> None:
    thread = ServerThread(state_delay_seconds=0.0, limits="off").start()
    kinesis = make_client(thread.url)
    try:
        name, stream_arn = create(kinesis, 1)
        arn = register(kinesis, stream_arn, "stalled")
        stalled = kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "TRIM_HORIZON"}
        )
        for _ in range(4):
            kinesis.put_records(
                StreamName=name, Records=[{"Data": b"s" * 1_000_000, "PartitionKey": "p"}] * 5
            )
        (live,) = _live(thread).live
        assert live.buffered_bytes() > 0  # blocked on a client that does not read
    finally:
        thread.stop()  # returns at once rather than after the stream's expiry
        kinesis.close()
    assert not thread._thread.is_alive()
    stalled["EventStream"].close()


def test_a_cbor_client_gets_cbor_payloads(server_url: str) -> None:
    kinesis = make_client(server_url)
    name, stream_arn = create(kinesis, 1)
    arn = register(kinesis, stream_arn, "java")
    kinesis.put_record(StreamName=name, Data=b"\x00\xffbin", PartitionKey="p")
    kinesis.close()
    parts = urlsplit(server_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        body = cbor2.dumps({
            "ConsumerARN": arn, "ShardId": SHARD0, "StartingPosition": {"Type": "TRIM_HORIZON"}
        })
        target = "Kinesis_20131202.SubscribeToShard"
        headers = {**AUTH, "Content-Type": CBOR, "X-Amz-Target": target}
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/vnd.amazon.eventstream"
        buffer = EventStreamBuffer()
        messages: list[Any] = []
        while len(messages) < 2:
            buffer.add_data(response.read1(65536))
            messages += list(buffer)
    finally:
        conn.close()
    initial, event = messages[:2]
    assert initial.headers[":event-type"] == "initial-response"
    assert event.headers[":event-type"] == "SubscribeToShardEvent"
    assert event.headers[":content-type"] == CBOR
    payload = cbor2.loads(event.payload, semantic_decoders={1: _millis})
    (record,) = payload["Records"]
    assert record["Data"] == b"\x00\xffbin"  # a byte string, not base64
    assert record["ApproximateArrivalTimestamp"] > 1_700_000_000_000  # tag 1, milliseconds


def test_durable_server_serves_subscriptions_and_keeps_consumers(tmp_path: Any) -> None:
    with ServerThread(state_delay_seconds=0.0, limits="off", data_dir=str(tmp_path)) as thread:
        kinesis = make_client(thread.url)
        name, stream_arn = create(kinesis, 1)
        arn = register(kinesis, stream_arn, "kept")
        response = kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=SHARD0, StartingPosition={"Type": "LATEST"}
        )
        events = response["EventStream"]
        kinesis.put_record(StreamName=name, Data=b"durable", PartitionKey="p")
        got: list[bytes] = []
        for event in events:
            got += [r["Data"] for r in event["SubscribeToShardEvent"]["Records"]]
            if got:
                break
        events.close()
        assert got == [b"durable"]
        kinesis.close()
    with ServerThread(state_delay_seconds=0.0, limits="off", data_dir=str(tmp_path)) as thread:
        kinesis = make_client(thread.url)
        described = kinesis.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"]
        assert (described["ConsumerName"], described["ConsumerStatus"]) == ("kept", "ACTIVE")
        kinesis.close()
