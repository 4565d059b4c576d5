"""End-to-end producer throughput and memory, side by side with the reference path.

Throughput: N records of 100 bytes over 10,000 partition keys into an 8-shard stream
of the bundled server running in its own process (``python -m server``), timed from
the first put until every record is acknowledged:

  ours   kpl.Producer (aggregation, collection, rate limiter, retries, futures)
  many   kpl.Producer.put_many() in chunks of 1,000: one future and one BatchResult per
         chunk instead of a future and a RecordResult per record
  (b)    aws_kinesis_agg's RecordAggregator, one per shard (shard-aware via ListShards),
         + boto3 ``put_records`` in 500-entry batches, no retries
  (a)    the bare loop: only the per-record work no producer can avoid (MD5 of the key,
         shard lookup, encoding the sub-record), no IO
  (c)    the API floor: what the issue's API alone costs, with no producer behind it —
         ``await put()`` of a coroutine that makes one asyncio.Future per record, and one
         RecordResult set into each future. No aggregation, no IO. Every implementation
         of the API pays at least this, so ours/(a) can never exceed (c)/(a).
  (d)    the leanest aggregating put() we could write for that API: (c) plus the MD5 (cached
         per key), the shard lookup and exact-size KPL aggregation per shard, each aggregate
         serialised and its futures resolved at once. No validation, budget, TTL, base64,
         JSON, HTTP, limits or retries: a ceiling for an aggregating producer with the API.

Each side is also timed inside the cyclic garbage collector (``gc.callbacks``): the
share of its wall time spent in collections, and in full ones, which scan every object
the caller keeps alive (a future and a result per record, on the API's sides). Every
side's timed window opens after an untimed ``gc.collect()``, so that no side pays for
the set-up garbage of another.

Memory: a child process puts records against a stalled endpoint (a socket that accepts
and never answers) with a short record_ttl so that expiring records keep making room,
and reports peak RSS growth against the configured byte budget.

Run: ``.venv/bin/python bench/producer_e2e.py [--records 200000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from hashlib import md5
from itertools import count, repeat
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.producer_core import bare_loop  # noqa: E402
from bench.producer_setup import KEYS, RECORD_SIZE, workload  # noqa: E402
from bench.producer_setup import create_stream as _create_stream  # noqa: E402

# server_process is also what bench/consumer.py runs its server with.
from bench.producer_setup import server_without_limits as server_process  # noqa: E402
from kpl import Producer, ProducerConfig, RecordResult, deaggregate  # noqa: E402
from kpl import run as kpl_run  # noqa: E402
from kpl.protocol.aggregation import DIGEST_SIZE, MAGIC, encode_varint  # noqa: E402
from kpl.protocol.hashing import HASH_KEY_SPACE  # noqa: E402

SHARDS = 8
#: Records per put_many() call on the "many" side.
CHUNK = 1_000
# Protobuf field headers for side (d): a sub-record's (or its data's) tag and length, its
# partition key index field, and a key-table entry's tag and length.
_SUB_HEADER = [b"\x1a" + encode_varint(n) for n in range(0x4000)]
_INDEX_FIELD = [b"\x08" + encode_varint(n) for n in range(0x4000)]
_KEY_FIELD = [b"\x0a" + encode_varint(n) for n in range(1025)]


async def create_stream(url: str, name: str) -> None:
    await _create_stream(url, name, SHARDS)


async def ours(url: str, records: list[tuple[str, bytes]], stream: str) -> tuple[float, float]:
    await create_stream(url, stream)
    # The server's limits are off; our own rate limiter is set out of the way too, so
    # both sides measure raw throughput (it still runs: "strictly more work").
    config = ProducerConfig(rate_limit=1_000_000.0, max_buffered_records=len(records) + 1)
    async with Producer(stream, endpoint_url=url, region="us-east-1",
                        config=config) as producer:
        put = producer.put
        GC_TIMER.arm()
        started = time.perf_counter()
        cpu = time.process_time()
        futures = [await put(data, partition_key=key) for key, data in records]
        await producer.flush()  # returns when every future above is resolved
        elapsed = time.perf_counter() - started
        GC_TIMER.disarm()
        cpu = time.process_time() - cpu
    if not all(f.done() and f.exception() is None for f in futures):
        raise RuntimeError("flush() returned with unresolved or failed futures")
    results = [f.result() for f in futures]
    if not all(type(r) is RecordResult and r.sequence_number for r in results):
        raise RuntimeError("a future resolved to something other than a RecordResult")
    stats = producer.metrics()
    assert stats["UserRecordsPut"] == len(records), stats
    return elapsed, cpu


async def ours_many(
    url: str, records: list[tuple[str, bytes]], stream: str
) -> tuple[float, float]:
    await create_stream(url, stream)
    config = ProducerConfig(rate_limit=1_000_000.0, max_buffered_records=len(records) + 1)
    chunks = [[(data, key) for key, data in records[i:i + CHUNK]]
              for i in range(0, len(records), CHUNK)]
    async with Producer(stream, endpoint_url=url, region="us-east-1",
                        config=config) as producer:
        put_many = producer.put_many
        GC_TIMER.arm()
        started = time.perf_counter()
        cpu = time.process_time()
        batches = [await put_many(chunk) for chunk in chunks]
        await producer.flush()  # returns when every batch above is resolved
        elapsed = time.perf_counter() - started
        GC_TIMER.disarm()
        cpu = time.process_time() - cpu
    if not all(b.done() and b.result().ok for b in batches):
        raise RuntimeError("flush() returned with unresolved or failed batches")
    if sum(b.result().delivered for b in batches) != len(records):
        raise RuntimeError("put_many: delivered count differs from the records put")
    assert producer.metrics()["UserRecordsPut"] == len(records)
    return elapsed, cpu


def run_many(url: str, records: list[tuple[str, bytes]], stream: str) -> tuple[float, float]:
    return kpl_run(ours_many(url, records, stream))


def run_ours(url: str, records: list[tuple[str, bytes]], stream: str) -> tuple[float, float]:
    return kpl_run(ours(url, records, stream))


def reference(url: str, records: list[tuple[str, bytes]], stream: str) -> tuple[float, float]:
    """aws_kinesis_agg + boto3: shard-aware aggregation, PutRecords, no retries."""
    import boto3
    from aws_kinesis_agg.aggregator import RecordAggregator

    from kpl.protocol.hashing import partition_key_hash

    asyncio.run(create_stream(url, stream))
    client = boto3.client(
        "kinesis", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench",
    )
    shards = client.list_shards(StreamName=stream)["Shards"]
    starts = sorted(int(s["HashKeyRange"]["StartingHashKey"]) for s in shards)
    GC_TIMER.arm()
    started = time.perf_counter()
    cpu = time.process_time()
    aggregators = [RecordAggregator(max_size=51_200) for _ in starts]
    batch: list[dict[str, object]] = []
    batch_bytes = 0
    sent = 0

    def send() -> None:
        nonlocal batch, batch_bytes, sent
        answer = client.put_records(StreamName=stream, Records=batch)
        if answer["FailedRecordCount"]:
            raise RuntimeError(f"{answer['FailedRecordCount']} entries failed (no retries)")
        sent += len(batch)
        batch, batch_bytes = [], 0

    def enqueue(agg_record: object) -> None:
        nonlocal batch_bytes
        pk, ehk, data = agg_record.get_contents()  # type: ignore[attr-defined]
        size = len(data) + len(pk)
        if len(batch) == 500 or batch_bytes + size > 5 * 1024 * 1024:
            send()
        entry: dict[str, object] = {"PartitionKey": pk, "Data": data}
        if ehk is not None:  # the library leaves it out; pk then places it in the same shard
            entry["ExplicitHashKey"] = ehk
        batch.append(entry)
        batch_bytes += size

    for key, data in records:
        shard = bisect.bisect_right(starts, partition_key_hash(key)) - 1
        full = aggregators[shard].add_user_record(key, data)
        if full is not None:
            enqueue(full)
    for aggregator in aggregators:
        rest = aggregator.clear_and_get()
        if rest is not None:
            enqueue(rest)
    if batch:
        send()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    GC_TIMER.disarm()
    return wall, cpu


# --------------------------------------------------------------------------- memory


def peak_rss() -> int:
    """This process's RSS high-water mark in bytes (VmHWM; getrusage's ru_maxrss would
    carry the parent's peak across fork and exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(count: int, budget: int) -> None:
    """Put ``count`` records against a stalled endpoint; print peak RSS growth."""

    async def main() -> None:
        accepted: list[socket.socket] = []
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listener.setblocking(False)
        loop = asyncio.get_running_loop()

        async def accept_forever() -> None:
            while True:
                conn, _ = await loop.sock_accept(listener)
                accepted.append(conn)  # never read, never answered

        acceptor = asyncio.create_task(accept_forever())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        config = ProducerConfig(
            max_buffered_bytes=budget, max_buffered_records=100_000,
            record_ttl=1.0, request_timeout=0.5, record_max_buffered_time=0.05,
        )
        body = b"x" * RECORD_SIZE
        base = peak_rss()
        failed = 0
        async with Producer("stalled", endpoint_url=url, config=config) as producer:
            # The shard map never arrives either: records go unaggregated and expire.
            # Futures are checked as they finish (an unretrieved failure would be logged).
            pending: deque[asyncio.Future[RecordResult]] = deque()
            for i in range(count):
                pending.append(await producer.put(body, partition_key=f"k{i % KEYS}"))
                while pending and pending[0].done():
                    failed += pending.popleft().exception() is not None
            done = await asyncio.gather(*pending, return_exceptions=True)
            failed += sum(isinstance(d, Exception) for d in done)
        peak = peak_rss()
        acceptor.cancel()
        for conn in accepted:
            conn.close()
        listener.close()
        print(f"{count} {failed} {base} {peak}")

    kpl_run(main())


