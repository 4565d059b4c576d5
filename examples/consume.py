"""Two workers of one application share a stream and hand over when one stops.

Run: ``python examples/consume.py`` (no AWS account needed). Each worker would normally
be its own process (or host) running the same program; here both run in one process.
They share the shards through the lease store (a SQLite file here; ``dynamodb://TABLE``
across hosts), and every batch is checkpointed once handled, so a worker that takes a
shard over goes on after the last checkpoint.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import kpl
from kpl import Batch, Consumer, ConsumerConfig, KinesisClient, Producer
from server import StreamServer

RECORDS = 2_000


async def main() -> None:
    async with StreamServer(port=0) as server:
        async with KinesisClient(server.url) as client:
            await client.create_stream("orders", shard_count=4)
            await client.wait_for_active("orders")
        async with Producer("orders", endpoint_url=server.url) as producer:
            for i in range(RECORDS):
                await producer.put(b"order %d" % i, partition_key=f"customer-{i % 50}")
            await producer.flush()

        handled: Counter[str] = Counter()
        done = asyncio.Event()

        def worker(name: str, leases: str) -> Consumer:
            config = ConsumerConfig(initial_position="TRIM_HORIZON", worker_id=name)
            return Consumer(
                "orders",
                application="billing",
                endpoint_url=server.url,
                leases=leases,
                config=config,
            )

        async def handle(batch: Batch) -> None:
            # Called concurrently for different shards, one batch at a time per shard;
            # the batch is checkpointed when this returns.
            handled[batch.shard_id] += len(batch.records)
            if sum(handled.values()) >= RECORDS:
                done.set()

        with tempfile.TemporaryDirectory() as tmp:
            leases = f"sqlite:///{Path(tmp) / 'billing-leases.db'}"
            async with worker("worker-1", leases) as one, worker("worker-2", leases) as two:
                runs = [asyncio.create_task(c.run(handle)) for c in (one, two)]
                await done.wait()
                for consumer in (one, two):
                    consumer.shutdown()  # graceful: checkpoint, release the leases
                await asyncio.gather(*runs)
        print(f"handled {sum(handled.values())} records from {len(handled)} shards")


if __name__ == "__main__":
    kpl.run(main())
