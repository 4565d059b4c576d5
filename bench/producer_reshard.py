"""Aggregation through a reshard: a split and a merge while records are being put.

The bundled server runs in its own process with the service's real per-shard limits. One
producer puts ``--records`` records of 100 bytes over 10,000 partition keys into a
4-shard stream with ``await put()`` as fast as it can; after a quarter of them the first
shard is split, after half of them the last two shards are merged. The same run without a
reshard, on a fresh stream, is the baseline. Each run reports the time from the first put
until every record is acknowledged, the user records per Kinesis record, and what a
consumer reads back: every shard from TRIM_HORIZON, aggregated records taken apart, and
sub-records whose hash key is outside the shard they were stored in dropped (as the KCL
does). ``missing`` counts records put and not read back.

Run: ``.venv/bin/python bench/producer_reshard.py [--records 40000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.producer_setup import (  # noqa: E402
    KEYS,
    RECORD_SIZE,
    partition_keys,
    server_with_limits,
)
from kpl import KinesisClient, Producer, ProducerConfig, RecordResult, deaggregate  # noqa: E402
from kpl.protocol.hashing import hash_key_for  # noqa: E402

SHARDS = 4


async def reshard(client: KinesisClient, name: str, step: str) -> None:
    shards = await client.shard_ranges(name)
    if step == "split":
        shard_id, start, end = shards[0]
        await client.split_shard(name, shard_id, (start + end) // 2)
    else:
        (left, _, _), (right, _, _) = shards[-2:]
        await client.merge_shards(name, left, right)
    async with asyncio.timeout(30):
        await client.wait_for_active(name, interval=0.05)


async def read_back(client: KinesisClient, name: str) -> tuple[set[bytes], int, int]:
    """(data read back in range, sub-records dropped as out of range, Kinesis records)."""
    found: set[bytes] = set()
    dropped = krecords = 0
    for shard in await client.list_shards(name, open_only=False):
        start = int(shard["HashKeyRange"]["StartingHashKey"])
        end = int(shard["HashKeyRange"]["EndingHashKey"])
        for record in await client.read_shard(name, shard["ShardId"]):
            krecords += 1
            for user in deaggregate(record):
                if start <= hash_key_for(user.partition_key, user.explicit_hash_key) <= end:
                    found.add(user.data)
                else:
                    dropped += 1
    return found, dropped, krecords


async def one_run(url: str, name: str, count: int, with_reshard: bool) -> dict[str, Any]:
    client = KinesisClient(url, region="us-east-1", max_attempts=50, backoff=0.05)
    try:
        await client.create_stream(name, SHARDS)
        async with asyncio.timeout(30):
            await client.wait_for_active(name, interval=0.05)
        keys = partition_keys()
        body = b"x" * (RECORD_SIZE - 8)
        steps: list[asyncio.Task[None]] = []
        config = ProducerConfig()
        async with Producer(name, endpoint_url=url, region="us-east-1",
                            config=config) as producer:
            started = time.perf_counter()
            futures = []
            for i in range(count):
                futures.append(await producer.put(b"%08d" % i + body, keys[i % KEYS]))
                if with_reshard and i == count // 4:
                    steps.append(asyncio.create_task(reshard(client, name, "split")))
                if with_reshard and i == count // 2:
                    await asyncio.gather(*steps)
                    steps.append(asyncio.create_task(reshard(client, name, "merge")))
            await producer.flush()
            elapsed = time.perf_counter() - started
            await asyncio.gather(*steps)
        stats = producer.metrics()
        results = [f.result() for f in futures if f.exception() is None]
        assert all(type(r) is RecordResult for r in results)
        found, dropped, krecords = await read_back(client, name)
        put = {b"%08d" % i + body for i in range(count)}
        return {
            "elapsed": elapsed,
            "per_krecord": stats["UserRecordsPerKinesisRecord"],
            "krecords_put": stats["KinesisRecordsPut"],
            "failed": count - len(results),
            "missing": len(put - found),
            "dropped": dropped,
            "krecords_read": krecords,
            "throttled": stats.get("ErrorsByCode.ProvisionedThroughputExceededException", 0),
            "mispredicted": stats["ShardMapMispredictions"],
            "shards": len(await client.shard_ranges(name)),
        }
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40_000)
    args = parser.parse_args()
    with server_with_limits() as url:
        runs = {
            "no reshard": asyncio.run(one_run(url, "plain-run", args.records, False)),
            "split + merge": asyncio.run(one_run(url, "reshard-run", args.records, True)),
        }
    print(f"{args.records:,} records of {RECORD_SIZE} B over {KEYS:,} keys into {SHARDS} shards, "
          "real limits")
    for label, run in runs.items():
        print(f"  {label:<14} {run['elapsed']:6.2f} s  {run['per_krecord']:6.1f} user records "
              f"per Kinesis record ({run['krecords_put']:.0f} put, {run['throttled']:.0f} "
              f"throttled, {run['mispredicted']:.0f} mispredicted); read back: "
              f"{run['missing']} missing, {run['failed']} failed, {run['dropped']} sub-records "
              f"dropped as out of range; {run['shards']} open shards at the end")
    ratio = runs["split + merge"]["elapsed"] / runs["no reshard"]["elapsed"]
    print(f"  elapsed with the reshard / without: {ratio:.2f}x (target <= 2x); "
          f"target >= 50 user records per Kinesis record")


if __name__ == "__main__":
    main()
