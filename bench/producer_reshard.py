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

``put()`` only buffers, so the loop of puts outruns the sending: with the default
``--trigger put`` both reshards are done before most records have left, and the run
mostly measures a producer that starts with an out-of-date map. ``--trigger acked``
splits once a quarter of the records are acknowledged and merges at half, so that the
reshards happen while records are being sent.

Neither run can beat the shards' limits: each shard takes 1 MiB/s after a burst of one
second's worth (the server's, like the service's). Without a reshard every shard gets
about a quarter of the data, within that burst; after the merge one shard owns half the
key space. ``floor`` is the time the busiest shard needs for the bytes it stored, and
``/floor`` how far the run is from it.

``--latency-ms N`` makes the server answer every call N ms late (a loaded machine, a
distant endpoint): ListShards then takes longer than ``record_max_buffered_time``.
``--put-rate R`` paces the puts at R records/s, so that records are still being put
while the map is refreshed (with the default, unpaced loop the puts are over first).

Run: ``.venv/bin/python bench/producer_reshard.py [--records 40000] [--trigger acked]``.
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
    server_process,
)
from kpl import KinesisClient, Producer, ProducerConfig, RecordResult, deaggregate  # noqa: E402
from kpl.protocol.hashing import hash_key_for  # noqa: E402
from kpl.protocol.limits import SHARD_WRITE_BYTES_PER_SECOND  # noqa: E402

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


async def read_back(client: KinesisClient, name: str) -> tuple[set[bytes], int, int, int]:
    """(data read back in range, sub-records dropped as out of range, Kinesis records,
    the most bytes (data + partition key) one shard stored)."""
    found: set[bytes] = set()
    dropped = krecords = busiest = 0
    for shard in await client.list_shards(name, open_only=False):
        start = int(shard["HashKeyRange"]["StartingHashKey"])
        end = int(shard["HashKeyRange"]["EndingHashKey"])
        stored = 0
        for record in await client.read_shard(name, shard["ShardId"]):
            krecords += 1
            stored += len(record["Data"]) + len(record["PartitionKey"].encode())
            for user in deaggregate(record):
                if start <= hash_key_for(user.partition_key, user.explicit_hash_key) <= end:
                    found.add(user.data)
                else:
                    dropped += 1
        busiest = max(busiest, stored)
    return found, dropped, krecords, busiest


def floor_seconds(busiest: int) -> float:
    """The least time a shard that stored ``busiest`` bytes needs: a burst of one second's
    worth, then its rate (the records/s limit never binds aggregated 100-byte records)."""
    return max(busiest - SHARD_WRITE_BYTES_PER_SECOND, 0) / SHARD_WRITE_BYTES_PER_SECOND


class Acks:
    """Counts completed puts; ``reached[n]`` is set once ``n`` have completed."""

    def __init__(self, *marks: int) -> None:
        self.done = 0
        self.reached = {mark: asyncio.Event() for mark in marks}

    def __call__(self, _future: object) -> None:
        self.done += 1
        event = self.reached.get(self.done)
        if event is not None:
            event.set()


async def reshard_when_acked(client: KinesisClient, name: str, acks: Acks, count: int) -> None:
    await acks.reached[count // 4].wait()
    await reshard(client, name, "split")
    await acks.reached[count // 2].wait()
    await reshard(client, name, "merge")


async def one_run(
    url: str, name: str, count: int, with_reshard: bool, trigger: str = "put",
    put_rate: float = 0.0,
) -> dict[str, Any]:
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
            # Both runs of an "acked" comparison count completions (the same cost).
            acks = Acks(count // 4, count // 2) if trigger == "acked" else None
            if with_reshard and acks is not None:
                steps.append(asyncio.create_task(reshard_when_acked(client, name, acks, count)))
            by_puts = with_reshard and trigger == "put"
            futures = []
            for i in range(count):
                if put_rate and i % 100 == 0:
                    ahead = started + i / put_rate - time.perf_counter()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                future = await producer.put(b"%08d" % i + body, keys[i % KEYS])
                if acks is not None:
                    future.add_done_callback(acks)
                futures.append(future)
                if by_puts and i == count // 4:
                    steps.append(asyncio.create_task(reshard(client, name, "split")))
                if by_puts and i == count // 2:
                    await asyncio.gather(*steps)
                    steps.append(asyncio.create_task(reshard(client, name, "merge")))
            await producer.flush()
            elapsed = time.perf_counter() - started
            await asyncio.gather(*steps)
        stats = producer.metrics()
        results = [f.result() for f in futures if f.exception() is None]
        assert all(type(r) is RecordResult for r in results)
        found, dropped, krecords, busiest = await read_back(client, name)
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
            "refreshes": stats["ShardMapRefreshes"],
            "shards": len(await client.shard_ranges(name)),
            "busiest": busiest,
        }
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--latency-ms", default="0", metavar="N[-M]",
                        help="the server's added latency per call (default: 0)")
    parser.add_argument("--trigger", choices=("put", "acked"), default="put",
                        help="reshard after a quarter and a half of the records are put "
                        "(default) or acknowledged")
    parser.add_argument("--put-rate", type=float, default=0.0, metavar="R",
                        help="put at most R records/s (default: as fast as possible)")
    args = parser.parse_args()
    with server_process("--state-delay", "0", "--latency-ms", args.latency_ms) as url:
        runs = {
            "no reshard": asyncio.run(
                one_run(url, "plain-run", args.records, False, args.trigger, args.put_rate)),
            "split + merge": asyncio.run(
                one_run(url, "reshard-run", args.records, True, args.trigger, args.put_rate)),
        }
    print(f"{args.records:,} records of {RECORD_SIZE} B over {KEYS:,} keys into {SHARDS} shards, "
          f"real limits, {args.latency_ms} ms latency, resharding by records {args.trigger}"
          + (f", {args.put_rate:,.0f} puts/s" if args.put_rate else ""))
    for label, run in runs.items():
        print(f"  {label:<14} {run['elapsed']:6.2f} s  {run['per_krecord']:6.1f} user records "
              f"per Kinesis record ({run['krecords_put']:.0f} put, {run['throttled']:.0f} "
              f"throttled, {run['mispredicted']:.0f} mispredicted, {run['refreshes']:.0f} "
              "ListShards); read back: "
              f"{run['missing']} missing, {run['failed']} failed, {run['dropped']} sub-records "
              f"dropped as out of range; {run['shards']} open shards at the end; busiest "
              f"shard {run['busiest'] / 2**20:.2f} MiB, floor {floor_seconds(run['busiest']):.2f} s"
              f" (/floor {run['elapsed'] / max(floor_seconds(run['busiest']), 1e-9):.2f})")
    ratio = runs["split + merge"]["elapsed"] / runs["no reshard"]["elapsed"]
    print(f"  elapsed with the reshard / without: {ratio:.2f}x (target <= 2x); "
          f"target >= 50 user records per Kinesis record")


if __name__ == "__main__":
    main()
