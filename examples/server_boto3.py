"""boto3 against an embedded stream server: create a stream, put records, read them back.

Run: ``python examples/server_boto3.py`` (needs boto3: ``pip install boto3``; the ``dev``
extra has it). The server runs on this program's event loop, so the blocking boto3 calls
go to a worker thread (``asyncio.to_thread``): called directly from a coroutine they would
wait forever for a server that cannot run meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3

from server import StreamServer


def round_trip(url: str) -> None:
    """What a test or a tool would do with boto3, unchanged, against ``url``."""
    client: Any = boto3.client(
        "kinesis", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",  # any credentials will do
    )  # fmt: skip
    client.create_stream(StreamName="demo", ShardCount=2)
    client.get_waiter("stream_exists").wait(
        StreamName="demo", WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    answer = client.put_records(
        StreamName="demo",
        Records=[{"Data": f"event {i}".encode(), "PartitionKey": f"user-{i}"} for i in range(10)],
    )
    print(f"put 10 records, {answer['FailedRecordCount']} failed")

    for shard in client.list_shards(StreamName="demo")["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName="demo", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = client.get_records(ShardIterator=iterator)["Records"]
        for record in records:
            print(shard["ShardId"], record["PartitionKey"], record["Data"].decode())


async def main() -> None:
    async with StreamServer(port=0) as server:  # any ServerConfig field as a keyword
        await asyncio.to_thread(round_trip, server.url)


if __name__ == "__main__":
    asyncio.run(main())
