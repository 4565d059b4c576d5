"""The installed ``kpl`` executable, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

KPL = Path(sys.executable).with_name("kpl")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KPL_ENDPOINT", None)
    return env


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``kpl args`` to its end, capturing its output as text."""
    return subprocess.run(
        [str(KPL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        check=False,
    )


@contextmanager
def _started(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Start ``kpl args`` with piped output; the process never outlives the block."""
    proc = subprocess.Popen(
        [str(KPL), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _read_until(stream: IO[str], text: str) -> str:
    """Read lines until one contains ``text`` (the process's own progress output)."""
    for line in stream:
        if text in line:
            return line
    raise AssertionError(f"the output ended without {text!r}")


def test_kpl_load_records_json_acknowledges_every_record() -> None:
    done = _run("load", "--records", "20000", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["records_sent"] == 20000
    assert summary["records_acked"] == 20000
    assert summary["records_failed"] == 0
    assert summary["records_unresolved"] == 0
    assert summary["records_per_s"] > 0
    assert summary["kinesis_records"] > 0
    assert summary["put_records_calls"] > 0
    assert summary["latency_ms"]["max"] >= summary["latency_ms"]["p99"] > 0


def test_ctrl_c_stops_flushes_and_prints_the_summary() -> None:
    with _started("load", "--duration", "120", "--rate", "2000") as proc:
        assert proc.stdout is not None
        # Once a progress line says the run is producing, interrupt it.
        _read_until(proc.stdout, "producing")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "kpl load summary" in out
    assert "interrupted" in out
    assert "Traceback" not in err


def test_kpl_error_is_one_line_and_non_zero() -> None:
    done = _run("streams", "list", "--endpoint", "http://127.0.0.1:1", timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot reach" in done.stderr


def test_kpl_server_runs_the_server_until_interrupted() -> None:
    with _started("server", "--port", "0", "--limits", "off") as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        url = line.split()[-1]
        listed = _run("streams", "list", "--json", "--endpoint", url, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_kpl_tail_follows_new_records(server_url: str) -> None:
    import asyncio

    from kpl.client import KinesisClient

    async def setup() -> None:
        async with KinesisClient(server_url) as client:
            await client.create_stream("live", 2)
            await client.wait_for_active("live")
            await client.put_record("live", b"old", "k")

    async def put_new() -> None:
        async with KinesisClient(server_url) as client:
            for i in range(5):
                await client.put_record("live", f"new-{i}".encode(), f"k{i}")

    asyncio.run(setup())
    with _started("tail", "live", "-n", "5", "--endpoint", server_url) as proc:
        assert proc.stderr is not None
        # Once tail says it follows, its LATEST iterators are taken: put the new records.
        note = proc.stderr.readline()
        assert "following 2 shards of live from latest" in note, note
        asyncio.run(put_new())
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert sorted(line.split("\t")[2] for line in lines) == [f"new-{i}" for i in range(5)]


def test_second_ctrl_c_gives_up_on_the_flush() -> None:
    # Every entry fails and is retried until its 60 s TTL: the flush would wait that long;
    # the second Ctrl-C ends it at once.
    with _started(
        "load", "--duration", "60", "--rate", "500", "--record-ttl", "60",
        "--server-args", "--internal-failure-rate 1",
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        _read_until(proc.stdout, "producing")
        proc.send_signal(signal.SIGINT)
        _read_until(proc.stdout, "flushing")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 1, err
    assert "kpl load summary" in out
    assert "unresolved (gave up)" in out
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("kpl load: 0 records failed,")


def test_ctrl_c_while_starting_exits_at_once() -> None:
    # Every answer takes 30 s, so the run is still creating its stream when interrupted.
    with _started("load", "--records", "10", "--server-args", "--latency-ms 30000") as proc:
        assert proc.stdout is not None
        assert "starting the embedded server" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert err.strip() == "kpl load: interrupted before the run started"
    assert "summary" not in out
