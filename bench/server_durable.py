"""The cost of durability: PutRecords throughput with ``--data-dir`` vs in memory, same run.

Both servers are ``python -m server --limits off`` in their own process; the durable one
gets a fresh temporary ``--data-dir`` (on the same disk as the system temp dir, unless
``--dir`` says otherwise). One client process sends the SAME pre-built PutRecords bodies
(500 records x 100 bytes, distinct partition keys) to each over a few keep-alive aiohttp
connections. A durable PutRecords is answered only after its records are fsynced; the
concurrent requests share fsyncs (group commit), which is what keeps the ratio up.

The servers run alternately (memory, durable, memory, durable ...) and the best round of
each is reported, so a noisy neighbour on the machine hurts both alike.

Figures: records/s for each, and durable/memory.

Run: ``.venv/bin/python bench/server_durable.py [--requests 300] [--connections 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"Content-Type": "application/x-amz-json-1.1"}
RECORDS_PER_REQUEST = 500
RECORD_BYTES = 100


def bodies(stream: str, count: int) -> list[bytes]:
    """``count`` PutRecords bodies of 500 x 100-byte records, each key distinct."""
    data = base64.b64encode(os.urandom(RECORD_BYTES)).decode()
    return [
        orjson.dumps(
            {
                "StreamName": stream,
                "Records": [
                    {"Data": data, "PartitionKey": f"pk-{i}-{j}"}
                    for j in range(RECORDS_PER_REQUEST)
                ],
            }
        )
        for i in range(count)
    ]


async def call(session: aiohttp.ClientSession, url: str, action: str, body: bytes) -> Any:
    headers = {**HEADERS, "X-Amz-Target": f"Kinesis_20131202.{action}"}
    async with session.post(url, data=body, headers=headers) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{action}: {resp.status} {raw[:300]!r}")
        return orjson.loads(raw) if raw else None


async def one_round(extra: list[str], prebuilt: list[bytes], args: argparse.Namespace) -> float:
    """Start a server with ``extra`` flags, send every body, return records/s."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--port", "0", "--no-auth", "--limits", "off",
        "--state-delay", "0", *extra,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = line.rsplit(" ", 1)[1].strip()
        connector = aiohttp.TCPConnector(limit=args.connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            create = {"StreamName": "bench", "ShardCount": args.shards}
            await call(session, url, "CreateStream", orjson.dumps(create))
            queue = iter(prebuilt)
            acked = 0

            async def writer() -> None:
                nonlocal acked
                for body in queue:
                    result = await call(session, url, "PutRecords", body)
                    if result["FailedRecordCount"]:
                        raise RuntimeError(f"{result['FailedRecordCount']} records failed")
                    acked += len(result["Records"])

            started = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(args.connections)))
            elapsed = time.perf_counter() - started
        assert acked == len(prebuilt) * RECORDS_PER_REQUEST
        return acked / elapsed
    finally:
        proc.terminate()
        await proc.wait()
        await proc.stdout.read()


async def main(args: argparse.Namespace) -> None:
    prebuilt = bodies("bench", args.requests)
    best: dict[str, float] = {"memory": 0.0, "durable": 0.0}
    for _ in range(args.rounds):
        best["memory"] = max(best["memory"], await one_round([], prebuilt, args))
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rate = await one_round(["--data-dir", tmp], prebuilt, args)
        best["durable"] = max(best["durable"], rate)
    where = args.dir or tempfile.gettempdir()
    print(
        f"PutRecords, {args.requests} requests x {RECORDS_PER_REQUEST} records x "
        f"{RECORD_BYTES} B, {args.connections} connections, {args.shards} shards, "
        f"best of {args.rounds} rounds"
    )
    print(f"  memory   {best['memory']:>10,.0f} records/s")
    print(f"  durable  {best['durable']:>10,.0f} records/s   (data dir under {where})")
    print(f"  durable/memory = {best['durable'] / best['memory']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default=None, help="parent of the durable server's data dir")
    ns = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(ns))
    except ImportError:
        asyncio.run(main(ns))
