"""The server's ``/metrics``: CloudWatch's AWS/Kinesis metrics as Prometheus families."""

from __future__ import annotations

import base64
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.core.actions import ACTIONS
from server.core.errors import InternalFailure, ProvisionedThroughputExceededException
from server.web.metrics import ServerMetrics, snake_case
from tests.support import FakeClock, ServerThread, make_client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def metrics(clock: FakeClock | None = None) -> ServerMetrics:
    return ServerMetrics(clock or FakeClock(), lambda token: ("s", token))


def value(m: ServerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("cloudwatch", "snake"),
    [
        ("IncomingBytes", "incoming_bytes"),
        ("PutRecords.TotalRecords", "put_records_total_records"),
        ("GetRecords.IteratorAgeMilliseconds", "get_records_iterator_age_milliseconds"),
        (
            "SubscribeToShardEvent.MillisBehindLatest",
            "subscribe_to_shard_event_millis_behind_latest",
        ),
        ("WriteProvisionedThroughputExceeded", "write_provisioned_throughput_exceeded"),
    ],
)
def test_names(cloudwatch: str, snake: str) -> None:
    assert snake_case(cloudwatch) == snake


def test_put_records_counts_each_outcome() -> None:
    m = metrics()
    request = {"StreamName": "s", "Records": [
        {"Data": b64(b"abc"), "PartitionKey": "a"},
        {"Data": b64(b"defgh"), "PartitionKey": "b"},
        {"Data": b64(b"x"), "PartitionKey": "c"},
        {"Data": b64(b"y"), "PartitionKey": "d"},
    ]}
    answer = {"FailedRecordCount": 2, "Records": [
        {"ShardId": "shardId-000000000000", "SequenceNumber": "1"},
        {"ShardId": "shardId-000000000001", "SequenceNumber": "2"},
        {"ErrorCode": ProvisionedThroughputExceededException.code,
         "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream s under "
                         "account 000000000000."},
        {"ErrorCode": InternalFailure.code, "ErrorMessage": "Internal service failure."},
    ]}
    m.observe_call(ACTIONS["PutRecords"], request, answer, None, 0.002)
    expect = {
        "kinesis_incoming_bytes_total": 8, "kinesis_incoming_records_total": 2,
        "kinesis_put_records_bytes_total": 8, "kinesis_put_records_success_total": 1,
        "kinesis_put_records_total_records_total": 4,
        "kinesis_put_records_successful_records_total": 2,
        "kinesis_put_records_failed_records_total": 1,
        "kinesis_put_records_throttled_records_total": 1,
        "kinesis_write_provisioned_throughput_exceeded_total": 1,
        "kinesis_put_records_latency_seconds_count": 1,
    }
    assert {name: value(m, name, stream_name="s") for name in expect} == expect
    # No shard-level series unless the stream enabled them.
    assert value(m, "kinesis_shard_incoming_bytes_total", stream_name="s",
                 shard_id="shardId-000000000000") is None


def test_shard_level_metrics_only_for_what_a_stream_enabled() -> None:
    m = metrics()
    m.set_shard_level_metrics("s", ["IncomingRecords", "WriteProvisionedThroughputExceeded"])
    m.set_shard_level_metrics("other", ["ALL"])
    request = {"StreamName": "s", "Records": [
        {"Data": b64(b"abc"), "PartitionKey": "a"}, {"Data": b64(b"d"), "PartitionKey": "b"},
    ]}
    answer = {"Records": [
        {"ShardId": "shardId-000000000000", "SequenceNumber": "1"},
        {"ErrorCode": ProvisionedThroughputExceededException.code,
         "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream s under "
                         "account 000000000000."},
    ]}
    m.observe_call(ACTIONS["PutRecords"], request, answer, None, 0.001)
    shard0 = {"stream_name": "s", "shard_id": "shardId-000000000000"}
    shard1 = {"stream_name": "s", "shard_id": "shardId-000000000001"}
    assert m.registry.get_sample_value("kinesis_shard_incoming_records_total", shard0) == 1
    assert m.registry.get_sample_value(
        "kinesis_shard_write_provisioned_throughput_exceeded_total", shard1
    ) == 1
    assert m.registry.get_sample_value("kinesis_shard_incoming_bytes_total", shard0) is None
    assert m.shard_level_metrics("other") == frozenset(
        ("IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
         "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded",
         "IteratorAgeMilliseconds")
    )
    m.set_shard_level_metrics("s", [])  # DisableEnhancedMonitoring: the series go away
    assert m.registry.get_sample_value("kinesis_shard_incoming_records_total", shard0) is None
    assert m.shard_level_metrics("s") == frozenset()
    with pytest.raises(ValueError, match="unknown shard-level metric 'Bogus'"):
        m.set_shard_level_metrics("s", ["Bogus"])


