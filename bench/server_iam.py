"""The cost of ``--iam`` (and the audit log, and the metrics) on PutRecords throughput.

Our server runs in its own process, in memory, limits off, in four configurations:

* ``bare``: no metrics, no ``--iam`` (an embedded server with ``metrics=False``);
* ``default``: ``python -m server`` as shipped (``/metrics`` on);
* ``iam``: ``--iam FILE``: every signature verified, every call checked against a policy
  (one principal allowed ``kinesis:PutRecords`` on ``stream/bench*``);
* ``iam+audit``: ``--iam`` and ``--audit-log FILE`` with data events (one CloudTrail
  record per call).

One client process, on uvloop, sends pre-built and pre-signed PutRecords bodies (500
records x 100 bytes) over a few keep-alive connections, so every configuration gets the
same bytes and the client's own signing stays out of the figures. The configurations run
in alternation, ``--rounds`` times each; the median is reported, with each one's ratio to
``default``.

A second table takes HTTP, the other processes of a busy machine and the client out of
the picture: in this process, the same PutRecords body is parsed and answered by the
engine alone, then with each layer's own work added (SigV4 verification and policy
evaluation; the CloudTrail record, built and serialised; the metrics), and each layer's
cost is given per call and as a share of the bare call.

Run: ``.venv/bin/python bench/server_iam.py [--requests 400] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_ingest import free_port, process, run_loop  # noqa: E402
from kpl.protocol.sigv4 import TIMESTAMP_FORMAT, sign_request, signing_key  # noqa: E402

KEY_ID, SECRET = "AKIABENCH", "bench-secret"
RECORDS_PER_REQUEST = 500
RECORD_BYTES = 100
IAM = {
    "principals": [
        {
            "name": "bench",
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
            "policies": [
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": ["kinesis:PutRecords",
                                                       "kinesis:CreateStream",
                                                       "kinesis:DescribeStreamSummary"],
                         "Resource": "arn:aws:kinesis:us-east-1:000000000000:stream/bench*"},
                        {"Effect": "Deny", "Action": "kinesis:*",
                         "Resource": "arn:aws:kinesis:us-east-1:000000000000:stream/secret"},
                    ],
                }
            ],
        }
    ]
}
_BARE = (
    "import sys, asyncio, uvloop\n"
    "from server.web.runner import StreamServer\n"
    "async def main():\n"
    "    async with StreamServer(port=int(sys.argv[1]), state_delay_seconds=0.0,\n"
    "                            limits='off', metrics=False):\n"
    "        await asyncio.Event().wait()\n"
    "uvloop.run(main())\n"
)


def signed(url: str, action: str, body: bytes) -> dict[str, str]:
    amz_date = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"Kinesis_20131202.{action}",
    }
    headers.update(
        sign_request(
            "POST", url + "/", headers, body, amz_date=amz_date, access_key=KEY_ID,
            key=signing_key(SECRET, amz_date[:8], "us-east-1", "kinesis"),
            region="us-east-1", service="kinesis",
        )
    )
    return headers


async def put_rate(url: str, args: argparse.Namespace, stream: str) -> float:
    """PutRecords records/s of one run against the server at ``url``."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.connections)
    ) as session:

        async def call(action: str, body: bytes) -> dict[str, object]:
            async with session.post(url + "/", data=body, headers=signed(url, action, body)) as r:
                raw = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{action}: {r.status} {raw[:300]!r}")
                return orjson.loads(raw) if raw else {}

        create = orjson.dumps({"StreamName": stream, "ShardCount": args.shards})
        await call("CreateStream", create)
        summary = orjson.dumps({"StreamName": stream})
        while True:
            answer = await call("DescribeStreamSummary", summary)
            description = answer["StreamDescriptionSummary"]
            assert isinstance(description, dict)
            if description["StreamStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.02)
        data = base64.b64encode(os.urandom(RECORD_BYTES)).decode()
        requests = []
        for i in range(args.requests):
            body = orjson.dumps({"StreamName": stream, "Records": [
                {"Data": data, "PartitionKey": f"pk-{i}-{j}"} for j in range(RECORDS_PER_REQUEST)
            ]})
            requests.append((body, signed(url, "PutRecords", body)))
        queue = iter(requests)

        async def writer() -> int:
            done = 0
            for body, headers in queue:
                async with session.post(url + "/", data=body, headers=headers) as r:
                    raw = await r.read()
                    if r.status != 200 or orjson.loads(raw)["FailedRecordCount"]:
                        raise RuntimeError(f"PutRecords: {r.status} {raw[:300]!r}")
                done += RECORDS_PER_REQUEST
            return done

        start = time.perf_counter()
        acked = sum(await asyncio.gather(*(writer() for _ in range(args.connections))))
        return acked / (time.perf_counter() - start)


def run(name: str, args: argparse.Namespace, workdir: Path, round_: int) -> float:
    port = free_port()
    base = [sys.executable, "-m", "server", "--port", str(port), "--state-delay", "0",
            "--limits", "off"]
    iam_file = workdir / "iam.json"
    commands = {
        "bare": [sys.executable, "-c", _BARE, str(port)],
        "default": base,
        "iam": [*base, "--iam", str(iam_file)],
        "iam+audit": [*base, "--iam", str(iam_file), "--audit-log",
                      str(workdir / f"audit-{round_}.log")],
    }
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    with process(commands[name], port):
        return run_loop(put_rate(f"http://127.0.0.1:{port}", args, f"bench-{round_}"))


def in_process(calls: int) -> dict[str, float]:
    """Microseconds per PutRecords call (500 records) of the engine and of each layer."""
    import random
    import uuid

    from multidict import CIMultiDict

    from server.core.actions import ACTIONS
    from server.core.audit import CallRecord, cloudtrail_record
    from server.core.engine import Engine, EngineConfig
    from server.core.principals import parse_principals
    from server.storage.memory import MemoryStorage
    from server.web.access import AccessControl
    from server.web.auth import Verifier
    from server.web.metrics import ServerMetrics

    engine = Engine(EngineConfig(state_delay_seconds=0.0), MemoryStorage(), random.Random(1))
    now = time.time()
    engine.handle("CreateStream", {"StreamName": "bench", "ShardCount": 4}, now)
    principals = parse_principals(IAM, "000000000000")
    principal = principals.by_access_key[KEY_ID]
    access = AccessControl(Verifier(principals, "us-east-1"), engine)
    metrics = ServerMetrics(time.time, lambda token: None)
    action = ACTIONS["PutRecords"]
    data = base64.b64encode(os.urandom(RECORD_BYTES)).decode()
    body = orjson.dumps({"StreamName": "bench", "Records": [
        {"Data": data, "PartitionKey": f"pk-{j}"} for j in range(RECORDS_PER_REQUEST)
    ]})
    url = "http://127.0.0.1:4567"
    headers = CIMultiDict({**signed(url, "PutRecords", body), "Host": "127.0.0.1:4567"})
    now = time.time() + 1.0
    timings: dict[str, float] = {}

    def timed(name: str, step: Callable[[], object]) -> None:
        start = time.perf_counter()
        for _ in range(calls):
            step()
        timings[name] = (time.perf_counter() - start) / calls * 1e6

    answer = engine.handle("PutRecords", orjson.loads(body), now)
    # The server parses a body once for every layer; the layers only read it.
    payload = orjson.loads(body)

    def bare() -> None:
        engine.handle("PutRecords", orjson.loads(body), now)

    def iam() -> None:
        who = access.verifier.verify("POST", "/", headers, headers.items(), body, now)
        access.authorize(who, action, payload, now)

    def audit() -> None:
        record = CallRecord(action, "id", str(uuid.uuid4()), now, "us-east-1", "000000000000",
                            principal=principal, request=payload,
                            response=getattr(answer, "body", None))
        orjson.dumps(cloudtrail_record(record))

    def measure() -> None:
        metrics.observe_call(action, payload, getattr(answer, "body", None), None,
                             0.001)

    timed("engine", bare)
    timed("iam", iam)
    timed("audit", audit)
    timed("metrics", measure)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400, help="PutRecords calls (500 each)")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--calls", type=int, default=500, help="in-process calls per layer")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    names = ("bare", "default", "iam", "iam+audit")
    rates: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "iam.json").write_text(json.dumps(IAM))
        for round_ in range(args.rounds):
            for name in names:
                rates[name].append(run(name, args, workdir, round_))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"{args.requests} PutRecords x {RECORDS_PER_REQUEST} x {RECORD_BYTES} B, "
        f"{args.connections} connections, {args.shards} shards, median of {args.rounds}"
    )
    print(f"{'server':<12}{'put rec/s':>14}{'vs default':>12}")
    for name in names:
        ratio = medians[name] / medians["default"]
        print(f"{name:<12}{medians[name]:>14,.0f}{ratio:>11.1%}")
    layers = in_process(args.calls)
    print(f"\nin process, per PutRecords call of {RECORDS_PER_REQUEST} records, "
          f"mean of {args.calls} calls")
    print(f"{'layer':<12}{'us/call':>10}{'vs engine':>12}")
    for name in ("engine", "iam", "audit", "metrics"):
        print(f"{name:<12}{layers[name]:>10,.0f}{layers[name] / layers['engine']:>11.1%}")
    if args.json:
        print(json.dumps({"median": medians, "runs": rates, "in_process_us": layers}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
