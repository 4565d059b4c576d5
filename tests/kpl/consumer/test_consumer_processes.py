"""Worker processes of one application under failures: ``kpl consume`` x4, on SQLite and
on DynamoDB leases.

Three workers share an 8-shard stream while 40,000 records over 2,000 keys are put with
``preserve_order``. A third of the way in one worker is killed (SIGKILL), midway a shard
is split, at two thirds a fourth worker joins, and at five sixths another is stopped with
SIGTERM. Every record must be delivered at least once; per shard and per key the first
deliveries must come in stream order (parents before children); the killed worker's
shards must resume within ``failover_time`` + 5 s, the stopped worker's within 3 s and
without delivering again what it had delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from kpl import Producer, ProducerConfig
from kpl.client import KinesisClient
from kpl.consumer.leases import open_lease_store
from tests.support import ServerThread

KPL = Path(sys.executable).with_name("kpl")
STREAM = "orders"
SHARDS = 8
RECORDS = 40_000
KEYS = 2_000
FAILOVER_TIME = 3.0

_changed = threading.Condition()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One printed user record, with when the test read it (one clock for all workers)."""

    at: float
    worker: str
    shard_id: str
    sequence: int
    sub: int
    key: str
    n: int


class Worker:
    """One ``kpl consume`` process and what it printed."""

    def __init__(self, name: str, url: str, leases: str) -> None:
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [
                str(KPL), "consume", STREAM, "--application", "billing", "--leases", leases,
                "--from", "trim-horizon", "--failover-time", str(FAILOVER_TIME),
                "--worker-id", name, "--json", "--endpoint", url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "KPL_ENDPOINT"},
        )  # fmt: skip
        assert self.proc.stdout is not None
        self._thread = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            now = time.monotonic()
            with _changed:
                self.lines.append((now, line))
                _changed.notify_all()
        with _changed:
            _changed.notify_all()

    def deliveries(self) -> list[Delivery]:
        out = []
        for at, line in list(self.lines):
            row = json.loads(line)
            key, n = row["data"].split(":")
            out.append(
                Delivery(
                    at, row["worker"], row["shard_id"], int(row["sequence_number"]),
                    row["sub_sequence_number"], key, int(n),
                )
            )  # fmt: skip
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate()
        self._thread.join(timeout=10)
        return err


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``predicate()`` holds, re-checked whenever a worker prints."""
    with _changed:
        assert _changed.wait_for(predicate, timeout), f"not within {timeout} s: {what}"


@dataclass
class Progress:
    """How many records the producer has put (shared with the test's thread)."""

    put: int = 0
    split_done: bool = False
    error: BaseException | None = None


async def _produce(url: str, progress: Progress) -> None:
    config = ProducerConfig(preserve_order=True)
    async with (
        KinesisClient(url, region="us-east-1") as client,
        Producer(STREAM, url, region="us-east-1", config=config) as producer,
    ):
        started = time.monotonic()
        for i in range(RECORDS):
            key = f"key-{i % KEYS}"
            await producer.put(f"{key}:{i // KEYS}".encode(), key)
            progress.put = i + 1
            if i + 1 == RECORDS // 2:
                await client.split_shard(STREAM, "shardId-000000000000", 2**128 // SHARDS // 2)
                progress.split_done = True
            if i % 500 == 499:
                # About 2,500 records a second: long enough for the failures to happen
                # while records flow.
                ahead = started + (i + 1) / 2_500 - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()


def _producer_thread(url: str, progress: Progress) -> threading.Thread:
    def run() -> None:
        try:
            asyncio.run(_produce(url, progress))
        except BaseException as error:
            progress.error = error

    thread = threading.Thread(target=run, name="producer", daemon=True)
    thread.start()
    return thread


async def _owned_by(leases: str, worker: str) -> set[str]:
    store = open_lease_store(leases)
    try:
        await store.initialize()
        return {
            lease.lease_key for lease in await store.list_leases() if lease.lease_owner == worker
        }
    finally:
        await store.close()


async def _create(url: str) -> None:
    async with KinesisClient(url, region="us-east-1") as client:
        await client.create_stream(STREAM, SHARDS)
        await client.wait_for_active(STREAM, interval=0.01)


def _resumed(workers: list[Worker], shards: set[str], after: float, gone: str) -> bool:
    seen = {
        row["shard_id"]
        for w in workers
        if w.name != gone
        for at, line in list(w.lines)
        if at > after
        for row in [json.loads(line)]
    }
    return shards <= seen


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "dynamodb"])
def test_workers_share_fail_over_reshard_and_stop_gracefully(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if store == "sqlite":
        leases = f"sqlite:///{tmp_path / 'billing.db'}"
    else:
        # moto's DynamoDB on a free port; the workers get its URL and the test credentials.
        leases = request.getfixturevalue("dynamodb_url")
    workers: list[Worker] = []
    with ServerThread(state_delay_seconds=0.0) as server:
        url = server.url
        asyncio.run(_create(url))
        try:
            workers += [Worker(name, url, leases) for name in ("a", "b", "c")]
            progress = Progress()
            producer = _producer_thread(url, progress)

            def reached(fraction: float) -> None:
                wait_for(lambda: progress.put >= RECORDS * fraction or progress.error is not None,
                         60, f"{fraction:.0%} put")  # fmt: skip
                assert progress.error is None, progress.error

            # A third of the way: kill -9 a worker that holds leases.
            reached(1 / 3)
            killed = workers[0]
            killed_shards = asyncio.run(_owned_by(leases, killed.name))
            killed.proc.kill()
            killed_at = time.monotonic()
            wait_for(
                lambda: _resumed(workers, killed_shards, killed_at, killed.name),
                FAILOVER_TIME + 5, f"the killed worker's shards {sorted(killed_shards)} resumed",
            )  # fmt: skip
            # Midway the producer splits a shard; at two thirds a fourth worker joins.
            reached(2 / 3)
            assert progress.split_done
            workers.append(Worker("d", url, leases))
            # At five sixths: SIGTERM another worker.
            reached(5 / 6)
            stopped = workers[1]
            stopped_shards = asyncio.run(_owned_by(leases, stopped.name))
            stopped_at = time.monotonic()
            assert stopped.stop() == 0
            wait_for(
                lambda: _resumed(workers, stopped_shards, stopped_at, stopped.name),
                3, f"the stopped worker's shards {sorted(stopped_shards)} resumed",
            )  # fmt: skip
            producer.join(timeout=120)
            assert progress.error is None, progress.error
            everything = {(f"key-{i % KEYS}", i // KEYS) for i in range(RECORDS)}

            def all_delivered() -> bool:
                got = {(d.key, d.n) for w in workers for d in w.deliveries()}
                return got >= everything

            wait_for(all_delivered, 60, "every record delivered")
            for w in workers[2:]:
                assert w.stop() == 0
        finally:
            errors = [w.close() for w in workers]
    assert all("Traceback" not in e for e in errors), errors

    deliveries = sorted((d for w in workers for d in w.deliveries()), key=lambda d: d.at)
    first: dict[tuple[str, int], Delivery] = {}
    for d in deliveries:
        first.setdefault((d.key, d.n), d)
    assert set(first) == everything
    # Per key: first deliveries in the order the records were put (across the split).
    by_key: dict[str, list[int]] = defaultdict(list)
    by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for d in sorted(first.values(), key=lambda d: d.at):
        by_key[d.key].append(d.n)
        by_shard[d.shard_id].append((d.sequence, d.sub))
    assert all(ns == sorted(ns) for ns in by_key.values())
    assert all(positions == sorted(positions) for positions in by_shard.values())
    # Parents before children: the split shard's last first delivery precedes its children's.
    parent = [d.at for d in first.values() if d.shard_id == "shardId-000000000000"]
    children = [
        d.at
        for d in first.values()
        if d.shard_id in ("shardId-000000000008", "shardId-000000000009")
    ]
    assert children
    assert max(parent) <= min(children)
    # What the stopped worker delivered of its shards, nobody delivered again after it.
    mine = {(d.key, d.n) for d in stopped.deliveries() if d.shard_id in stopped_shards}
    again = [
        d
        for w in workers
        if w is not stopped
        for d in w.deliveries()
        if d.at > stopped_at and (d.key, d.n) in mine
    ]
    assert again == []
