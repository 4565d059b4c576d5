"""``--iam`` against the real server: the resource policies stored with PutResourcePolicy
(the stream's, and a consumer's) are evaluated with the caller's identity policies, and the
consumer actions are checked against the consumer's ARN however they name it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.iam_policies import ACCOUNT, ARN, PRINCIPALS
from tests.server.test_fanout_boto3 import SHARD0, register
from tests.server.test_iam_boto3 import client, denied, error_of
from tests.support import ServerThread

READER = f"arn:aws:iam::{ACCOUNT}:user/reader"
WRITER = f"arn:aws:iam::{ACCOUNT}:user/writer"


def policy(effect: str, principal: str, actions: list[str], resource: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": effect, "Principal": {"AWS": principal}, "Action": actions,
        "Resource": resource,
    }]})


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Any, Any, Any]]:
    """The admin, the writer and the reader of a server with streams ``ledger`` and
    ``orders-rp`` (the writer's identity policy allows it to put to the latter)."""
    with ServerThread(state_delay_seconds=0.0, limits="off", iam=PRINCIPALS) as thread:
        admin = client(thread.url, "AKIAADMIN", "admin-secret")
        for name in ("ledger", "orders-rp"):
            admin.create_stream(StreamName=name, ShardCount=1)
        yield (
            admin,
            client(thread.url, "AKIAWRITER", "writer-secret"),
            client(thread.url, "AKIAREADER", "reader-secret"),
        )


def test_a_stream_policy_allows_what_no_identity_policy_does(
    servers: tuple[Any, Any, Any],
) -> None:
    admin, _, reader = servers
    put = {"StreamName": "ledger", "Data": b"x", "PartitionKey": "k"}
    assert error_of(reader.put_record, **put) == (
        "AccessDeniedException", denied("reader", "PutRecord", ARN + "ledger")
    )
    admin.put_resource_policy(
        ResourceARN=ARN + "ledger",
        Policy=policy("Allow", READER, ["kinesis:PutRecord"], ARN + "ledger"),
    )
    reader.put_record(**put)
    # Only what it allows, to whom it names.
    assert error_of(reader.put_records, StreamName="ledger",
                    Records=[{"Data": b"x", "PartitionKey": "k"}])[0] == "AccessDeniedException"
    admin.delete_resource_policy(ResourceARN=ARN + "ledger")
    assert error_of(reader.put_record, **put)[0] == "AccessDeniedException"


def test_a_deny_in_a_stream_policy_wins_over_an_identity_allow(
    servers: tuple[Any, Any, Any],
) -> None:
    admin, writer, _ = servers
    put = {"StreamName": "orders-rp", "Data": b"x", "PartitionKey": "k"}
    writer.put_record(**put)
    admin.put_resource_policy(
        ResourceARN=ARN + "orders-rp",
        Policy=policy("Deny", WRITER, ["kinesis:Put*"], ARN + "orders-rp"),
    )
    code, message = error_of(writer.put_record, **put)
    assert (code, message) == (
        "AccessDeniedException",
        f"User: {WRITER} is not authorized to perform: kinesis:PutRecord on resource: "
        f"{ARN}orders-rp with an explicit deny in a resource-based policy",
    )
    admin.delete_resource_policy(ResourceARN=ARN + "orders-rp")
    writer.put_record(**put)


def test_consumer_actions_are_checked_against_the_consumer_and_its_policy(
    servers: tuple[Any, Any, Any],
) -> None:
    admin, _, reader = servers
    stream_arn = ARN + "ledger"
    consumer_arn = register(admin, stream_arn, "audited")
    by_name = {"StreamARN": stream_arn, "ConsumerName": "audited"}
    subscribe = {
        "ConsumerARN": consumer_arn, "ShardId": SHARD0,
        "StartingPosition": {"Type": "TRIM_HORIZON"},
    }
    # By name or by ARN, the resource is the consumer's ARN.
    assert error_of(reader.describe_stream_consumer, **by_name) == (
        "AccessDeniedException", denied("reader", "DescribeStreamConsumer", consumer_arn)
    )
    assert error_of(reader.deregister_stream_consumer, **by_name) == (
        "AccessDeniedException", denied("reader", "DeregisterStreamConsumer", consumer_arn)
    )
    assert error_of(reader.subscribe_to_shard, **subscribe) == (
        "AccessDeniedException", denied("reader", "SubscribeToShard", consumer_arn)
    )
    # A name the stream has no consumer of is the engine's to refuse.
    code, _ = error_of(reader.describe_stream_consumer, StreamARN=stream_arn,
                       ConsumerName="nobody")
    assert code == "ResourceNotFoundException"

    # The consumer's own policy grants on the consumer; the stream's policy, on the stream.
    admin.put_resource_policy(ResourceARN=consumer_arn, Policy=policy(
        "Allow", READER, ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"],
        consumer_arn,
    ))
    described = reader.describe_stream_consumer(**by_name)["ConsumerDescription"]
    assert described["ConsumerARN"] == consumer_arn
    reader.describe_stream_consumer(ConsumerARN=consumer_arn)
    events = reader.subscribe_to_shard(**subscribe)["EventStream"]
    for event in events:
        assert event["SubscribeToShardEvent"]["Records"] is not None
        break
    events.close()
    assert error_of(reader.deregister_stream_consumer, **by_name)[0] == "AccessDeniedException"

    # A Deny in the stream's policy reaches its consumers when it names them.
    admin.put_resource_policy(ResourceARN=stream_arn, Policy=policy(
        "Deny", READER, ["kinesis:DescribeStreamConsumer"], stream_arn + "/consumer/*",
    ))
    code, message = error_of(reader.describe_stream_consumer, ConsumerARN=consumer_arn)
    assert code == "AccessDeniedException"
    assert message.endswith("with an explicit deny in a resource-based policy")
    admin.delete_resource_policy(ResourceARN=stream_arn)
    admin.deregister_stream_consumer(**by_name)
