"""Encryption, capacity mode, enhanced monitoring and resource policies (sans-IO engine)."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from server.core.calls import Reply
from server.core.engine import Engine, EngineConfig
from server.core.errors import (
    InvalidArgumentException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from server.core.settings import ALL_METRICS
from server.storage.memory import MemoryStorage

T0 = 1_800_000_000.0
ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


def engine_with_stream() -> Engine:
    engine = Engine(EngineConfig(state_delay_seconds=1.0), MemoryStorage(), random.Random(2))
    call(engine, "CreateStream", {"StreamName": "s", "ShardCount": 1}, T0 - 10)
    return engine


def call(engine: Engine, action: str, body: dict[str, Any], now: float = T0) -> Any:
    result = engine.handle(action, body, now)
    assert isinstance(result, Reply)
    return result.body


def summary(engine: Engine, now: float) -> dict[str, Any]:
    body = call(engine, "DescribeStreamSummary", {"StreamName": "s"}, now)
    return dict(body["StreamDescriptionSummary"])


def test_encryption_is_recorded_reported_and_goes_through_updating() -> None:
    engine = engine_with_stream()
    assert summary(engine, T0)["EncryptionType"] == "NONE"
    call(engine, "StartStreamEncryption", {
        "StreamName": "s", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis",
    })
    during = summary(engine, T0 + 0.5)
    assert (during["StreamStatus"], during["EncryptionType"], during["KeyId"]) == (
        "UPDATING", "KMS", "alias/aws/kinesis"
    )
    with pytest.raises(ResourceInUseException):
        call(engine, "StopStreamEncryption", {
            "StreamName": "s", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis",
        }, T0 + 0.5)
    described = call(engine, "DescribeStream", {"StreamName": "s"}, T0 + 2)["StreamDescription"]
    assert (described["StreamStatus"], described["EncryptionType"]) == ("ACTIVE", "KMS")
    data = base64.b64encode(b"x").decode()
    put = call(engine, "PutRecord", {"StreamName": "s", "Data": data, "PartitionKey": "k"}, T0 + 2)
    assert put["EncryptionType"] == "KMS"
    puts = call(engine, "PutRecords", {
        "StreamName": "s", "Records": [{"Data": data, "PartitionKey": "k"}],
    }, T0 + 2)
    assert puts["EncryptionType"] == "KMS"
    call(engine, "StopStreamEncryption", {
        "StreamARN": ARN, "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis",
    }, T0 + 3)
    after = summary(engine, T0 + 5)
    assert after["EncryptionType"] == "NONE"
    assert "KeyId" not in after
    put = call(engine, "PutRecord", {"StreamName": "s", "Data": data, "PartitionKey": "k"}, T0 + 5)
    assert "EncryptionType" not in put
    with pytest.raises(InvalidArgumentException):
        call(engine, "StartStreamEncryption", {
            "StreamName": "s", "EncryptionType": "NONE", "KeyId": "k",
        }, T0 + 5)
    with pytest.raises(ValidationException, match="keyId"):
        call(engine, "StartStreamEncryption", {
            "StreamName": "s", "EncryptionType": "KMS", "KeyId": "k" * 2049,
        }, T0 + 5)


def test_stream_mode_switches_and_is_reported() -> None:
    engine = engine_with_stream()
    details = {"StreamMode": "ON_DEMAND"}
    call(engine, "UpdateStreamMode", {"StreamARN": ARN, "StreamModeDetails": details})
    assert summary(engine, T0 + 0.5)["StreamStatus"] == "UPDATING"
    after = summary(engine, T0 + 2)
    assert after["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert after["OpenShardCount"] == 1
    with pytest.raises(InvalidArgumentException, match="already"):
        call(engine, "UpdateStreamMode", {"StreamARN": ARN, "StreamModeDetails": details}, T0 + 2)


def test_enhanced_monitoring_adds_and_removes_metrics() -> None:
    engine = engine_with_stream()
    out = call(engine, "EnableEnhancedMonitoring", {
        "StreamName": "s", "ShardLevelMetrics": ["OutgoingBytes", "IncomingBytes"],
    })
    assert out == {
        "StreamName": "s", "CurrentShardLevelMetrics": [],
        "DesiredShardLevelMetrics": ["IncomingBytes", "OutgoingBytes"], "StreamARN": ARN,
    }
    out = call(engine, "EnableEnhancedMonitoring", {"StreamARN": ARN, "ShardLevelMetrics": ["ALL"]})
    assert out["DesiredShardLevelMetrics"] == list(ALL_METRICS)
    out = call(engine, "DisableEnhancedMonitoring", {
        "StreamName": "s", "ShardLevelMetrics": ["IncomingBytes"],
    })
    assert "IncomingBytes" not in out["DesiredShardLevelMetrics"]
    assert summary(engine, T0)["EnhancedMonitoring"] == [
        {"ShardLevelMetrics": out["DesiredShardLevelMetrics"]}
    ]
    with pytest.raises(ValidationException, match="shardLevelMetrics"):
        call(engine, "EnableEnhancedMonitoring", {"StreamName": "s", "ShardLevelMetrics": ["x"]})


def test_resource_policies_for_streams_and_consumers() -> None:
    engine = engine_with_stream()
    policy = '{"Version": "2012-10-17", "Statement": []}'
    assert call(engine, "GetResourcePolicy", {"ResourceARN": ARN}) == {"Policy": "{}"}
    call(engine, "PutResourcePolicy", {"ResourceARN": ARN, "Policy": policy})
    assert call(engine, "GetResourcePolicy", {"ResourceARN": ARN}) == {"Policy": policy}
    consumer = call(engine, "RegisterStreamConsumer", {"StreamARN": ARN, "ConsumerName": "c"})[
        "Consumer"]["ConsumerARN"]
    call(engine, "PutResourcePolicy", {"ResourceARN": consumer, "Policy": policy})
    assert call(engine, "GetResourcePolicy", {"ResourceARN": consumer}) == {"Policy": policy}
    # Kept with the stream's metadata.
    again = Engine(EngineConfig(), engine.storage, random.Random(1))
    assert call(again, "GetResourcePolicy", {"ResourceARN": ARN}) == {"Policy": policy}
    call(engine, "DeleteResourcePolicy", {"ResourceARN": ARN})
    with pytest.raises(ResourceNotFoundException):
        call(engine, "DeleteResourcePolicy", {"ResourceARN": ARN})
    with pytest.raises(InvalidArgumentException):
        call(engine, "PutResourcePolicy", {"ResourceARN": ARN, "Policy": "not json"})
    with pytest.raises(ResourceNotFoundException):
        call(engine, "GetResourcePolicy", {"ResourceARN": ARN + "-other"})
    with pytest.raises(ResourceNotFoundException):
        call(engine, "GetResourcePolicy", {"ResourceARN": consumer.replace("/c:", "/d:")})