def test_get_records_and_put_record() -> None:
    clock = FakeClock(1000.0)
    m = metrics(clock)
    m.set_shard_level_metrics("s", ["OutgoingBytes", "IteratorAgeMilliseconds"])
    answer: dict[str, Any] = {"Records": [
        {"Data": b"abcd", "ApproximateArrivalTimestamp": 999.0, "PartitionKey": "k",
         "SequenceNumber": "1"},
        {"Data": b"ef", "ApproximateArrivalTimestamp": 999.5, "PartitionKey": "k",
         "SequenceNumber": "2"},
    ], "MillisBehindLatest": 0}
    m.observe_call(ACTIONS["GetRecords"], {"ShardIterator": "shardId-000000000003"}, answer,
                   None, 0.001)
    assert value(m, "kinesis_get_records_records_total", stream_name="s") == 2
    assert value(m, "kinesis_get_records_bytes_total", stream_name="s") == 6
    assert value(m, "kinesis_get_records_iterator_age_milliseconds", stream_name="s") == 500
    shard = {"stream_name": "s", "shard_id": "shardId-000000000003"}
    assert m.registry.get_sample_value("kinesis_shard_outgoing_bytes_total", shard) == 6
    assert m.registry.get_sample_value("kinesis_shard_iterator_age_milliseconds", shard) == 500
    m.observe_call(ACTIONS["GetRecords"], {"ShardIterator": "shardId-000000000003"}, None,
                   ProvisionedThroughputExceededException("Rate exceeded"), 0.001)
    assert value(m, "kinesis_read_provisioned_throughput_exceeded_total", stream_name="s") == 1
    m.observe_call(ACTIONS["PutRecord"], {"StreamName": "s", "Data": b64(b"12345"),
                                          "PartitionKey": "k"},
                   {"ShardId": "shardId-000000000000", "SequenceNumber": "9"}, None, 0.001)
    assert value(m, "kinesis_put_record_bytes_total", stream_name="s") == 5
    assert value(m, "kinesis_put_record_success_total", stream_name="s") == 1
    assert value(m, "kinesis_incoming_records_total", stream_name="s") == 1


def test_subscription_event_metrics() -> None:
    m = metrics()
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/app:1700000000"
    m.observe_subscription_event(arn, [{"Data": b"abc"}, {"Data": b"d"}], 1500)
    labels = {"stream_name": "s", "consumer_name": "app"}
    get = m.registry.get_sample_value
    assert get("kinesis_subscribe_to_shard_event_records_total", labels) == 2
    assert get("kinesis_subscribe_to_shard_event_bytes_total", labels) == 4
    assert get("kinesis_subscribe_to_shard_event_millis_behind_latest", labels) == 1500
    m.observe_call(ACTIONS["SubscribeToShard"], {"ConsumerARN": arn, "ShardId": "x"}, {}, None,
                   0.0)
    assert get("kinesis_subscribe_to_shard_success_total", labels) == 1


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_counters_equal_what_was_put_and_read() -> None:
    with ServerThread(state_delay_seconds=0.0, limits="off") as thread:
        client = make_client(thread.url)
        client.create_stream(StreamName="m", ShardCount=2)
        for n in range(3):
            client.put_record(StreamName="m", Data=b"r" * (n + 1), PartitionKey=str(n))
        client.put_records(StreamName="m", Records=[
            {"Data": b"x" * 10, "PartitionKey": str(n)} for n in range(20)
        ])
        read = size = 0
        for shard in client.list_shards(StreamName="m")["Shards"]:
            iterator = client.get_shard_iterator(
                StreamName="m", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            records = client.get_records(ShardIterator=iterator)["Records"]
            read += len(records)
            size += sum(len(r["Data"]) for r in records)
        samples = _scrape(thread.url)
    stream = (("stream_name", "m"),)
    assert samples[("kinesis_incoming_records_total", stream)] == 23 == read
    assert samples[("kinesis_incoming_bytes_total", stream)] == 6 + 200 == size
    assert samples[("kinesis_put_record_success_total", stream)] == 3
    assert samples[("kinesis_put_records_successful_records_total", stream)] == 20
    assert samples[("kinesis_get_records_records_total", stream)] == 23
    assert samples[("kinesis_get_records_bytes_total", stream)] == 206
    assert samples[("kinesis_get_records_success_total", stream)] == 2
    assert samples[("kinesis_put_record_latency_seconds_count", stream)] == 3
    assert not any(name.startswith("kinesis_shard_") for name, _ in samples)


async def test_the_app_carries_the_metrics_for_event_stream_writers() -> None:
    from server import StreamServer
    from server.web.app import METRICS_KEY

    async with StreamServer(port=0) as server:
        assert server._runner is not None
        assert server._runner.app[METRICS_KEY] is server.metrics
    async with StreamServer(port=0, metrics=False) as server:
        assert server._runner is not None
        assert METRICS_KEY not in server._runner.app
        assert server.metrics is None
