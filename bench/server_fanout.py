"""PutRecord -> consumer latency: SubscribeToShard (enhanced fan-out) side by side with
GetRecords polling at the best rate the service allows.

One server process (``python -m server``, in memory, ``--limits aws``: the service's
per-shard limits, so GetRecords is held to 5 calls/s per shard). One client process on
uvloop runs everything else on one clock:

* a producer puts ``--records`` records into a 1-shard stream, one PutRecord every
  ``--interval`` seconds, each record's data carrying its index; the send time is taken
  just before each request;
* ``--consumers`` registered consumers each read the shard over SubscribeToShard (raw
  aiohttp, frames parsed with ``botocore.eventstream``);
* as many polling readers share the shard's GetRecords budget as the service requires:
  each calls GetRecords every ``0.2 s x consumers`` (5 calls/s per shard between them),
  which is the best a polling consumer can do without being throttled.

A record's latency is its arrival at a reader minus its send time. Figures: p50, p99 and
max per method, over every (reader, record) pair.

Run: ``.venv/bin/python bench/server_fanout.py [--records 400] [--consumers 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from botocore.eventstream import EventStreamBuffer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_ingest import HEADERS, free_port, process

STREAM = "fanout"
SHARD = "shardId-000000000000"
#: GetRecords calls per second per shard the service allows (shared by every poller).
POLL_CALLS_PER_SECOND = 5.0


async def call(session: aiohttp.ClientSession, url: str, action: str, body: dict[str, Any]) -> Any:
    headers = {**HEADERS, "X-Amz-Target": f"Kinesis_20131202.{action}"}
    async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{action}: {resp.status} {raw[:300]!r}")
        return orjson.loads(raw) if raw else None


def _index(data_b64: str) -> int:
    return int(base64.b64decode(data_b64))


async def subscriber(
    session: aiohttp.ClientSession, url: str, arn: str, sent: dict[int, float],
    latencies: list[float], total: int, ready: asyncio.Event,
) -> None:
    """Read one consumer's SubscribeToShard stream until every record has arrived."""
    headers = {**HEADERS, "X-Amz-Target": "Kinesis_20131202.SubscribeToShard"}
    body = {"ConsumerARN": arn, "ShardId": SHARD, "StartingPosition": {"Type": "LATEST"}}
    seen = 0
    async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
        assert resp.status == 200, await resp.read()
        buffer = EventStreamBuffer()
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            buffer.add_data(chunk)
            for message in buffer:
                if message.headers.get(":event-type") == "initial-response":
                    ready.set()
                    continue
                for record in orjson.loads(message.payload).get("Records", []):
                    latencies.append(now - sent[_index(record["Data"])])
                    seen += 1
            if seen >= total:
                return


async def poller(
    session: aiohttp.ClientSession, url: str, period: float, offset: float,
    sent: dict[int, float], latencies: list[float], total: int,
) -> None:
    """GetRecords every ``period`` seconds from LATEST until every record has arrived.

    The pollers are staggered by ``offset`` so that between them the shard sees evenly
    spaced calls (the service's budget is per shard, not per reader).
    """
    iterator = (await call(session, url, "GetShardIterator", {
        "StreamName": STREAM, "ShardId": SHARD, "ShardIteratorType": "LATEST",
    }))["ShardIterator"]
    seen = 0
    next_call = time.perf_counter() + offset
    await asyncio.sleep(offset)
    while seen < total:
        try:
            out = await call(session, url, "GetRecords", {"ShardIterator": iterator})
        except RuntimeError as error:  # throttled: the next turn reads it
            if "ProvisionedThroughputExceeded" not in str(error):
                raise
            next_call += period
            await asyncio.sleep(max(0.0, next_call - time.perf_counter()))
            continue
        now = time.perf_counter()
        for record in out["Records"]:
            latencies.append(now - sent[_index(record["Data"])])
            seen += 1
        iterator = out["NextShardIterator"]
        next_call += period
        await asyncio.sleep(max(0.0, next_call - time.perf_counter()))


async def run(url: str, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await call(session, url, "CreateStream", {"StreamName": STREAM, "ShardCount": 1})
        while True:
            summary = (await call(session, url, "DescribeStreamSummary", {"StreamName": STREAM}))[
                "StreamDescriptionSummary"]
            if summary["StreamStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.05)
        arns = []
        for i in range(args.consumers):
            consumer = await call(session, url, "RegisterStreamConsumer", {
                "StreamARN": summary["StreamARN"], "ConsumerName": f"c{i}",
            })
            arns.append(consumer["Consumer"]["ConsumerARN"])
        await asyncio.sleep(0.2)  # the consumers' state delay (CREATING -> ACTIVE)
        sent: dict[int, float] = {}
        pushed: list[float] = []
        polled: list[float] = []
        ready = [asyncio.Event() for _ in arns]
        async with asyncio.TaskGroup() as group:
            for arn, event in zip(arns, ready, strict=True):
                group.create_task(
                    subscriber(session, url, arn, sent, pushed, args.records, event)
                )
            for event in ready:
                await event.wait()
            period = args.consumers / POLL_CALLS_PER_SECOND
            for i in range(len(arns)):
                group.create_task(poller(
                    session, url, period, i / POLL_CALLS_PER_SECOND, sent, polled, args.records
                ))
            await asyncio.sleep(period)  # the pollers hold their LATEST iterators
            for i in range(args.records):
                body = {
                    "StreamName": STREAM, "PartitionKey": "k",
                    "Data": base64.b64encode(str(i).encode()).decode(),
                }
                sent[i] = time.perf_counter()
                await call(session, url, "PutRecord", body)
                await asyncio.sleep(args.interval)
        return pushed, polled


def describe(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name:<28} n={len(ms):<6} p50 {statistics.median(ms):7.1f} ms   "
        f"p99 {p99:7.1f} ms   max {ms[-1]:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=400, help="records put (default 400)")
    parser.add_argument(
        "--interval", type=float, default=0.02, help="seconds between PutRecords (0.02)"
    )
    parser.add_argument(
        "--consumers", type=int, default=2, help="fan-out consumers, and pollers (2)"
    )
    args = parser.parse_args()
    port = free_port()
    server = [
        sys.executable, "-m", "server", "--port", str(port), "--state-delay", "0.05",
        "--seed", "1",
    ]
    with process(server, port):
        url = f"http://127.0.0.1:{port}/"
        try:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                pushed, polled = runner.run(run(url, args))
        except ImportError:
            pushed, polled = asyncio.run(run(url, args))
    print(
        f"{args.records} records, one PutRecord every {args.interval * 1000:.0f} ms, "
        f"{args.consumers} readers of each kind on one shard"
    )
    print(describe("SubscribeToShard (pushed)", pushed))
    period = args.consumers / POLL_CALLS_PER_SECOND
    print(describe(f"GetRecords every {period * 1000:.0f} ms", polled))
    print(
        f"p50 ratio polled/pushed: {statistics.median(polled) / statistics.median(pushed):.1f}x"
    )


if __name__ == "__main__":
    main()
