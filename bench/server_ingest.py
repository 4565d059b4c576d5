"""Server ingest and read-back throughput: ours side by side with kinesalite, same client.

Each server runs in its own process (``python -m server`` / ``node kinesalite/cli.js``,
both in memory). One client process, on uvloop, sends pre-built PutRecords bodies
(500 records x 100 bytes, distinct partition keys) over a few keep-alive aiohttp
connections for a fixed number of requests, then reads every record back with
GetShardIterator(TRIM_HORIZON) + GetRecords (Limit 10,000) per shard and checks the count.

Figures: PutRecords records/s and GetRecords records/s for each server, and our/their ratio.

Run: ``.venv/bin/python bench/server_ingest.py [--requests 400] [--connections 4]``.
kinesalite is installed at bench time (gitignored):
``npm install --prefix bench/.kinesalite kinesalite``; without it only our figures print.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
KINESALITE = ROOT / "bench" / ".kinesalite" / "node_modules" / "kinesalite" / "cli.js"
HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    # A SigV4-shaped header: both servers check the shape, neither verifies it.
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kinesis/"
    "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00",
    "X-Amz-Date": "20260101T000000Z",
}
RECORDS_PER_REQUEST = 500
RECORD_BYTES = 100


@dataclass
class Result:
    name: str
    put_records: int
    put_seconds: float
    read_records: int
    read_seconds: float

    @property
    def put_rate(self) -> float:
        return self.put_records / self.put_seconds

    @property
    def read_rate(self) -> float:
        return self.read_records / self.read_seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start listening")


@contextlib.contextmanager
def process(args: list[str], port: int) -> Iterator[None]:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bodies(stream: str, count: int) -> list[bytes]:
    """``count`` PutRecords bodies of 500 x 100-byte records, each key distinct."""
    data = base64.b64encode(os.urandom(RECORD_BYTES)).decode()
    out = []
    for i in range(count):
        records = [
            {"Data": data, "PartitionKey": f"pk-{i}-{j}"} for j in range(RECORDS_PER_REQUEST)
        ]
        out.append(orjson.dumps({"StreamName": stream, "Records": records}))
    return out


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(self, action: str, body: bytes | dict[str, Any]) -> Any:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {**HEADERS, "X-Amz-Target": f"Kinesis_20131202.{action}"}
        async with self.session.post(self.url, data=payload, headers=headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{action}: {resp.status} {raw[:300]!r}")
            return orjson.loads(raw) if raw else None


async def run_one(name: str, url: str, args: argparse.Namespace) -> Result:
    stream = "bench"
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = Client(session, url)
        await client.call("CreateStream", {"StreamName": stream, "ShardCount": args.shards})
        while True:
            desc = await client.call("DescribeStream", {"StreamName": stream})
            if desc["StreamDescription"]["StreamStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.05)
        shard_ids = [s["ShardId"] for s in desc["StreamDescription"]["Shards"]]
        prebuilt = bodies(stream, args.requests)
        queue = iter(prebuilt)
        acked = 0

        async def writer() -> None:
            nonlocal acked
            for body in queue:
                result = await client.call("PutRecords", body)
                if result["FailedRecordCount"]:
                    raise RuntimeError(f"{name}: {result['FailedRecordCount']} records failed")
                acked += len(result["Records"])

        start = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(args.connections)))
        put_seconds = time.perf_counter() - start

        async def reader(shard_id: str) -> int:
            request = {
                "StreamName": stream,
                "ShardId": shard_id,
                "ShardIteratorType": "TRIM_HORIZON",
            }
            it = (await client.call("GetShardIterator", request))["ShardIterator"]
            count = 0
            while it:
                page = await client.call("GetRecords", {"ShardIterator": it, "Limit": 10000})
                count += len(page["Records"])
                if not page["Records"]:
                    break
                it = page.get("NextShardIterator")
            return count

        start = time.perf_counter()
        counts = await asyncio.gather(*(reader(s) for s in shard_ids))
        read_seconds = time.perf_counter() - start
        read = sum(counts)
        if read != acked:
            raise RuntimeError(f"{name}: wrote {acked} records but read back {read}")
        return Result(name, acked, put_seconds, read, read_seconds)


def ours(args: argparse.Namespace) -> Result:
    port = free_port()
    help_text = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cmd = [sys.executable, "-m", "server", "--port", str(port), "--state-delay", "0"]
    if "--limits" in help_text:  # servers with limits: benchmarks run without throttling
        cmd += ["--limits", "off"]
    with process(cmd, port):
        return run_loop(run_one("ours", f"http://127.0.0.1:{port}", args))


def kinesalite(args: argparse.Namespace) -> Result | None:
    node = shutil.which("node")
    if node is None or not KINESALITE.exists():
        print("kinesalite not installed: npm install --prefix bench/.kinesalite kinesalite")
        return None
    port = free_port()
    cmd = [
        node,
        str(KINESALITE),
        "--port",
        str(port),
        "--createStreamMs",
        "0",
        "--deleteStreamMs",
        "0",
        "--updateStreamMs",
        "0",
        "--shardLimit",
        "1000",
    ]
    with process(cmd, port):
        return run_loop(run_one("kinesalite", f"http://127.0.0.1:{port}", args))


def run_loop(coro: Any) -> Result:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[no-any-return]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400, help="PutRecords calls (500 each)")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    results = [ours(args)]
    theirs = kinesalite(args)
    if theirs is not None:
        results.append(theirs)
    print(
        f"{args.requests} PutRecords x {RECORDS_PER_REQUEST} x {RECORD_BYTES} B, "
        f"{args.connections} connections, {args.shards} shards"
    )
    print(f"{'server':<12}{'put rec/s':>14}{'read rec/s':>14}")
    for r in results:
        print(f"{r.name:<12}{r.put_rate:>14,.0f}{r.read_rate:>14,.0f}")
    summary: dict[str, Any] = {r.name: {"put": r.put_rate, "read": r.read_rate} for r in results}
    if theirs is not None:
        put_ratio = results[0].put_rate / theirs.put_rate
        read_ratio = results[0].read_rate / theirs.read_rate
        print(f"ratio ours/kinesalite: put {put_ratio:.1f}x, read {read_ratio:.1f}x")
        summary["ratio"] = {"put": put_ratio, "read": read_ratio}
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
