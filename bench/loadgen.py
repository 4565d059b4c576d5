"""What ``kpl load`` costs next to the producer it drives, against an external server.

Three measurements, each side in a process of its own against the bundled server in
another (``python -m server``, 8 shards, records of 100 bytes):

1. Paced CPU. ``kpl load --rate R --duration D`` against the server with its real limits,
   next to "the producer alone": a plain loop that puts the records due every
   millisecond from a list made beforehand, keeps the futures and flushes. The CPU of
   each process over its run (``process_cpu_s`` in ``kpl load``'s summary; the loop's own
   ``process_time``), and of the whole process from exec to exit (startup and imports
   included), as ``os.wait4`` reports it. Target: ``kpl load`` <= 1.5x the loop.
2. Unpaced throughput, server limits off and the producer's ``rate_limit`` out of the
   way: the producer's own ``await put()`` loop over N records (plus flush; it keeps no
   future), ``kpl load --records N`` in one process, and with ``--processes 2``;
   alternated over the rounds. Targets: one process >= 90% of the loop; two processes
   above one.
3. Sampled percentiles against exact ones, server limits off: one paced run above the
   sampling floor (so one record in k is measured) that also measures every record
   (``LoadOptions.exact_latency``); both sets of p50/p90/p99 from the same records.
   Target: within 5%.

Run: ``.venv/bin/python bench/loadgen.py [--rate 10000] [--duration 10] [--records 300000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.producer_setup import free_port  # noqa: E402

SHARDS = 8
KEYS = 1000
RECORD_SIZE = 100
KPL = [sys.executable, "-m", "kpl.cli"]
#: The producer's rate_limit (percent of a shard's limits) on the unpaced sides.
UNLIMITED = 1_000_000.0


class Server:
    """The bundled server in its own process."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port),
             *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import socket

        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.05)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def run_child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run a command; its last stdout line as JSON and its whole CPU (user + sys)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} exited with {proc.returncode}")
    last = out.decode().strip().splitlines()[-1]
    return json.loads(last), usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- children


def _records(count: int) -> list[tuple[bytes, str]]:
    keys = [f"key-{i:03d}" for i in range(KEYS)]
    body = b"x" * (RECORD_SIZE - 8)
    return [(b"%08d" % i + body, keys[i % KEYS]) for i in range(count)]


async def _producer_alone(url: str, stream: str, rate: float | None, count: int) -> dict[str, Any]:
    """The producer fed by a plain loop: at ``rate`` (every millisecond, what is due),
    or as fast as ``put()`` goes."""
    from kpl import KinesisClient, Producer, ProducerConfig
    from kpl.cli._common import wait_for_active
    from kpl.errors import ResourceInUseException

    async with KinesisClient(url, region="us-east-1") as client:
        with contextlib.suppress(ResourceInUseException):  # made by an earlier side
            await client.create_stream(stream, SHARDS)
        await wait_for_active(client, stream)
    records = _records(count)
    loop = asyncio.get_running_loop()
    # Unpaced, the producer's own per-shard rate limiter is set out of the way (the server's
    # limits are off), so that the sides measure how fast records are put, not the limiter.
    config = ProducerConfig(rate_limit=UNLIMITED) if rate is None else ProducerConfig()
    async with Producer(stream, endpoint_url=url, region="us-east-1", config=config) as producer:
        put = producer.put
        futures = []
        cpu = time.process_time()
        start = loop.time()
        if rate is None:
            # Nothing kept per record: failures, if any, show in the producer's metrics.
            for data, key in records:
                await put(data, key)
        else:
            taken = 0
            while taken < count:
                due = min(count, int((loop.time() - start) * rate) + 1)
                for data, key in records[taken:due]:
                    futures.append(await put(data, key))
                taken = max(taken, due)
                await asyncio.sleep(0.001)
        await producer.flush()
        elapsed = loop.time() - start
        cpu = time.process_time() - cpu
    failed = sum(1 for f in futures if f.exception() is not None)
    failed += int(producer.metrics()["UserRecordsFailed"]) if rate is None else 0
    return {"records": count, "failed": failed, "elapsed_s": elapsed, "cpu_s": cpu,
            "records_per_s": count / elapsed}  # fmt: skip


async def _exact(url: str, stream: str, rate: float, duration: float) -> dict[str, Any]:
    from kpl.cli.load_run import LoadOptions, run_load

    opts = LoadOptions(
        stream=stream, endpoint=url, region="us-east-1", shards=SHARDS, rate=rate,
        duration_s=duration, exact_latency=True, seed=1,
    )  # fmt: skip
    summary, _ = await run_load(opts)
    return summary


def child_main(argv: list[str]) -> None:
    from kpl.runner import run

    kind, url, stream, rate, amount = argv
    if kind == "alone":
        out = run(_producer_alone(url, stream, None if rate == "-" else float(rate),
                                  int(amount)))  # fmt: skip
    else:
        out = run(_exact(url, stream, float(rate), float(amount)))
    print(json.dumps(out))


# --------------------------------------------------------------------------- sides


