"""kill -9 the real server process while PutRecords are in flight; nothing acknowledged is lost.

Each cycle starts ``python -m server --data-dir`` on port 0 (the port comes from its
"listening on" line), lets a few concurrent keep-alive writers run until a random number
of records has been acknowledged, and SIGKILLs the process with requests still in flight.
After the last cycle a clean restart must give back every acknowledged record — same
shard, same sequence number, same bytes and key — and each cycle's sequence numbers must
lie above every number acknowledged before it.
"""

from __future__ import annotations

import asyncio
import base64
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

TARGET = "Kinesis_20131202."
HEADERS = {"Content-Type": "application/x-amz-json-1.1"}
STREAM = "crash"
SHARDS = 3
CYCLES = 4
WRITERS = 4
START_TIMEOUT = 30.0


@dataclass
class Acked:
    """Every acknowledged record: (shard id, sequence number) -> (partition key, data)."""

    records: dict[tuple[str, int], tuple[str, bytes]] = field(default_factory=dict)
    per_cycle: list[dict[str, list[int]]] = field(default_factory=list)


def read_log(path: Path) -> str:
    """The server's stderr so far (for assertion messages)."""
    return path.read_text()


class Server:
    """One ``python -m server`` process on a data dir."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    @classmethod
    async def start(cls, data_dir: Path, log: Path) -> Server:
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", "--port", "0", "--no-auth",
                "--state-delay", "0", "--limits", "off", "--data-dir", str(data_dir),
                "--segment-bytes", "16384",
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert proc.stdout is not None
        try:
            # The server prints this line once it is listening: readiness, no polling.
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        text = line.decode()
        assert "listening on" in text, (text, read_log(log))
        return cls(proc, text.rsplit(" ", 1)[1].strip())

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL
        assert self.proc.stdout is not None
        await self.proc.stdout.read()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            assert await asyncio.wait_for(self.proc.wait(), START_TIMEOUT) == 0
        assert self.proc.stdout is not None
        await self.proc.stdout.read()


async def call(session: aiohttp.ClientSession, url: str, action: str, body: Any) -> Any:
    headers = dict(HEADERS, **{"X-Amz-Target": TARGET + action})
    async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
        payload = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{action}: {response.status} {payload!r}")
        return orjson.loads(payload) if payload else None


async def writer(
    session: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    tag: str,
    acked: Acked,
    cycle: dict[str, list[int]],
    enough: asyncio.Event,
    threshold: int,
) -> str:
    """Write until the server goes away; the error that stopped it."""
    n = 0
    while True:
        entries = []
        for _ in range(rng.randrange(1, 40)):
            n += 1
            entries.append((f"{tag}-{n}", rng.randbytes(rng.randrange(1, 300))))
        body = {
            "StreamName": STREAM,
            "Records": [
                {"PartitionKey": key, "Data": base64.b64encode(data).decode()}
                for key, data in entries
            ],
        }
        try:
            result = await call(session, url, "PutRecords", body)
        except (TimeoutError, aiohttp.ClientError, RuntimeError) as error:
            return repr(error)  # the server died with this request in flight: not acked
        for (key, data), entry in zip(entries, result["Records"], strict=True):
            seq = entry.get("SequenceNumber")
            if seq is not None:
                acked.records[(entry["ShardId"], int(seq))] = (key, data)
                cycle.setdefault(entry["ShardId"], []).append(int(seq))
        if sum(len(v) for v in cycle.values()) >= threshold:
            enough.set()


async def read_shard(session: aiohttp.ClientSession, url: str, shard: str) -> list[Any]:
    it = (
        await call(
            session,
            url,
            "GetShardIterator",
            {"StreamName": STREAM, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"},
        )
    )["ShardIterator"]
    out: list[Any] = []
    while True:
        got = await call(session, url, "GetRecords", {"ShardIterator": it, "Limit": 1000})
        out.extend(got["Records"])
        if not got["Records"]:
            return out
        it = got["NextShardIterator"]


async def test_kill_minus_nine_loses_no_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    data_dir = tmp_path / "data"
    log = tmp_path / "server.log"
    acked = Acked()
    timeout = aiohttp.ClientTimeout(total=20)
    for number in range(CYCLES):
        server = await Server.start(data_dir, log)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                if number == 0:
                    await call(
                        session, server.url, "CreateStream",
                        {"StreamName": STREAM, "ShardCount": SHARDS},
                    )
                cycle: dict[str, list[int]] = {}
                enough = asyncio.Event()
                threshold = rng.randrange(100, 1500)
                tasks = [
                    asyncio.ensure_future(
                        writer(
                            session, server.url, random.Random(rng.random()), f"c{number}w{w}",
                            acked, cycle, enough, threshold,
                        )
                    )
                    for w in range(WRITERS)
                ]
                waiter = asyncio.ensure_future(enough.wait())
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                early = [t.result() for t in tasks if t.done()]
                await server.kill()
                stopped = await asyncio.gather(*tasks)
        finally:
            await server.stop()
        assert enough.is_set(), f"writers stopped early (seed {seed}): {stopped} {read_log(log)}"
        assert not early, f"writers failed before the kill (seed {seed}): {early}"
        acked.per_cycle.append(cycle)

    server = await Server.start(data_dir, log)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            shards = (await call(session, server.url, "ListShards", {"StreamName": STREAM}))[
                "Shards"
            ]
            assert len(shards) == SHARDS
            found: dict[tuple[str, int], tuple[str, bytes]] = {}
            for shard in shards:
                sid = shard["ShardId"]
                records = await read_shard(session, server.url, sid)
                seqs = [int(r["SequenceNumber"]) for r in records]
                assert seqs == sorted(set(seqs)), f"shard {sid} out of order (seed {seed})"
                for r in records:
                    found[(sid, int(r["SequenceNumber"]))] = (
                        r["PartitionKey"],
                        base64.b64decode(r["Data"]),
                    )
            # A new write numbers above everything acknowledged before.
            last = await call(
                session, server.url, "PutRecord",
                {"StreamName": STREAM, "PartitionKey": "after", "Data": "AA=="},
            )
    finally:
        await server.stop()

    missing = [k for k in acked.records if k not in found]
    assert not missing, f"{len(missing)} acknowledged records lost (seed {seed})"
    changed = [k for k, v in acked.records.items() if found[k] != v]
    assert not changed, f"{len(changed)} records changed (seed {seed})"
    assert len(acked.records) >= CYCLES * 100
    # Numbers never go backwards: each cycle's acks lie above all earlier ones, per shard.
    high: dict[str, int] = {}
    for cycle in acked.per_cycle:
        for sid, seqs in cycle.items():
            assert min(seqs) > high.get(sid, -1), f"shard {sid} went backwards (seed {seed})"
        for sid, seqs in cycle.items():
            high[sid] = max(high.get(sid, -1), *seqs)
    assert int(last["SequenceNumber"]) > high[last["ShardId"]]
