"""What hostile and slow clients cost the server: time per hostile request, peak RSS, and a
normal client's latency while they are connected.

Our server runs in its own process (``python -m server --no-auth --limits off``, in
memory). Measured, one after the other:

1. **Hostile bodies**, each sent alone on an idle server: a 15 MiB PutRecords of ``{}``
   entries (JSON), a 3 MiB CBOR PutRecords of empty maps, 3 MiB of CBOR zeros in an
   unknown member (a million one-byte items), a PutRecords of 4,999 entries (ten times
   the limit, less one: every entry is validated), a gzip body of 1 MiB that inflates to
   1 GiB, and a body nested 10,000 deep. Reported: the answer's status and size, the
   round trip (loop time plus the transfer on loopback) and the server's RSS after it;
   the peak RSS of the whole run is the kernel's high-water mark (``VmHWM``), the
   server's and that of its child processes (the body judge) beside it. Then a
   normal client's latency while those bodies are sent again and again: the loop time
   they take shows there. Then the same with the most costly body under the value
   limit: objects of 290,000 distinct keys (4 MB of JSON: AddTagsToStream and
   CreateStream tags), then a valid body as costly (the keys in an unknown member).
2. **500 slow connections** (each sent half a request line, then nothing) open while a
   normal client makes PutRecord + GetRecords calls: its p50/p99 latency.
3. **50 readers that never read**: 50 GetRecords of ~9.5 MiB answers whose clients read
   nothing, with the normal client measured meanwhile; the server's RSS with them open.

Targets (from the hardening requirement): a hostile request costs <= 50 ms of loop time
beyond its real work, a normal client's p99 stays under 50 ms, RSS under 300 MB.

Run: ``.venv/bin/python bench/server_hostile.py``; ``--root DIR`` measures the server of
another checkout (e.g. the tree before a change) with the same clients.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import orjson

ROOT = Path(__file__).resolve().parent.parent
JSON = "application/x-amz-json-1.1"
CBOR = "application/x-amz-cbor-1.1"


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the server's body judge)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def child_kib(pid: int, field: str = "VmRSS") -> int:
    """The RSS (or ``VmHWM``) of the server's child processes together."""
    total = 0
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += rss_kib(child, field)
    return total


def start_server(root: Path = ROOT) -> tuple[subprocess.Popen[str], str, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", "0", "--no-auth", "--limits", "off",
         "--state-delay", "0"],
        cwd=root, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.strip().rsplit(" ", 1)[-1]
    port = int(url.rsplit(":", 1)[1])
    return proc, "127.0.0.1", port


def call(port: int, target: str, body: bytes, content_type: str = JSON,
         extra: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"X-Amz-Target": f"Kinesis_20131202.{target}", "Content-Type": content_type,
                   **(extra or {})}
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


Case = tuple[str, str, bytes, str, "dict[str, str] | None"]


def hostile_cases() -> list[Case]:
    """The hostile requests, built once (the gzip bomb takes seconds to make)."""
    inflating = gzip.compress(b" " * (1 << 30), compresslevel=9)
    return [
        ("PutRecords 15 MiB of {} (JSON)", "PutRecords",
         b'{"StreamName":"b","Records":[' + b",".join([b"{}"] * 5_200_000) + b"]}", JSON, None),
        ("PutRecords 3 MiB of {} (CBOR)", "PutRecords",
         cbor2.dumps({"StreamName": "b", "Records": [{}] * 3_000_000}), CBOR, None),
        ("3 MiB of CBOR zeros, unknown member", "ListStreams",
         cbor2.dumps({"Unknown": [0] * 3_000_000}), CBOR, None),
        ("PutRecords of 4,999 entries (JSON)", "PutRecords",
         orjson.dumps({"StreamName": "b", "Records": [{"PartitionKey": "k", "Data": "aGk="}]
                       * 4_999}), JSON, None),
        (f"gzip {len(inflating) >> 10} KiB -> 1 GiB", "ListStreams", inflating, JSON,
         {"Content-Encoding": "gzip"}),
        ("JSON nested 10,000 deep", "ListStreams", b"[" * 10_000 + b"]" * 10_000, JSON, None),
        ("CBOR nested 10,000 deep", "ListStreams", b"\x81" * 10_000 + b"\x00", CBOR, None),
    ]


def many_keys() -> list[Case]:
    """The most costly JSON body under the value limit: one object of distinct keys."""
    tags = b",".join(b'"k%d":"v"' % i for i in range(290_000))
    return [("AddTagsToStream, 290,000 tags (JSON)", "AddTagsToStream",
             b'{"StreamName":"n","Tags":{' + tags + b"}}", JSON, None),
            ("CreateStream, 290,000 tags (JSON)", "CreateStream",
             b'{"StreamName":"n2","ShardCount":1,"Tags":{' + tags + b"}}", JSON, None)]


def valid_keys() -> list[Case]:
    """A valid body as costly: 290,000 distinct keys in a member no shape knows."""
    keys = b",".join(b'"k%d":"v"' % i for i in range(290_000))
    return [("DescribeStreamSummary + 290,000 unknown keys", "DescribeStreamSummary",
             b'{"StreamName":"n","Unknown":{' + keys + b"}}", JSON, None)]


