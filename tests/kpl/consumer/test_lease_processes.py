"""Lease coordinators in separate worker processes sharing one lease table (a SQLite
file, a DynamoDB table), in real time: they balance, a killed worker's leases move after
failover_time, and a worker stopped with SIGTERM hands its leases over at once."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).parents[3]

_WORKER = """
import asyncio, json, signal, sys, time

# This worker's wall clock is off by minutes; nothing about leases may depend on it.
_wall, _skew = time.time, float(sys.argv[5])
time.time = lambda: _wall() + _skew
from kpl.consumer.coordinator import LeaseCoordinator
from kpl.consumer.core.lineage import ShardInfo
from kpl.consumer.leases import open_lease_store

async def main(url, worker, failover, shards):
    store = open_lease_store(url)

    async def list_shards():
        return [ShardInfo(f"shardId-{i:012d}") for i in range(shards)]

    coordinator = LeaseCoordinator(
        store, worker_id=worker, list_shards=list_shards, failover_time=failover,
        take_interval=0.1, renew_interval=min(0.3, failover / 3),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    def report(**extra):
        print(json.dumps({"held": sorted(coordinator.held()), **extra}), flush=True)

    async def pump():
        async for _ in coordinator.events():
            report()

    async with asyncio.TaskGroup() as group:
        runner = group.create_task(coordinator.run())
        pumping = group.create_task(pump())
        report()
        await stop.wait()
        await coordinator.release_all()
        runner.cancel()
        pumping.cancel()
    report(stopped=True)
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


class Fleet:
    """Worker processes and what each last said it holds."""

    def __init__(self, url: str, failover: float, shards: int) -> None:
        self.url = url
        self.failover = failover
        self.shards = shards
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.held: dict[str, set[str]] = {}
        self.stopped: set[str] = set()
        self.killed: set[str] = set()
        self.crashed: set[str] = set()
        self._changed = asyncio.Condition()
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, name: str, wall_clock_skew: float = 0.0) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            self.url,
            name,
            str(self.failover),
            str(self.shards),
            str(wall_clock_skew),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        self.processes[name] = process
        self.held[name] = set()
        self._readers.append(asyncio.create_task(self._read(name, process)))

    async def _read(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            report = json.loads(line)
            async with self._changed:
                self.held[name] = set(report["held"])
                if report.get("stopped"):
                    self.stopped.add(name)
                self._changed.notify_all()
        async with self._changed:
            if name not in self.stopped and name not in self.killed:
                self.crashed.add(name)  # its traceback is in the captured stderr
            self._changed.notify_all()

    def kill(self, name: str) -> None:
        self.killed.add(name)
        self.processes[name].send_signal(signal.SIGKILL)

    async def until(self, condition: Callable[[], bool], within: float = 45.0) -> None:
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: condition() or bool(self.crashed))
        except TimeoutError:
            pytest.fail(f"the workers did not get there; they hold {self.held}")
        if self.crashed:
            pytest.fail(f"worker(s) {sorted(self.crashed)} failed")

    def balanced(self, *names: str, each: int) -> bool:
        holdings = [self.held[name] for name in names]
        union = set().union(*holdings)
        return all(len(h) == each for h in holdings) and len(union) == self.shards

    async def close(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
            await process.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


@pytest.fixture(params=["sqlite", "dynamodb"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A lease table that worker processes share: a SQLite file, or a table on moto."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/leases.db"
    return str(request.getfixturevalue("dynamodb_url"))


@asynccontextmanager
async def fleet(url: str, failover: float, shards: int) -> AsyncIterator[Fleet]:
    workers = Fleet(url, failover, shards)
    try:
        yield workers
    finally:
        await workers.close()


async def test_processes_balance_and_a_killed_workers_leases_move_to_the_others(
    shared_url: str,
) -> None:
    async with fleet(shared_url, failover=1.5, shards=6) as workers:
        # Wall clocks minutes apart: expiry is judged on each worker's monotonic clock.
        for name, skew in (("a", 0.0), ("b", 300.0), ("c", -420.0)):
            await workers.start(name, wall_clock_skew=skew)
        await workers.until(lambda: workers.balanced("a", "b", "c", each=2))
        workers.kill("a")
        await workers.processes["a"].wait()
        await workers.until(lambda: workers.balanced("b", "c", each=3))
        # A fourth worker joins and gets its share by stealing.
        await workers.start("d", wall_clock_skew=900.0)
        await workers.until(
            lambda: (
                sorted(len(workers.held[n]) for n in "bcd") == [2, 2, 2]
                and workers.balanced("b", "c", "d", each=2)
            )
        )


async def test_a_worker_stopped_with_sigterm_hands_its_leases_over_at_once(
    shared_url: str,
) -> None:
    # With failover_time far beyond the test's timeout, only a release can move a lease.
    async with fleet(shared_url, failover=600.0, shards=4) as workers:
        await workers.start("a")
        await workers.until(lambda: len(workers.held["a"]) == 4)
        await workers.start("b")
        await workers.until(lambda: workers.balanced("a", "b", each=2))
        workers.processes["a"].send_signal(signal.SIGTERM)
        await workers.until(lambda: "a" in workers.stopped)
        assert await workers.processes["a"].wait() == 0
        assert workers.held["a"] == set()
        await workers.until(lambda: len(workers.held["b"]) == 4)
