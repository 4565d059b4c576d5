"""The consumer's two retrievals side by side: enhanced fan-out against GetRecords polling.

Throughput: N user records of 100 bytes over 10,000 partition keys are put into an
8-shard stream of the bundled server (its own process, limits off), once as KPL
aggregated records and once plain. Then ``kpl.Consumer`` reads the whole stream from
TRIM_HORIZON with ``retrieval="polling"`` and with ``retrieval="fanout"``, alternating,
each run with a fresh lease table and (fan-out) a stream consumer of its own, timed
until the last user record is in the application's hands; a checkpoint per batch.

Latency: a child process puts ``--rate`` user records a second for ``--seconds`` (the
KPL's 100 ms buffering on, aggregation on), each carrying its put() time, into a new
stream that two applications read at once from TRIM_HORIZON at the default settings, one
polling and one with fan-out, in this process: the same records at the same moments.
Reported: put -> delivered (which includes the producer's buffering) and arrival (the
service's ApproximateArrivalTimestamp) -> delivered percentiles of each, and their ratio.

Run: ``.venv/bin/python bench/consumer_fanout.py [--records 200000] [--repeat 3]
[--rate 2000] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.consumer import _STAMP, fill  # noqa: E402
from bench.producer_e2e import SHARDS, create_stream, server_process  # noqa: E402
from kpl import Consumer, ConsumerConfig  # noqa: E402
from kpl import run as kpl_run  # noqa: E402
from kpl.consumer.leases.memory import MemoryLeaseStore  # noqa: E402

Mode = Literal["polling", "fanout"]
CONSUMER_SCRIPT = ROOT / "bench" / "consumer.py"


async def read_all(url: str, stream: str, count: int, mode: Mode, run_id: int) -> float:
    """Wall seconds for a Consumer in ``mode`` to deliver ``count`` user records."""
    store = MemoryLeaseStore(f"bench-{run_id}")
    config = ConsumerConfig(
        initial_position="TRIM_HORIZON", worker_id="bench", retrieval=mode,
        consumer_name=f"bench-{run_id}",
    )  # fmt: skip
    got = 0
    async with Consumer(
        stream, application=f"bench-{run_id}", endpoint_url=url, region="us-east-1",
        leases=store, config=config,
    ) as consumer:  # fmt: skip
        # Registration (fan-out) is not part of the read.
        started = time.perf_counter()
        async for batch in consumer:
            for record in batch.records:
                if record.data:
                    got += 1
            await batch.checkpoint()
            if got >= count:
                break
        elapsed = time.perf_counter() - started
    await store.close()
    if got != count:
        raise RuntimeError(f"{mode}: delivered {got} of {count}")
    return elapsed


Lags = dict[str, dict[Mode, list[float]]]


async def latency(url: str, stream: str, rate: float, seconds: float) -> Lags:
    """put -> delivered and arrival -> delivered in ms for every record, read at once by
    a polling and a fan-out application."""
    await create_stream(url, stream)
    lags: dict[Mode, list[float]] = {"polling": [], "fanout": []}
    arrivals: dict[Mode, list[float]] = {"polling": [], "fanout": []}
    expected: list[int] = []
    done = {mode: asyncio.Event() for mode in lags}

    async def application(mode: Mode) -> None:
        store = MemoryLeaseStore(f"latency-{mode}")
        config = ConsumerConfig(initial_position="TRIM_HORIZON", worker_id=mode, retrieval=mode)
        async with Consumer(
            stream, application=f"latency-{mode}", endpoint_url=url, region="us-east-1",
            leases=store, config=config,
        ) as consumer:  # fmt: skip
            ready.append(mode)
            if len(ready) == len(lags):
                both_ready.set()

            async def deliver() -> None:
                async for batch in consumer:
                    now = time.time()
                    for record in batch.records:
                        (put_at,) = _STAMP.unpack_from(record.data)
                        lags[mode].append((now - put_at) * 1000)
                        if record.approximate_arrival_timestamp is not None:
                            arrived = record.approximate_arrival_timestamp
                            arrivals[mode].append((now - arrived) * 1000)
                    await batch.checkpoint()
                    if expected and len(lags[mode]) >= expected[0]:
                        done[mode].set()

            reading = asyncio.ensure_future(deliver())
            await done[mode].wait()
            consumer.shutdown()
            await reading
        await store.close()

    ready: list[Mode] = []
    both_ready = asyncio.Event()
    apps = [asyncio.ensure_future(application(mode)) for mode in lags]
    async with asyncio.timeout(seconds + 90):
        await both_ready.wait()
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(CONSUMER_SCRIPT), "--produce", url, stream, str(rate),
            str(seconds), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await child.communicate()
        expected.append(int(out))
        for mode in lags:
            if len(lags[mode]) >= expected[0]:
                done[mode].set()
        await asyncio.gather(*apps)
    return {"put -> delivered": lags, "arrival -> delivered": arrivals}


def quantiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(sorted(values), n=100)
    return q[49], q[98]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (best is shown)")
    parser.add_argument("--rate", type=float, default=2_000.0, help="latency: records/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency: how long")
    parser.add_argument("--latency-runs", type=int, default=2, help="latency: runs")
    args = parser.parse_args()
    n = args.records
    print(f"kpl.Consumer, fan-out vs polling: {n:,} user records of 100 B, {SHARDS} shards, "
          f"alternating, best of {args.repeat}")  # fmt: skip
    with server_process() as url:
        run_id = 0
        for name, aggregate in (("aggregated", True), ("plain", False)):
            stream = f"fanout-{name}"
            kpl_run(fill(url, stream, n, aggregate=aggregate))
            times: dict[Mode, list[float]] = {"polling": [], "fanout": []}
            for _ in range(args.repeat):
                for mode in ("polling", "fanout"):
                    run_id += 1
                    times[mode].append(kpl_run(read_all(url, stream, n, mode, run_id)))
            poll, fan = min(times["polling"]), min(times["fanout"])
            ratios = [p / f for p, f in zip(times["polling"], times["fanout"], strict=True)]
            print(f"  {name:<10}  polling {n / poll:>9,.0f} rec/s   fan-out {n / fan:>9,.0f} "
                  f"rec/s   fan-out/polling {poll / fan:4.2f}x (runs "
                  f"{min(ratios):4.2f}-{max(ratios):4.2f}x)")  # fmt: skip
        print(f"latency at the default settings, {args.rate:,.0f} rec/s for "
              f"{args.seconds:.0f} s, both applications reading at once:")  # fmt: skip
        for run in range(args.latency_runs):
            measured = kpl_run(latency(url, f"fanout-latency-{run}", args.rate, args.seconds))
            for what, lags in measured.items():
                (p50p, p99p), (p50f, p99f) = quantiles(lags["polling"]), quantiles(lags["fanout"])
                print(f"  run {run + 1} {what:<20} polling p50 {p50p:6.1f} p99 {p99p:6.1f} ms"
                      f"   fan-out p50 {p50f:6.1f} p99 {p99f:6.1f} ms   polling/fan-out p50 "
                      f"{p50p / p50f:4.1f}x p99 {p99p / p99f:4.1f}x "
                      f"({len(lags['fanout']):,} records)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