def memory(count: int, budget: int) -> tuple[int, int, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(count), str(budget)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split()
    total, failed, base, peak = (int(x) for x in out)
    if total != count or failed != count:
        raise RuntimeError(f"memory child: unexpected outcome {out}")
    return base, peak, peak - base


class GcTimer:
    """Seconds this process spends in the cyclic garbage collector, by generation, while
    armed (gc.callbacks: called at the start and end of every collection). Each side
    arms it over exactly its timed window, so set-up and checks are not counted."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._start = 0.0
        self._armed = False
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self._armed:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._start
            self.count[generation] += 1

    def arm(self) -> None:
        """Start counting from zero (each side calls this as its timed window opens).

        A full collection first, untimed: the objects a side made while setting up (its
        input, an earlier side's leftovers) would otherwise count towards the next full
        collection inside its window, which then scans them all.
        """
        gc.collect()
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._armed = True

    def disarm(self) -> None:
        """Stop counting (as the side's timed window closes)."""
        self._armed = False

    def figures(self) -> list[float]:
        """[total GC seconds, full-collection seconds, full collections] of the last
        armed window."""
        return [sum(self.seconds), self.seconds[2], float(self.count[2])]


GC_TIMER = GcTimer()


def _fmt(runs: list[float]) -> str:
    return " ".join(f"{r:.2f}" for r in runs)


Runs = list[tuple[float, float]]
#: Per side, per round: [total GC seconds, full-collection seconds, full collections].
GcRuns = list[list[float]]


def bare(records: list[tuple[str, bytes]]) -> tuple[float, float]:
    """(a): only the unavoidable per-record work (MD5 of the key, shard lookup, encoding
    the sub-record), on the same records, timed like the other two sides."""
    keys = [key for key, _ in records]
    payloads = [data for _, data in records]
    GC_TIMER.arm()
    started = time.perf_counter()
    cpu = time.process_time()
    bare_loop(keys, payloads)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    GC_TIMER.disarm()
    return wall, cpu


def api_floor(records: list[tuple[str, bytes]]) -> tuple[float, float]:
    """(c): ``await put()`` returning one asyncio.Future per record and one RecordResult
    set into each, resolved 500 at a time as a request's answer would; nothing else."""

    async def main() -> tuple[float, float]:
        new_future = asyncio.get_running_loop().create_future
        pending: list[asyncio.Future[RecordResult]] = []
        sequence = "49590338271490256608559692538361571095921575989136588898"
        attempts = ()
        new_result = tuple.__new__

        async def put(data: bytes, partition_key: str) -> asyncio.Future[RecordResult]:
            future: asyncio.Future[RecordResult] = new_future()
            pending.append(future)
            return future

        def resolve() -> None:
            # The cheapest way we know (the producer's own): results made by tuple.__new__
            # and set by map(), both driven from C.
            results = map(new_result, repeat(RecordResult), zip(
                repeat("shardId-000000000000"), repeat(sequence), count(), repeat(attempts)
            ))
            deque(map(asyncio.Future.set_result, pending, results), 0)
            pending.clear()

        GC_TIMER.arm()
        started = time.perf_counter()
        cpu = time.process_time()
        futures = []
        for key, data in records:
            futures.append(await put(data, partition_key=key))
            if len(pending) == 500:
                resolve()
        resolve()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        GC_TIMER.disarm()
        if not all(f.done() for f in futures):
            raise RuntimeError("api floor: a future was left unresolved")
        return elapsed, cpu

    return kpl_run(main())


class _LeanAggregate:
    """One shard's aggregated record being filled by lean_producer()."""

    __slots__ = ("futures", "key_index", "key_parts", "parts", "size")

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[RecordResult]] = []
        self.key_index: dict[str, int] = {}
        self.key_parts: list[bytes] = []
        self.parts: list[bytes] = []
        self.size = len(MAGIC) + DIGEST_SIZE

    def data(self) -> bytes:
        body = b"".join(self.key_parts + self.parts)
        return b"".join((MAGIC, body, md5(body).digest()))


def lean_producer(records: list[tuple[str, bytes]]) -> tuple[float, float]:
    """(d): the leanest aggregating put() we could write for the issue's API: one Future
    and one RecordResult per record, the key's MD5 cached, the shard by binary search,
    KPL aggregation per shard with exact sizes and a deduplicated key table, each
    aggregate serialised (magic, MD5) and its futures resolved as if its PutRecords had
    just succeeded. No validation, budget, TTL, base64, JSON, HTTP, rate limits or
    retries: a ceiling for any aggregating producer behind this API."""
    starts = [i * (HASH_KEY_SPACE // SHARDS) for i in range(SHARDS)]
    limit = 51_200

    async def main() -> tuple[float, float, list[bytes]]:
        new_future = asyncio.get_running_loop().create_future
        cache: dict[str, tuple[int, bytes]] = {}
        open_ = [_LeanAggregate() for _ in range(SHARDS)]
        full: list[_LeanAggregate] = []
        stored: list[bytes] = []
        sequence = "49590338271490256608559692538361571095921575989136588898"
        new_result = tuple.__new__

        async def put(data: bytes, partition_key: str) -> asyncio.Future[RecordResult]:
            future: asyncio.Future[RecordResult] = new_future()
            hit = cache.get(partition_key)
            if hit is None:
                key = partition_key.encode()
                hash_key = int.from_bytes(md5(key).digest(), "big")
                hit = cache[partition_key] = (
                    bisect.bisect_right(starts, hash_key) - 1, _KEY_FIELD[len(key)] + key
                )
            shard, entry = hit
            agg = open_[shard]
            n = len(data)
            index = agg.key_index.get(partition_key)
            if index is None:
                index = len(agg.key_index)
                grow = len(entry)
            else:
                grow = 0
            body = 4 + n + (n >= 0x80) + (index >= 0x80)
            size = agg.size + grow + 2 + body + (body >= 0x80)
            if size > limit:  # full: it is sent, this record starts the next one
                full.append(agg)
                agg = open_[shard] = _LeanAggregate()
                index = 0
                grow = len(entry)
                body = 4 + n + (n >= 0x80)
                size = agg.size + grow + 2 + body + (body >= 0x80)
            if grow:
                agg.key_index[partition_key] = index
                agg.key_parts.append(entry)
            agg.parts += (_SUB_HEADER[body], _INDEX_FIELD[index], _SUB_HEADER[n], data)
            agg.size = size
            agg.futures.append(future)
            return future

        def deliver(aggs: list[_LeanAggregate]) -> None:
            for agg in aggs:
                stored.append(agg.data())
                results = map(new_result, repeat(RecordResult), zip(
                    repeat("shardId-000000000000"), repeat(sequence), count(), repeat(())
                ))
                deque(map(asyncio.Future.set_result, agg.futures, results), 0)
            aggs.clear()

        GC_TIMER.arm()
        started = time.perf_counter()
        cpu = time.process_time()
        futures = []
        for key, data in records:
            futures.append(await put(data, partition_key=key))
            if full:
                deliver(full)
        deliver([agg for agg in open_ if agg.futures])
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        GC_TIMER.disarm()
        if not all(f.done() for f in futures):
            raise RuntimeError("lean producer: a future was left unresolved")
        return elapsed, cpu, stored

    elapsed, cpu, stored = kpl_run(main())
    # It did the real work: its aggregates decode to every record.
    decoded = sum(len(deaggregate(data, "a")) for data in stored)
    if decoded != len(records):
        raise RuntimeError(f"lean producer: {decoded} records decoded of {len(records)}")
    return elapsed, cpu


SIDES = ("ours", "(b)", "(a)", "(c)", "(d)", "many")


def compare(
    url: str, records: list[tuple[str, bytes]], rounds: int, tag: str
) -> tuple[dict[str, Runs], dict[str, GcRuns]]:
    """Alternate the six sides (fresh streams), ``rounds`` times (shared machine); time
    the garbage collector inside each."""
    runs: dict[str, Runs] = {side: [] for side in SIDES}
    gc_runs: dict[str, GcRuns] = {side: [] for side in SIDES}
    for round_ in range(rounds):
        ref_stream, ours_stream = f"bench-ref-{tag}-{round_}", f"bench-ours-{tag}-{round_}"
        many_stream = f"bench-many-{tag}-{round_}"
        sides: list[tuple[str, Callable[[], tuple[float, float]]]] = [
            ("(a)", partial(bare, records)),
            ("(c)", partial(api_floor, records)),
            ("(d)", partial(lean_producer, records)),
            ("(b)", partial(reference, url, records, ref_stream)),
            ("ours", partial(run_ours, url, records, ours_stream)),
            ("many", partial(run_many, url, records, many_stream)),
        ]
        for side, run in sides:
            runs[side].append(run())
            gc_runs[side].append(GC_TIMER.figures())
    return runs, gc_runs


def report(count: int, runs: dict[str, Runs], gc_runs: dict[str, GcRuns]) -> None:
    ours_runs, ref_runs, bare_runs, floor_runs, lean_runs, many_runs = (
        runs[side] for side in SIDES
    )
    ours_s = statistics.median(w for w, _ in ours_runs)
    ref_s = statistics.median(w for w, _ in ref_runs)
    ours_cpu = statistics.median(c for _, c in ours_runs)
    ref_cpu = statistics.median(c for _, c in ref_runs)
    ours_rate = count / ours_s
    ref_rate = count / ref_s
    print(f"    wall s  ours {_fmt([w for w, _ in ours_runs])}   "
          f"(b) {_fmt([w for w, _ in ref_runs])}")
    print(f"    kpl.Producer              {ours_rate:>10,.0f} records/s  ({ours_s:.2f} s wall, "
          f"{ours_cpu:.2f} s CPU in the client)")
    print(f"    (b) aws_kinesis_agg+boto3 {ref_rate:>10,.0f} records/s  ({ref_s:.2f} s wall, "
          f"{ref_cpu:.2f} s CPU in the client)")
    print(f"    ratio ours/(b)            {ours_rate / ref_rate:>10.2f}x wall, "
          f"{ref_cpu / ours_cpu:.2f}x CPU  (target >= 2x)")
    bare_rate = count / statistics.median(w for w, _ in bare_runs)
    print(f"    (a) bare loop             {bare_rate:>10,.0f} records/s  (MD5 + lookup + encode)")
    print(f"    ratio ours/(a)            {ours_rate / bare_rate:>10.0%}       (target >= 40%)")
    floor_rate = count / statistics.median(w for w, _ in floor_runs)
    print(f"    (c) API floor             {floor_rate:>10,.0f} records/s  (await put() + a Future "
          f"+ a RecordResult per record, nothing else)")
    print(f"    ratio (c)/(a)             {floor_rate / bare_rate:>10.0%}       (a ceiling for "
          f"ours/(a): every put() pays (c))")
    lean_rate = count / statistics.median(w for w, _ in lean_runs)
    print(f"    (d) leanest aggregating   {lean_rate:>10,.0f} records/s  ((c) + MD5, lookup, "
          f"aggregation; no IO)")
    print(f"    ratio (d)/(a)             {lean_rate / bare_rate:>10.0%}       (a ceiling for an "
          f"aggregating producer with this API)")
    many_s = statistics.median(w for w, _ in many_runs)
    many_cpu = statistics.median(c for _, c in many_runs)
    many_rate = count / many_s
    print(f"    put_many, chunks of {CHUNK:,}  {many_rate:>10,.0f} records/s  "
          f"({many_s:.2f} s wall, "
          f"{many_cpu:.2f} s CPU in the client; wall s {_fmt([w for w, _ in many_runs])})")
    print(f"    ratio many/(a)            {many_rate / bare_rate:>10.0%}       (target >= 40%)")
    print(f"    ratio many/(b)            {many_rate / ref_rate:>10.2f}x wall, "
          f"{ref_cpu / many_cpu:.2f}x CPU  (target >= 2x)")
    print(f"    ratio many/(c)            {many_rate / floor_rate:>10.2f}x       (put_many is not "
          f"bound by (c): no future per record)")
    print("    time in the cyclic GC (median of the rounds: all collections / full ones, "
          "share of wall time)")
    for side in SIDES:
        wall = statistics.median(w for w, _ in runs[side])
        total = statistics.median(g[0] for g in gc_runs[side])
        full = statistics.median(g[1] for g in gc_runs[side])
        fulls = statistics.median(g[2] for g in gc_runs[side])
        print(f"      {side:<5} {total:6.3f} s ({total / wall:4.0%})  full {full:6.3f} s "
              f"in {fulls:.0f} collections")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=KEYS,
                        help="distinct partition keys (the issue's workload: 10,000)")
    parser.add_argument("--no-tuned", action="store_true",
                        help="skip the second set of runs with the GC tuned (both sides)")
    parser.add_argument("--memory-records", type=int, default=1_000_000)
    parser.add_argument("--budget-mib", type=int, default=16)
    parser.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    records = workload(args.records, args.keys)
    print(f"{args.records} records of {RECORD_SIZE} B over {args.keys} keys into {SHARDS} shards, "
          f"server (limits off) in its own process; median of {args.rounds} rounds")
    with server_process() as url:
        # The headline: Python's default garbage collector settings (a library must not
        # change them). Then, for comparison, the same runs with the GC tuned the way an
        # application might (gc.freeze() + a larger gen-0 threshold), for both sides.
        default = compare(url, records, args.rounds, "default")
        print("  gc: Python defaults (headline)")
        report(args.records, *default)
        if not args.no_tuned:
            gc.collect()
            gc.freeze()
            thresholds = gc.get_threshold()
            gc.set_threshold(50_000, 20, 100)
            try:
                tuned = compare(url, records, args.rounds, "tuned")
            finally:
                gc.set_threshold(*thresholds)
                gc.unfreeze()
            print("  gc: frozen + gen-0 threshold 50,000, both sides (an application's choice)")
            report(args.records, *tuned)

    if not args.skip_memory:
        budget = args.budget_mib * 1024 * 1024
        base, peak, growth = memory(args.memory_records, budget)
        print(f"memory: {args.memory_records} records put against a stalled endpoint, "
              f"budget {args.budget_mib} MiB")
        print(f"  RSS before puts {base / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
              f"growth {growth / 2**20:.1f} MiB = budget + {(growth - budget) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