def hostile_bodies(port: int, pid: int, cases: list[Case], quiet: bool = False) -> None:
    if not quiet:
        print(f"{'hostile request':<34} {'status':>6} {'answer':>9} {'round trip':>11} "
              f"{'RSS':>8} {'child':>7}")
    for name, target, body, content_type, extra in cases:
        started = time.perf_counter()
        status, answer = call(port, target, body, content_type, extra)
        elapsed = time.perf_counter() - started
        if not quiet:
            print(f"{name:<34} {status:>6} {len(answer):>8}B {elapsed * 1000:>9.1f}ms "
                  f"{rss_kib(pid) >> 10:>6}MB {child_kib(pid) >> 10:>5}MB")


def normal_latencies(port: int, seconds: float) -> list[float]:
    """PutRecord then GetRecords (small) in a loop on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": JSON}

    def one(target: str, body: dict[str, object]) -> dict[str, object]:
        conn.request("POST", "/", body=orjson.dumps(body),
                     headers={**headers, "X-Amz-Target": f"Kinesis_20131202.{target}"})
        answer = conn.getresponse().read()
        parsed: dict[str, object] = orjson.loads(answer) if answer else {}
        return parsed

    token = one("GetShardIterator", {"StreamName": "n", "ShardId": "shardId-000000000000",
                                     "ShardIteratorType": "LATEST"})["ShardIterator"]
    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        one("PutRecord", {"StreamName": "n", "PartitionKey": "k", "Data": "aGk="})
        got = one("GetRecords", {"ShardIterator": token, "Limit": 10})
        token = got["NextShardIterator"]
        out.append(time.perf_counter() - started)
    conn.close()
    return out


def report(name: str, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    print(f"{name:<44} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({len(ordered)} calls)")


def loop_beside(port: int, pid: int, cases: list[Case], name: str, seconds: float) -> None:
    """A normal client's latency while ``cases`` are sent back to back."""
    latencies: list[float] = []
    normal = threading.Thread(target=lambda: latencies.extend(normal_latencies(port, seconds)))
    normal.start()
    sent = 0
    while normal.is_alive():
        hostile_bodies(port, pid, cases, quiet=True)
        sent += len(cases)
    report(name, latencies)
    print(f"{'':<44} {sent} hostile bodies sent meanwhile")
    print(f"{'':<44} slowest {max(latencies) * 1000:.1f} ms; server RSS after: "
          f"{rss_kib(pid) >> 10} MB, peak so far {rss_kib(pid, 'VmHWM') >> 10} MB; "
          f"its children's RSS {child_kib(pid) >> 10} MB, peak {child_kib(pid, 'VmHWM') >> 10} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout whose server is measured (default: this one)")
    root = parser.parse_args().root.resolve()
    proc, _, port = start_server(root)
    try:
        call(port, "CreateStream", b'{"StreamName":"n","ShardCount":1}')
        call(port, "CreateStream", b'{"StreamName":"big","ShardCount":1}')
        print(f"server RSS at start: {rss_kib(proc.pid) >> 10} MB\n")
        cases = hostile_cases()
        hostile_bodies(port, proc.pid, cases)
        # The loop time a hostile body takes shows in a normal client's latency meanwhile.
        loop_beside(port, proc.pid, cases, "normal client, hostile bodies sent in a loop", 6)
        keys = many_keys()
        hostile_bodies(port, proc.pid, keys)
        loop_beside(port, proc.pid, keys, "normal client, 290,000-key objects in a loop", 4)
        valid = valid_keys()
        hostile_bodies(port, proc.pid, valid)
        loop_beside(port, proc.pid, valid, "normal client, valid 290,000-key bodies", 4)
        print()
        report("normal client, idle server", normal_latencies(port, 3))
        slow = []
        for _ in range(500):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST / HTT")
            slow.append(sock)
        report("normal client, 500 slow connections open", normal_latencies(port, 5))
        for sock in slow:
            sock.close()
        # 50 readers that never read ~9.5 MiB answers.
        data = base64.b64encode(b"x" * 1_000_000).decode()
        for _ in range(9):
            call(port, "PutRecord", orjson.dumps(
                {"StreamName": "big", "PartitionKey": "k", "Data": data}))
        _, raw = call(port, "GetShardIterator", orjson.dumps({
            "StreamName": "big", "ShardId": "shardId-000000000000",
            "ShardIteratorType": "TRIM_HORIZON"}))
        token = orjson.loads(raw)["ShardIterator"]
        request = orjson.dumps({"ShardIterator": token})
        stalled = []
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.GetRecords\r\n"
                + f"Content-Type: {JSON}\r\nContent-Length: {len(request)}\r\n\r\n".encode()
                + request
            )
            stalled.append(sock)
        latencies: list[float] = []
        worker = threading.Thread(target=lambda: latencies.extend(normal_latencies(port, 5)))
        worker.start()
        peak = 0
        while worker.is_alive():
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.1)
        report("normal client, 50 readers that never read", latencies)
        print(f"server RSS with the 50 stalled readers: peak {peak >> 10} MB")
        for sock in stalled:
            sock.close()
        print(f"\nserver peak RSS over the whole run (VmHWM): "
              f"{rss_kib(proc.pid, 'VmHWM') >> 10} MB; its children's: "
              f"{child_kib(proc.pid, 'VmHWM') >> 10} MB")
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
