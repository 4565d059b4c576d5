"""``--iam`` against the real server: boto3 and the producer as three principals get
exactly what their policies say, with the service's codes and texts."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kpl import Credentials, Producer, ProducerConfig, RecordFailed
from server import StreamServer
from server.__main__ import main
from tests.server.iam_policies import ACCOUNT, ARN, PRINCIPALS
from tests.support import ServerThread


def client(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "kinesis", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ServerThread(state_delay_seconds=0.0, limits="off", iam=PRINCIPALS) as thread:
        admin = client(thread.url, "AKIAADMIN", "admin-secret")
        for name in ("orders", "orders-archive", "payments"):
            admin.create_stream(StreamName=name, ShardCount=1)
        admin.add_tags_to_stream(StreamName="payments", Tags={"team": "blue"})
        yield thread.url


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


def denied(user: str, action: str, resource: str | None, explicit: bool = False) -> str:
    on = f" on resource: {resource}" if resource else ""
    why = (
        " with an explicit deny in an identity-based policy"
        if explicit
        else f" because no identity-based policy allows the kinesis:{action} action"
    )
    return (
        f"User: arn:aws:iam::{ACCOUNT}:user/{user} is not authorized to perform: "
        f"kinesis:{action}{on}{why}"
    )


def test_writer_gets_what_its_policy_says(url: str) -> None:
    writer = client(url, "AKIAWRITER", "writer-secret")
    writer.put_record(StreamName="orders", Data=b"x", PartitionKey="k")
    writer.put_records(StreamName="orders", Records=[{"Data": b"y", "PartitionKey": "k"}])
    writer.describe_stream_summary(StreamName="orders")
    writer.list_shards(StreamName="orders")
    archive = error_of(
        writer.put_record, StreamName="orders-archive", Data=b"x", PartitionKey="k"
    )
    assert archive == (
        "AccessDeniedException", denied("writer", "PutRecord", ARN + "orders-archive", True)
    )
    # PutRecords is refused whole, never per entry.
    code, _ = error_of(
        writer.put_records, StreamName="orders-archive",
        Records=[{"Data": b"y", "PartitionKey": "k"}],
    )
    assert code == "AccessDeniedException"
    assert error_of(writer.put_record, StreamName="payments", Data=b"x", PartitionKey="k") == (
        "AccessDeniedException", denied("writer", "PutRecord", ARN + "payments")
    )
    assert error_of(writer.delete_stream, StreamName="orders") == (
        "AccessDeniedException", denied("writer", "DeleteStream", ARN + "orders")
    )
    assert error_of(writer.list_streams) == (
        "AccessDeniedException", denied("writer", "ListStreams", None)
    )


def test_reader_reads_orders_only(url: str) -> None:
    reader = client(url, "AKIAREADER", "reader-secret")
    iterator = reader.get_shard_iterator(
        StreamName="orders", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    reader.get_records(ShardIterator=iterator)
    put = error_of(reader.put_record, StreamName="orders", Data=b"x", PartitionKey="k")
    assert put == ("AccessDeniedException", denied("reader", "PutRecord", ARN + "orders"))
    assert error_of(
        reader.get_shard_iterator, StreamName="payments", ShardId="shardId-000000000000",
        ShardIteratorType="TRIM_HORIZON",
    )[0] == "AccessDeniedException"
    # An iterator another principal obtained is checked against the stream it reads.
    admin = client(url, "AKIAADMIN", "admin-secret")
    foreign = admin.get_shard_iterator(
        StreamName="payments", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert error_of(reader.get_records, ShardIterator=foreign) == (
        "AccessDeniedException", denied("reader", "GetRecords", ARN + "payments")
    )


def test_a_list_shards_token_is_checked_against_its_stream(url: str) -> None:
    admin = client(url, "AKIAADMIN", "admin-secret")
    admin.create_stream(StreamName="paged", ShardCount=2)
    token = admin.list_shards(StreamName="paged", MaxResults=1)["NextToken"]
    writer = client(url, "AKIAWRITER", "writer-secret")
    assert error_of(writer.list_shards, NextToken=token) == (
        "AccessDeniedException", denied("writer", "ListShards", ARN + "paged")
    )
    admin.create_stream(StreamName="orders-paged", ShardCount=2)
    first = writer.list_shards(StreamName="orders-paged", MaxResults=1)
    second = writer.list_shards(NextToken=first["NextToken"])
    assert [s["ShardId"] for s in first["Shards"] + second["Shards"]] == [
        "shardId-000000000000", "shardId-000000000001"
    ]


def test_resource_tag_condition(url: str) -> None:
    tagged = client(url, "AKIATAGGED", "tagged-secret")
    tagged.describe_stream_summary(StreamName="payments")
    assert error_of(tagged.describe_stream_summary, StreamName="orders")[0] == (
        "AccessDeniedException"
    )


def test_bad_credentials_are_refused_as_the_service_does(url: str) -> None:
    assert error_of(client(url, "AKIAWRITER", "wrong").list_shards, StreamName="orders") == (
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.",
    )
    assert error_of(client(url, "AKIANOBODY", "x").list_shards, StreamName="orders") == (
        "UnrecognizedClientException", "The security token included in the request is invalid."
    )


def test_a_ten_minute_old_signature_is_expired() -> None:
    # The server's clock runs 10 minutes ahead of the signer's.
    with ServerThread(iam=PRINCIPALS, clock=lambda: time.time() + 600) as thread:
        code, message = error_of(client(thread.url, "AKIAADMIN", "admin-secret").list_streams)
    assert code == "InvalidSignatureException"
    match = re.fullmatch(
        r"Signature expired: (\d{8}T\d{6}Z) is now earlier than (\d{8}T\d{6}Z) "
        r"\((\d{8}T\d{6}Z) - 5 min\.\)",
        message,
    )
    assert match is not None, message
    signed, limit, now = (
        datetime.strptime(t, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for t in match.groups()
    )
    assert (now - limit).total_seconds() == 300
    assert 590 <= (now - signed).total_seconds() <= 610


def test_a_missing_authorization_header(url: str) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=b"{}", method="POST",
        headers={"X-Amz-Target": "Kinesis_20131202.ListStreams",
                 "Content-Type": "application/x-amz-json-1.1"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert b"MissingAuthenticationTokenException" in caught.value.read()
    assert caught.value.code == 400


async def test_the_producer_as_each_principal() -> None:
    fast = ProducerConfig(record_max_buffered_time=0.01, min_backoff=0.0, max_backoff=0.05)
    async with StreamServer(port=0, state_delay_seconds=0.0, iam=PRINCIPALS) as server:
        await _create(server.url, "orders")
        writer = Credentials("AKIAWRITER", "writer-secret")
        async with Producer("orders", server.url, "us-east-1", fast, credentials=writer) as p:
            result = await (await p.put(b"hello", partition_key="k"))
            assert result.shard_id == "shardId-000000000000"
        reader = Credentials("AKIAREADER", "reader-secret")
        async with Producer("orders", server.url, "us-east-1", fast, credentials=reader) as p:
            future = p.put_nowait(b"hello", partition_key="k")
            with pytest.raises(RecordFailed) as failed:
                await asyncio.wait_for(future, 10)
        # Refused at once, not retried until its deadline.
        assert failed.value.code == "AccessDeniedException"
        assert len(failed.value.attempts) == 1


async def _create(url: str, name: str) -> None:
    from kpl import KinesisClient

    admin = Credentials("AKIAADMIN", "admin-secret")
    client = KinesisClient(url, region="us-east-1", credentials=admin)
    try:
        await client.create_stream(name, 1)
        await client.wait_for_active(name, interval=0.01)
    finally:
        await client.close()


def test_a_malformed_iam_file_is_a_one_line_start_up_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "iam.json"
    path.write_text('{"principals": [{"name": "w", "access_key_id": "K"}]}')
    assert main(["--iam", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"python -m server: error: --iam {path}: principal 'w': 'secret_access_key' must be "
        "a non-empty string\n"
    )
