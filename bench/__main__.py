"""Run the benchmarks the README quotes: ``python -m bench [NAME ...] [-- ARGS]``.

Each benchmark is its own script under ``bench/`` (one command each, with ``--help``)
and compares us side by side with a baseline in one process run. This runner only
lists them and runs the chosen ones one after another, each in a fresh interpreter so
that one benchmark's heap and event loop do not colour the next one's figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> what it compares (the script is bench/<name>.py).
BENCHMARKS: dict[str, str] = {
    "server_ingest": "server PutRecords/GetRecords records/s over HTTP, ours vs kinesalite",
    "server_core": "the server's sans-IO engine alone, no HTTP (put and read records/s)",
    "server_durable": "PutRecords records/s with --data-dir (fsync group commit) vs memory",
    "server_fanout": "PutRecord -> reader latency, SubscribeToShard vs GetRecords polling",
    "server_iam": "PutRecords records/s with --iam, the audit log and metrics vs without",
    "server_hostile": "hostile bodies, 500 slow connections, 50 stalled readers: cost and RSS",
    "producer_core": "the producer's sans-IO core vs a bare MD5 + lookup + encode loop",
    "producer_e2e": "Producer end to end vs aws-kinesis-agg + boto3; peak RSS vs budget",
    "consumer": "Consumer records/s vs boto3 GetRecords + aws-kinesis-agg; put->delivered latency",
    "producer_adaptive": "throttled attempts vs records acknowledged at saturation, real limits",
    "producer_reshard": "aggregation and elapsed time through a split and a merge under load",
    "loadgen": "kpl load's CPU and throughput vs the producer fed by a plain loop",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the side-by-side benchmarks (all of them when no NAME is given).",
        epilog="\n".join(f"  {name:<16} {what}" for name, what in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after "--" goes to the benchmark untouched (argparse would take it for
    # more NAMEs); options argparse does not know pass through as well.
    passed: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1 :]
    args, extra = parser.parse_known_args(argv)
    extra += passed
    if args.list:
        for name, what in BENCHMARKS.items():
            print(f"{name:<16} {what}")
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r} (see --list)")
    if extra and len(args.names) != 1:
        parser.error("options for a benchmark go with exactly one NAME")
    names = args.names or list(BENCHMARKS)
    failed = []
    for name in names:
        print(f"\n== {name}: {BENCHMARKS[name]}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *extra])
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
