"""Encryption, stream mode, enhanced monitoring and resource policies through boto3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WAIT = {"Delay": 0.01, "MaxAttempts": 100}


def test_settings_round_trip(kinesis: Any, make_stream: Callable[..., str]) -> None:
    name = make_stream(2)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/k")
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig=WAIT)
    described = kinesis.describe_stream(StreamName=name)["StreamDescription"]
    assert (described["EncryptionType"], described["KeyId"]) == ("KMS", "alias/k")
    put = kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="k")
    assert put["EncryptionType"] == "KMS"
    assert kinesis.put_records(
        StreamName=name, Records=[{"Data": b"y", "PartitionKey": "k"}]
    )["EncryptionType"] == "KMS"

    kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig=WAIT)
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}

    out = kinesis.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["IncomingBytes"])
    assert (out["CurrentShardLevelMetrics"], out["DesiredShardLevelMetrics"]) == (
        [], ["IncomingBytes"]
    )
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert summary["EnhancedMonitoring"] == [{"ShardLevelMetrics": ["IncomingBytes"]}]
    kinesis.disable_enhanced_monitoring(StreamARN=arn, ShardLevelMetrics=["ALL"])

    policy = '{"Version":"2012-10-17","Statement":[]}'
    kinesis.put_resource_policy(ResourceARN=arn, Policy=policy)
    assert kinesis.get_resource_policy(ResourceARN=arn)["Policy"] == policy
    kinesis.delete_resource_policy(ResourceARN=arn)
    assert kinesis.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"