def paced_cpu(rate: float, duration: float, rounds: int) -> None:
    count = int(rate * duration)
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    loop_runs: list[tuple[float, float]] = []
    load_runs: list[tuple[float, float, float]] = []
    with Server() as server:  # the real limits: 8 shards take 8,000 records/s plain
        for round_ in range(rounds):
            alone, alone_total = run_child(
                [*me, "alone", server.url, f"alone-{round_}", str(rate), str(count)]
            )
            loop_runs.append((alone["cpu_s"], alone_total))
            summary, load_total = run_child([
                *KPL, "load", "--endpoint", server.url, "--region", "us-east-1",
                "--stream", f"load-{round_}", "--shards", str(SHARDS), "--rate", str(rate),
                "--duration", str(duration), "--keys", str(KEYS), "--json",
            ])  # fmt: skip
            assert summary["records_failed"] == 0, summary
            load_runs.append(
                (summary["process_cpu_s"], summary["generator_cpu_s"], load_total)
            )
    loop_cpu = statistics.median(c for c, _ in loop_runs)
    loop_total = statistics.median(t for _, t in loop_runs)
    load_cpu = statistics.median(c for c, _, _ in load_runs)
    gen_cpu = statistics.median(g for _, g, _ in load_runs)
    load_total = statistics.median(t for _, _, t in load_runs)
    print(f"1. paced at {rate:,.0f} records/s for {duration:g} s, real limits, "
          f"median of {rounds} rounds")  # fmt: skip
    print(f"   producer alone (plain loop)  {loop_cpu:6.2f} s CPU over the run "
          f"({loop_cpu / duration:4.0%} of a core), {loop_total:6.2f} s whole process")
    print(f"   kpl load                     {load_cpu:6.2f} s CPU over the run "
          f"({load_cpu / duration:4.0%} of a core), {load_total:6.2f} s whole process; "
          f"generator_cpu_s {gen_cpu:.2f}")
    print(f"   ratio kpl load / alone       {load_cpu / loop_cpu:6.2f}x over the run, "
          f"{load_total / loop_total:.2f}x whole process  (target <= 1.5x)")


def unpaced(count: int, rounds: int) -> None:
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    sides: dict[str, list[float]] = {"put() loop": [], "kpl load": [], "kpl load x2": []}
    with Server("--limits", "off") as server:
        for round_ in range(rounds):
            alone, _ = run_child([*me, "alone", server.url, f"u-alone-{round_}", "-", str(count)])
            sides["put() loop"].append(alone["records_per_s"])
            for name, extra in (("kpl load", []), ("kpl load x2", ["--processes", "2"])):
                summary, _ = run_child([
                    *KPL, "load", "--endpoint", server.url, "--region", "us-east-1",
                    "--stream", f"u-{len(extra)}-{round_}", "--shards", str(SHARDS),
                    "--records", str(count), "--keys", str(KEYS), "--json", *extra,
                    "--rate-limit", str(UNLIMITED),
                ])  # fmt: skip
                assert summary["records_failed"] == 0, summary
                sides[name].append(summary["records_per_s"])
    base = statistics.median(sides["put() loop"])
    one = statistics.median(sides["kpl load"])
    two = statistics.median(sides["kpl load x2"])
    print(f"2. unpaced, {count:,} records, limits off, median of {rounds} rounds (alternated)")
    for name, runs in sides.items():
        print(f"   {name:<12} {statistics.median(runs):>10,.0f} records/s  "
              f"({', '.join(f'{r:,.0f}' for r in runs)})")
    print(f"   kpl load / put() loop  {one / base:6.0%}  (target >= 90%)")
    print(f"   --processes 2 / one    {two / one:6.2f}x (target > 1)")


def sampled(rate: float, duration: float) -> None:
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    with Server("--limits", "off") as server:
        summary, _ = run_child([*me, "exact", server.url, "exact", str(rate), str(duration)])
    sample = summary["latency_ms"]
    exact = summary["latency_exact_ms"]
    meta = summary["latency_sample"]
    print(f"3. sampled vs exact percentiles, one run at {rate:,.0f} records/s for "
          f"{duration:g} s, limits off: {meta['records']:,} of "
          f"{summary['records_acked']:,} records in the sample (one in {meta['every']})")
    worst = 0.0
    for p in ("p50", "p90", "p99"):
        diff = abs(sample[p] - exact[p]) / exact[p] if exact[p] else 0.0
        worst = max(worst, diff)
        print(f"   {p}  sampled {sample[p]:8.2f} ms  exact {exact[p]:8.2f} ms  ({diff:5.1%})")
    print(f"   largest difference {worst:.1%} (target <= 5%)")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sample-rate", type=float, default=30_000,
                        help="paced rate of the sampled-vs-exact run (above 10,000/s)")
    parser.add_argument("--only", choices=("paced", "unpaced", "sampled"), default=None)
    args = parser.parse_args()
    if args.only in (None, "paced"):
        paced_cpu(args.rate, args.duration, args.rounds)
    if args.only in (None, "unpaced"):
        unpaced(args.records, args.rounds)
    if args.only in (None, "sampled"):
        sampled(args.sample_rate, args.duration)


if __name__ == "__main__":
    main()
