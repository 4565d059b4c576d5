"""Self-inflicted throttling at saturation: throttled attempts against records acknowledged.

The bundled server runs in its own process with the service's real per-shard limits
(1,000 records/s and 1 MiB/s per shard); a 4-shard stream. Each producer process puts
records of 100 bytes over 10,000 partition keys with ``await put()`` as fast as its buffer
budget lets it, for ``--seconds``; then reports, for that window:

- user records and bytes acknowledged (``UserRecordsPut`` / ``UserRecordsDataPut`` at
  the end of the window);
- throttled attempts of user records: every ``ProvisionedThroughputExceededException``
  attempt in the records' results (a record retried twice counts twice);
- Kinesis records throttled (the ``ErrorsByCode`` metric).

``--producers 2`` runs two producer processes on the same stream at once (the sum of
their throughputs is what matters then). ``--tree DIR`` runs the producers on another
checkout's ``kpl`` (for a before/after figure; only ``put()`` is used, which every
version has).

Run: ``.venv/bin/python bench/producer_adaptive.py [--seconds 20] [--producers 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

# Run as a script, this file's own directory is first on sys.path: the shared set-up is
# found there, without putting this checkout's kpl ahead of the --tree checkout's.
from producer_setup import KEYS, RECORD_SIZE, partition_keys, server_with_limits
from producer_setup import create_stream as _create_stream

ROOT = Path(__file__).resolve().parent.parent

THROTTLED = "ProvisionedThroughputExceededException"
SHARDS = 4


def child(url: str, stream: str, seconds: float) -> None:
    """One producer: put for ``seconds``, print its figures as one JSON line."""
    from kpl import Producer, RecordResult
    from kpl import run as kpl_run

    async def main() -> dict[str, Any]:
        keys = partition_keys()
        body = b"x" * (RECORD_SIZE - 8)
        throttled = failed = 0
        pending: deque[asyncio.Future[RecordResult]] = deque()

        def settle(future: asyncio.Future[RecordResult]) -> None:
            nonlocal throttled, failed
            error = future.exception()
            attempts = error.attempts if error is not None else future.result().attempts
            failed += error is not None
            throttled += sum(a.error_code == THROTTLED for a in attempts)

        async with Producer(stream, endpoint_url=url, region="us-east-1") as producer:
            started = time.perf_counter()
            i = 0
            while time.perf_counter() - started < seconds:
                for _ in range(100):
                    pending.append(await producer.put(b"%08d" % i + body, keys[i % KEYS]))
                    i += 1
                while pending and pending[0].done():
                    settle(pending.popleft())
            window = time.perf_counter() - started
            at_end = producer.metrics()
            throttled_in_window = throttled
            await producer.flush()
            while pending:
                settle(pending.popleft())
        return {
            "window": window,
            "acked": at_end["UserRecordsPut"],
            "acked_bytes": at_end["UserRecordsDataPut"],
            "throttled": throttled_in_window,
            "throttled_total": throttled,
            "failed": failed,
            "put": i,
            "krecords_throttled": at_end.get(f"ErrorsByCode.{THROTTLED}", 0),
            "krecords_put": at_end["KinesisRecordsPut"],
        }

    print(json.dumps(kpl_run(main())))


async def create_stream(url: str, name: str) -> None:
    await _create_stream(url, name, SHARDS)


def measure(
    url: str, stream: str, producers: int, seconds: float, tree: Path
) -> list[dict[str, Any]]:
    asyncio.run(create_stream(url, stream))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", url, stream, str(seconds)],
            cwd=tree, env=env, stdout=subprocess.PIPE, text=True,
        )
        for _ in range(producers)
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"producer exited with {proc.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the checkout whose kpl the producers run (default: this one)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, stream, seconds = args.child
        child(url, stream, float(seconds))
        return
    sys.path.insert(0, str(ROOT))  # the parent's own client (create_stream) uses this kpl
    with server_with_limits() as url:
        runs = measure(url, "adaptive", args.producers, args.seconds, args.tree.resolve())
    print(f"{args.producers} producer(s) x {args.seconds:.0f} s on a {SHARDS}-shard stream, real "
          f"limits, {RECORD_SIZE} B records, kpl from {args.tree}")
    total_acked = total_bytes = total_throttled = 0.0
    for n, run in enumerate(runs):
        rate = run["acked"] / run["window"]
        byte_rate = run["acked_bytes"] / run["window"]
        share = run["throttled"] / run["acked"] if run["acked"] else 0.0
        print(f"  producer {n}: {rate:>9,.0f} user records/s acknowledged, "
              f"{byte_rate / 2**20:5.2f} MiB/s; throttled user-record attempts "
              f"{run['throttled']:,} = {share:.1%} of {run['acked']:,} acknowledged; "
              f"Kinesis records throttled {run['krecords_throttled']:,.0f} of "
              f"{run['krecords_put']:,.0f} put; failed {run['failed']}")
        total_acked += run["acked"] / run["window"]
        total_bytes += byte_rate
        total_throttled += run["throttled"]
    acked = sum(run["acked"] for run in runs)
    print(f"  all: {total_acked:,.0f} user records/s, {total_bytes / 2**20:.2f} MiB/s acknowledged;"
          f" throttled attempts {total_throttled / acked if acked else 0:.1%} of records "
          f"acknowledged")


if __name__ == "__main__":
    main()
