"""Put records into a stream of an embedded server and wait for every acknowledgement.

Run: ``python examples/produce.py`` (no AWS account needed). To target real Kinesis,
drop the server, leave out ``endpoint_url`` and pass ``region=...``: credentials then
come from the environment or, with the ``aws`` extra, botocore's standard chain.
"""

from __future__ import annotations

import kpl
from kpl import KinesisClient, Producer, ProducerConfig, RecordFailed
from server import StreamServer


async def main() -> None:
    async with StreamServer(port=0) as server:
        async with KinesisClient(server.url) as client:
            await client.create_stream("example", shard_count=4)
            await client.wait_for_active("example")

        config = ProducerConfig(record_max_buffered_time=0.05)
        async with Producer("example", endpoint_url=server.url, config=config) as producer:
            futures = []
            for i in range(10_000):
                # put() returns once the record is buffered; it waits only when the
                # buffer budget is full.
                futures.append(await producer.put(b"event %d" % i, partition_key=f"user-{i % 100}"))
            await producer.flush()  # everything put so far is acknowledged or failed

        delivered = failed = 0
        for future in futures:
            try:
                future.result()
                delivered += 1
            except RecordFailed as error:
                failed += 1
                print("failed:", error.code, error.message)
        first = futures[0].result()
        print(f"delivered {delivered}, failed {failed}")
        print(f"first record: shard {first.shard_id}, sequence {first.sequence_number}, "
              f"sub-sequence {first.sub_sequence_number}")
        stats = producer.metrics()
        print(f"{stats['UserRecordsPut']:.0f} user records in {stats['KinesisRecordsPut']:.0f} "
              f"Kinesis records and {stats['PutRecordsRequests']:.0f} PutRecords calls")


if __name__ == "__main__":
    kpl.run(main())  # asyncio.run on uvloop when it is installed
