"""The real server's /metrics and audit log with the stream settings and fan-out actions:
enhanced monitoring drives the shard-level families, SubscribeToShard events are counted
per consumer, and a subscription is audited when accepted."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.server.test_fanout_boto3 import SHARD0, create, register
from tests.support import ServerThread, make_client

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def shard_series(samples: Samples, stream: str) -> dict[str, float]:
    """The stream's shard-level samples, by name (shard 0 only)."""
    return {
        name: v for (name, labels), v in samples.items()
        if name.startswith("kinesis_shard_") and not name.endswith("_created")
        and dict(labels) == {"stream_name": stream, "shard_id": SHARD0}
    }


def test_enhanced_monitoring_drives_the_shard_level_families() -> None:
    with ServerThread(state_delay_seconds=0.0, limits="off") as thread:
        kinesis = make_client(thread.url)
        name, arn = create(kinesis, 1)
        kinesis.put_record(StreamName=name, Data=b"before", PartitionKey="k")
        assert shard_series(scrape(thread.url), name) == {}

        kinesis.enable_enhanced_monitoring(
            StreamName=name, ShardLevelMetrics=["IncomingRecords", "IncomingBytes"]
        )
        kinesis.put_record(StreamName=name, Data=b"abc", PartitionKey="k")
        kinesis.put_records(StreamName=name, Records=[{"Data": b"de", "PartitionKey": "k"}])
        assert shard_series(scrape(thread.url), name) == {
            "kinesis_shard_incoming_records_total": 2,
            "kinesis_shard_incoming_bytes_total": 5,
        }

        # By ARN too; what is disabled stops and its series go.
        kinesis.disable_enhanced_monitoring(StreamARN=arn, ShardLevelMetrics=["IncomingBytes"])
        kinesis.put_record(StreamName=name, Data=b"f", PartitionKey="k")
        assert shard_series(scrape(thread.url), name) == {
            "kinesis_shard_incoming_records_total": 3,
        }

        # A deleted stream's series go; a new stream of that name starts with none enabled.
        kinesis.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
        kinesis.delete_stream(StreamName=name)
        kinesis.get_waiter("stream_not_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.01, "MaxAttempts": 100}
        )
        assert shard_series(scrape(thread.url), name) == {}
        kinesis.create_stream(StreamName=name, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.01, "MaxAttempts": 100}
        )
        kinesis.put_record(StreamName=name, Data=b"g", PartitionKey="k")
        assert shard_series(scrape(thread.url), name) == {}


def test_a_durable_stream_keeps_its_shard_level_metrics_across_a_restart(
    tmp_path: Path,
) -> None:
    with ServerThread(data_dir=tmp_path, state_delay_seconds=0.0, limits="off") as thread:
        kinesis = make_client(thread.url)
        name, _ = create(kinesis, 1)
        kinesis.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["IncomingRecords"])
    with ServerThread(data_dir=tmp_path, state_delay_seconds=0.0, limits="off") as thread:
        kinesis = make_client(thread.url)
        kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k")
        assert shard_series(scrape(thread.url), name) == {
            "kinesis_shard_incoming_records_total": 1,
        }


def test_subscription_events_are_counted_and_the_call_audited_when_accepted(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.log"
    with ServerThread(state_delay_seconds=0.0, limits="off", audit_log=log) as thread:
        assert thread.server is not None
        assert thread.server._audit is not None
        audit = thread.server._audit
        written: list[dict[str, Any]] = []
        write = audit.write

        def capture(record: dict[str, Any]) -> None:
            written.append(record)
            write(record)

        audit.write = capture  # type: ignore[method-assign]
        kinesis = make_client(thread.url)
        name, stream_arn = create(kinesis, 1)
        consumer_arn = register(kinesis, stream_arn, "metered")
        kinesis.put_records(StreamName=name, Records=[
            {"Data": b"x" * (n + 1), "PartitionKey": "k"} for n in range(4)
        ])
        answer = kinesis.subscribe_to_shard(
            ConsumerARN=consumer_arn, ShardId=SHARD0,
            StartingPosition={"Type": "TRIM_HORIZON"},
        )
        events = answer["EventStream"]
        records = 0
        for event in events:
            records += len(event["SubscribeToShardEvent"]["Records"])
            if records == 4:
                break
        # The stream is still open: its call is on record already, once.
        subscribed = [r for r in written if r["eventName"] == "SubscribeToShard"]
        assert len(subscribed) == 1
        assert subscribed[0]["requestID"] == answer["ResponseMetadata"]["RequestId"]
        assert subscribed[0]["requestParameters"]["consumerARN"] == consumer_arn
        assert subscribed[0]["responseElements"] is None
        assert "errorCode" not in subscribed[0]
        events.close()
        samples = scrape(thread.url)
    labels = (("consumer_name", "metered"), ("stream_name", name))
    assert samples[("kinesis_subscribe_to_shard_success_total", labels)] == 1
    assert samples[("kinesis_subscribe_to_shard_event_records_total", labels)] == 4
    assert samples[("kinesis_subscribe_to_shard_event_bytes_total", labels)] == 1 + 2 + 3 + 4
    assert samples[("kinesis_subscribe_to_shard_event_success_total", labels)] >= 1
    assert [r["eventName"] for r in written].count("SubscribeToShard") == 1
