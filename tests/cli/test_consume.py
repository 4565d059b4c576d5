"""``kpl consume``: workers of one application share a stream and stop gracefully."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner

from kpl.cli import cli
from kpl.client import KinesisClient
from kpl.consumer.leases import open_lease_store

KPL = Path(sys.executable).with_name("kpl")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KPL_ENDPOINT", None)
    return env


async def _make(url: str, name: str, shards: int, records: int) -> None:
    async with KinesisClient(url, region="us-east-1") as client:
        await client.create_stream(name, shards)
        await client.wait_for_active(name, interval=0.01)
        for i in range(records):
            await client.put_record(name, f"r{i}".encode(), f"key-{i}")


_changed = threading.Condition()


class _Lines:
    """Collects a process's JSON lines in a thread; wakes every waiter as they come."""

    def __init__(self, stream: IO[str]) -> None:
        self.rows: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with _changed:
                self.rows.append(json.loads(line))
                _changed.notify_all()

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
        """Wait until ``predicate()`` holds (checked whenever any process printed)."""
        with _changed:
            assert _changed.wait_for(predicate, timeout)

    def join(self) -> None:
        self._thread.join(timeout=30)


def _start(
    url: str, leases: str, worker: str, retrieval: str = "polling"
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(KPL), "consume", "orders", "--application", "billing", "--leases", leases,
            "--from", "trim-horizon", "--failover-time", "2", "--worker-id", worker,
            "--json", "--endpoint", url, "--retrieval", retrieval,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )  # fmt: skip


async def _owners(leases: str) -> list[str | None]:
    store = open_lease_store(leases)
    try:
        await store.initialize()
        return sorted(lease.lease_owner or "" for lease in await store.list_leases())
    finally:
        await store.close()


async def _put(url: str, stream: str, prefix: str, count: int) -> None:
    async with KinesisClient(url, region="us-east-1") as client:
        for i in range(count):
            await client.put_record(stream, f"{prefix}{i}".encode(), f"key-{i}")


def test_two_workers_share_the_shards_and_stop_on_sigterm(server_url: str, tmp_path: Path) -> None:
    asyncio.run(_make(server_url, "orders", 4, 0))
    leases = f"sqlite:///{tmp_path / 'billing.db'}"
    procs = [_start(server_url, leases, f"w{i}") for i in range(2)]
    try:
        readers = [_Lines(p.stdout) for p in procs if p.stdout is not None]
        # Once the leases are balanced, records put go to both workers.
        while asyncio.run(_owners(leases)) != ["w0", "w0", "w1", "w1"]:
            threading.Event().wait(0.1)
        asyncio.run(_put(server_url, "orders", "r", 40))
        everything = {f"r{i}" for i in range(40)}
        # Each worker prints the records of the shards it holds (a worker whose lease was
        # stolen just before may print some of them too, until its renewal tells it).
        _Lines.wait_for(
            lambda: (
                {row["data"] for r in readers for row in r.rows} >= everything
                and all(r.rows for r in readers)
            )
        )
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
        for r in readers:
            r.join()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert codes == [0, 0]
    rows = [row for r in readers for row in r.rows]
    assert {row["data"] for row in rows} == {f"r{i}" for i in range(40)}
    # Both workers had a share of the records.
    assert {row["worker"] for row in readers[0].rows} == {"w0"}
    assert {row["worker"] for row in readers[1].rows} == {"w1"}


def test_two_workers_given_one_worker_id_stop_with_an_error_naming_it(
    server_url: str, tmp_path: Path
) -> None:
    asyncio.run(_make(server_url, "orders", 2, 0))
    leases = f"sqlite:///{tmp_path / 'billing.db'}"
    procs = [_start(server_url, leases, "twin") for _ in range(2)]
    try:
        # Whichever notices first stops; the other goes on until it is told to stop.
        for _ in range(300):
            if any(p.poll() is not None for p in procs):
                break
            threading.Event().wait(0.1)
        stopped = next(p for p in procs if p.poll() is not None)
        _, stderr = stopped.communicate(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            p.communicate(timeout=30)
    assert stopped.returncode == 1
    assert "kpl: error: another live worker uses the worker id 'twin'" in stderr
    assert "(--worker-id)" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("retrieval", ["polling", "fanout"])
def test_a_graceful_stop_hands_over_without_repeats(
    server_url: str, tmp_path: Path, retrieval: str
) -> None:
    asyncio.run(_make(server_url, "orders", 2, 20))
    leases = f"sqlite:///{tmp_path / 'billing.db'}"
    first = _start(server_url, leases, "first", retrieval)
    try:
        assert first.stdout is not None
        lines = _Lines(first.stdout)
        lines.wait_for(lambda: len(lines.rows) == 20)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        lines.join()
    finally:
        if first.poll() is None:
            first.kill()
        _, err = first.communicate()
    assert "worker first stopped after 20 records" in err
    asyncio.run(_put(server_url, "orders", "n", 5))
    second = _start(server_url, leases, "second", retrieval)
    try:
        assert second.stdout is not None
        more = _Lines(second.stdout)
        more.wait_for(lambda: len(more.rows) >= 5)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        more.join()
    finally:
        if second.poll() is None:
            second.kill()
        second.communicate()
    # The second worker started after the first one's checkpoints: only the new records.
    assert sorted(row["data"] for row in more.rows) == sorted(f"n{i}" for i in range(5))


def test_unknown_stream_is_one_line(server_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["consume", "nope", "--application", "a", "--leases", f"sqlite:///{tmp_path}/a.db",
         "--endpoint", server_url],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not found" in lines[0]


def test_metrics_port_serves_the_workers_counts(server_url: str, tmp_path: Path) -> None:
    asyncio.run(_make(server_url, "orders", 2, 12))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(KPL), "consume", "orders", "--application", "billing", "--leases",
            f"sqlite:///{tmp_path / 'billing.db'}", "--from", "trim-horizon", "--worker-id",
            "w0", "--json", "--metrics-port", str(port), "--endpoint", server_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = _Lines(proc.stdout)
        lines.wait_for(lambda: len(lines.rows) == 12)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        lines.join()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    processed = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kpl_records_processed_total{")
    ]
    assert len(processed) == 2  # one series per shard
    assert sum(processed) == 12
    labels = 'application="billing",stream_name="orders",worker_id="w0"'
    assert f"kpl_current_leases{{{labels}}} 2.0" in text


def test_metrics_port_in_use_is_one_line(server_url: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            ["consume", "orders", "--application", "a", "--leases", f"sqlite:///{tmp_path}/a.db",
             "--metrics-port", str(port), "--endpoint", server_url],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
