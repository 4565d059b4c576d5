"""The audit log: CloudTrail records (plain functions), the writer, and the real server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from server import StreamServer
from server.__main__ import main
from server.core.actions import ACTIONS
from server.core.audit import CallRecord, cloudtrail_record, scrub
from server.core.principals import parse_principals
from server.web.audit import AuditLog
from tests.server.iam_policies import POLICY_FILE
from tests.support import ServerThread

ACCOUNT = "000000000000"
PRINCIPALS = parse_principals(POLICY_FILE, ACCOUNT)
WRITER = PRINCIPALS.by_access_key["AKIAWRITER"]


def call(action: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "action": ACTIONS[action], "request_id": "req-1", "event_id": "evt-1",
        "time": 1_800_000_000.0, "region": "us-east-1", "account_id": ACCOUNT,
    }
    return cloudtrail_record(CallRecord(**{**base, **fields}))


def test_a_put_record_record_has_no_data_and_every_field() -> None:
    record = call(
        "PutRecord", principal=WRITER, source_ip="127.0.0.1", user_agent="ua",
        request={"StreamName": "orders", "Data": b"secret", "PartitionKey": "k"},
        response={"ShardId": "shardId-000000000000", "SequenceNumber": "1"},
    )
    assert record == {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser", "principalId": record["userIdentity"]["principalId"],
            "arn": f"arn:aws:iam::{ACCOUNT}:user/writer", "accountId": ACCOUNT,
            "accessKeyId": "AKIAWRITER", "userName": "writer",
        },
        "eventTime": "2027-01-15T08:00:00Z",
        "eventSource": "kinesis.amazonaws.com",
        "eventName": "PutRecord",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "127.0.0.1",
        "userAgent": "ua",
        "requestParameters": {"streamName": "orders", "partitionKey": "k"},
        "responseElements": {"shardId": "shardId-000000000000", "sequenceNumber": "1"},
        "requestID": "req-1",
        "eventID": "evt-1",
        "readOnly": False,
        "resources": [{"accountId": ACCOUNT, "type": "AWS::Kinesis::Stream",
                       "ARN": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/orders"}],
        "eventType": "AwsApiCall",
        "managementEvent": False,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Data",
    }
    assert record["userIdentity"]["principalId"].startswith("AIDA")


def test_failures_reads_and_unverified_callers() -> None:
    failed = call(
        "DeleteStream", access_key_id="AKIAX", request={"StreamName": "s"},
        error_code="AccessDeniedException", error_message="no",
    )
    assert failed["userIdentity"] == {"type": "Unknown", "accessKeyId": "AKIAX"}
    assert (failed["errorCode"], failed["errorMessage"]) == ("AccessDeniedException", "no")
    assert failed["responseElements"] is None
    assert failed["managementEvent"] is True
    assert failed["eventCategory"] == "Management"
    read = call("DescribeStreamSummary", request={"StreamName": "s"}, response={"x": 1})
    assert read["responseElements"] is None
    assert read["readOnly"] is True
    assert "errorCode" not in read
    unparsed = call("ListStreams")
    assert unparsed["requestParameters"] is None
    assert unparsed["resources"] == []


def test_scrub_drops_data_and_record_lists_everywhere() -> None:
    body = {"Records": [{"Data": "aGk=", "PartitionKey": "a"}], "StreamName": "s",
            "Blob": b"x", "Nested": [{"Data": "aGk=", "Key": b"k", "N": 1}, b"raw"]}
    assert scrub(body) == {"streamName": "s", "nested": [{"n": 1}]}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_writer_flushes_while_running_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, flush_seconds=0.05)
    try:
        log.write({"n": 1})
        # The writer thread flushes on its own schedule, without waiting for close().
        assert log.flushed.wait(10)
        assert _lines(path) == [{"n": 1}]
        for n in range(2, 1002):
            log.write({"n": n})
    finally:
        log.close()
    assert [line["n"] for line in _lines(path)] == list(range(1, 1002))
    log.close()  # idempotent


async def test_a_log_that_cannot_be_opened_is_a_start_up_error(tmp_path: Path) -> None:
    server = StreamServer(port=0, audit_log=tmp_path / "missing" / "audit.log")
    with pytest.raises(OSError, match="cannot write the audit log"):
        await server.start()


def test_main_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "audit.log"
    assert main(["--port", "0", "--audit-log", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot write the audit log {target}" in err


def _client(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "kinesis", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )


def _request_id(call: Any, **kwargs: Any) -> tuple[str, str | None]:
    try:
        answer = call(**kwargs)
    except ClientError as error:
        return error.response["ResponseMetadata"]["RequestId"], error.response["Error"]["Code"]
    return answer["ResponseMetadata"]["RequestId"], None


def test_one_record_per_call_with_matching_ids_and_no_data(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    secret_data = b"do-not-log-this-payload"
    with ServerThread(state_delay_seconds=0.0, limits="off", iam=PRINCIPALS,
                      audit_log=path) as thread:
        admin = _client(thread.url, "AKIAADMIN", "admin-secret")
        writer = _client(thread.url, "AKIAWRITER", "writer-secret")
        calls = [
            ("CreateStream", _request_id(admin.create_stream, StreamName="orders", ShardCount=1)),
            ("PutRecord", _request_id(writer.put_record, StreamName="orders", Data=secret_data,
                                      PartitionKey="k")),
            ("PutRecords", _request_id(writer.put_records, StreamName="orders",
                                       Records=[{"Data": secret_data, "PartitionKey": "k"}])),
            ("DeleteStream", _request_id(writer.delete_stream, StreamName="orders")),
            ("GetRecords", _request_id(admin.get_records, ShardIterator=admin.get_shard_iterator(
                StreamName="orders", ShardId="shardId-000000000000",
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"])),
            ("ListStreams", _request_id(_client(thread.url, "AKIAWRITER", "bad").list_streams)),
        ]
    records = [r for r in _lines(path) if r["eventName"] != "GetShardIterator"]
    assert [(r["eventName"], r["requestID"], r.get("errorCode")) for r in records] == [
        (name, rid, code) for name, (rid, code) in calls
    ]
    # GetRecords names its stream by iterator only; its record names the stream.
    assert records[4]["resources"] == [{
        "accountId": ACCOUNT, "type": "AWS::Kinesis::Stream",
        "ARN": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/orders",
    }]
    assert [c for _, (_, c) in calls] == [
        None, None, None, "AccessDeniedException", None, "InvalidSignatureException"
    ]
    text = path.read_text()
    assert secret_data.decode() not in text
    assert base64.b64encode(secret_data).decode() not in text
    put = records[1]
    assert put["userIdentity"]["userName"] == "writer"
    assert put["responseElements"]["shardId"] == "shardId-000000000000"
    assert records[-1]["userIdentity"] == {"type": "Unknown", "accessKeyId": "AKIAWRITER"}


def test_data_events_can_be_left_out(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with ServerThread(state_delay_seconds=0.0, limits="off", audit_log=path,
                      audit_data_events=False) as thread:
        client = _client(thread.url, "AKIAANY", "any")
        client.create_stream(StreamName="s", ShardCount=1)
        client.put_record(StreamName="s", Data=b"x", PartitionKey="k")
        client.describe_stream_summary(StreamName="s")
    assert [r["eventName"] for r in _lines(path)] == ["CreateStream", "DescribeStreamSummary"]


def test_a_body_refused_unread_is_no_call(tmp_path: Path) -> None:
    import http.client
    from urllib.parse import urlsplit

    path = tmp_path / "audit.log"
    with ServerThread(audit_log=path, require_auth=False, max_request_bytes=64) as thread:
        parts = urlsplit(thread.url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            connection.request(
                "POST", "/", body=iter([b"{" + b" " * 100 + b"}"]), encode_chunked=True,
                headers={"X-Amz-Target": "Kinesis_20131202.ListStreams",
                         "Content-Type": "application/x-amz-json-1.1"},
            )
            response = connection.getresponse()
            response.read()
            assert response.status == 413
        finally:
            connection.close()
        _client(thread.url, "AKIAANY", "any").list_streams()
    assert [r["eventName"] for r in _lines(path)] == ["ListStreams"]
