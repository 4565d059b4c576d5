"""Consumer throughput and latency, side by side with a boto3 GetRecords loop and async-kinesis.

Throughput: N user records of 100 bytes over 10,000 partition keys are put into an
8-shard stream of the bundled server running in its own process (``python -m server``,
limits off), once as KPL aggregated records (``plain`` = aggregation off, one Kinesis
record per user record). Then one process reads the whole stream from TRIM_HORIZON,
timed until the last user record is in the application's hands (wall time; and the
reading process's CPU time, since the server's own time to answer is shared by both):

  ours   kpl.Consumer: ``async for batch in consumer`` with a checkpoint per batch
         (a memory lease table), every shard read concurrently, within the service's
         per-shard read limits (5 calls/s, 2 MiB/s), sub-records checked against the
         shard's hash range; GetRecords in CBOR while records are large (aggregates),
         JSON when they are small, as the reader chooses by itself
  (b)    boto3 ``get_records`` (Limit 10,000; JSON, the only protocol botocore speaks to
         Kinesis) shard after shard, each answer through
         aws_kinesis_agg's ``iter_deaggregate_records`` and the sub-records' data decoded:
         the loop an application writes without a consumer library (no leases, no
         checkpoints, no concurrency)
  (c)    async-kinesis's ``Consumer`` (when installed: ``pip install async-kinesis``), with
         ``KPLStringProcessor`` for aggregated records and ``StringProcessor`` for plain
         ones, its in-memory checkpointer, the data decoded as text

Latency: a child process puts ``--rate`` user records a second for ``--seconds`` (the KPL's
100 ms buffering on, aggregation on) into a stream that one ``kpl.Consumer`` reads at the
default settings from LATEST; each record carries its put() time. Reported: put -> delivered
and arrival (the service's ApproximateArrivalTimestamp) -> delivered percentiles.

The sides take turns within each repeat, on the same stream; each repeat's ratio is
printed, then the range over the repeats.

Run: ``.venv/bin/python bench/consumer.py [--records 200000] [--repeat 3] [--rate 2000]
[--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.producer_e2e import SHARDS, create_stream, server_process, workload  # noqa: E402
from kpl import Consumer, ConsumerConfig, Producer, ProducerConfig  # noqa: E402
from kpl import run as kpl_run  # noqa: E402
from kpl.consumer.leases.memory import MemoryLeaseStore  # noqa: E402

_STAMP = struct.Struct("<d")
#: One turn of one side: wall and CPU seconds.
Timing = tuple[float, float]


async def fill(url: str, stream: str, count: int, *, aggregate: bool) -> None:
    """Put ``count`` 100-byte user records into a new 8-shard stream."""
    await create_stream(url, stream)
    config = ProducerConfig(
        aggregation_enabled=aggregate,
        rate_limit=1_000_000.0,
        max_buffered_records=count + 1,
    )
    async with Producer(stream, endpoint_url=url, region="us-east-1", config=config) as producer:
        for key, data in workload(count):
            await producer.put(data, partition_key=key)
        await producer.flush()


async def ours(url: str, stream: str, count: int, run_id: int) -> tuple[float, float]:
    """Wall and CPU seconds for kpl.Consumer to deliver ``count`` user records from
    TRIM_HORIZON."""
    store = MemoryLeaseStore(f"bench-{run_id}")
    config = ConsumerConfig(initial_position="TRIM_HORIZON", worker_id="bench")
    got = 0
    started = time.perf_counter()
    cpu = time.process_time()
    async with Consumer(
        stream, application=f"bench-{run_id}", endpoint_url=url, region="us-east-1",
        leases=store, config=config,
    ) as consumer:  # fmt: skip
        async for batch in consumer:
            for record in batch.records:
                if record.data:  # the application touches every record
                    got += 1
            await batch.checkpoint()
            if got >= count:
                break
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    await store.close()
    if got != count:
        raise RuntimeError(f"delivered {got} of {count}")
    return elapsed, cpu


def reference(url: str, stream: str, count: int) -> tuple[float, float]:
    """Wall and CPU seconds for a boto3 GetRecords + aws_kinesis_agg loop to go through
    the stream."""
    import boto3
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    client = boto3.client(
        "kinesis", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench",
    )  # fmt: skip
    got = 0
    started = time.perf_counter()
    cpu = time.process_time()
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            answer = client.get_records(ShardIterator=iterator, Limit=10_000)
            for user in iter_deaggregate_records(answer["Records"], data_format="Boto3"):
                kinesis = user["kinesis"]
                data = kinesis["data"]
                if kinesis.get("aggregated"):
                    data = base64.b64decode(data)
                if data:
                    got += 1
            iterator = answer.get("NextShardIterator")
            if not answer["Records"] and answer.get("MillisBehindLatest", 0) == 0:
                break
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    client.close()
    if got != count:
        raise RuntimeError(f"read {got} of {count}")
    return elapsed, cpu


async def async_kinesis(url: str, stream: str, count: int, aggregated: bool) -> tuple[float, float]:
    """Wall and CPU seconds for async-kinesis's Consumer to yield ``count`` user records."""
    import kinesis
    from kinesis.processors import KPLStringProcessor, StringProcessor

    processor = KPLStringProcessor() if aggregated else StringProcessor()
    got = 0
    started = time.perf_counter()
    cpu = time.process_time()
    async with kinesis.Consumer(
        stream, endpoint_url=url, region_name="us-east-1", processor=processor,
        iterator_type="TRIM_HORIZON",
    ) as consumer, asyncio.timeout(300):  # fmt: skip
        # Its iteration ends after idle_timeout (2 s) without a record in its queue,
        # which happens while its shard fetches start; its README loops around it.
        while got < count:
            async for item in consumer:
                if item:
                    got += 1
                if got >= count:
                    break
    elapsed = time.perf_counter() - started
    if got != count:
        raise RuntimeError(f"async-kinesis yielded {got} of {count}")
    return elapsed, time.process_time() - cpu


def has_async_kinesis() -> bool:
    try:
        import kinesis  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------- latency


async def produce_stamped(url: str, stream: str, rate: float, seconds: float) -> None:
    """Put ``rate`` records a second, each carrying its put() wall time (child process)."""
    config = ProducerConfig()
    async with Producer(stream, endpoint_url=url, region="us-east-1", config=config) as producer:
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < seconds:
            due = started + i / rate
            ahead = due - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            await producer.put(_STAMP.pack(time.time()) + b"x" * 92, partition_key=f"k{i}")
            i += 1
        await producer.flush()
    print(i)


async def latency(url: str, stream: str, rate: float, seconds: float) -> dict[str, list[float]]:
    """put -> delivered and arrival -> delivered, in ms, for every record of the run."""
    await create_stream(url, stream)
    put_to_delivered: list[float] = []
    arrival_to_delivered: list[float] = []
    store = MemoryLeaseStore("latency")
    # A new, empty stream: from TRIM_HORIZON every record put is read, with no race
    # against the readers' first iterators, and the readers are caught up from the start.
    config = ConsumerConfig(initial_position="TRIM_HORIZON", worker_id="bench")
    async with Consumer(
        stream, application="latency", endpoint_url=url, region="us-east-1",
        leases=store, config=config,
    ) as consumer:  # fmt: skip
        expected: list[int] = []  # the child's count of records put, once it exited
        enough = asyncio.Event()

        async def deliver() -> None:
            async for batch in consumer:
                now = time.time()
                for record in batch.records:
                    (put_at,) = _STAMP.unpack_from(record.data)
                    put_to_delivered.append((now - put_at) * 1000)
                    if record.approximate_arrival_timestamp is not None:
                        arrival_to_delivered.append(
                            (now - record.approximate_arrival_timestamp) * 1000
                        )
                await batch.checkpoint()
                if expected and len(put_to_delivered) >= expected[0]:
                    enough.set()

        reading = asyncio.ensure_future(deliver())
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--produce", url, stream, str(rate), str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(seconds + 60):
            out, _ = await child.communicate()
            expected.append(int(out))
            if len(put_to_delivered) >= expected[0]:
                enough.set()
            await enough.wait()
        consumer.shutdown()
        await reading
    await store.close()
    return {"put -> delivered": put_to_delivered, "arrival -> delivered": arrival_to_delivered}


def _ratios(theirs: list[Timing], ours: list[Timing]) -> str:
    """Each turn's ratio (theirs / ours), as a range over the turns: wall, then CPU."""
    wall = [t[0] / o[0] for t, o in zip(theirs, ours, strict=True)]
    cpu = [t[1] / o[1] for t, o in zip(theirs, ours, strict=True)]
    return f"{min(wall):.2f}-{max(wall):.2f}x wall, {min(cpu):.2f}-{max(cpu):.2f}x CPU"


def report(
    name: str, n: int, ours_s: list[Timing], ref_s: list[Timing], peer_s: list[Timing]
) -> None:
    """One line per turn, then the ranges of the ratios."""
    for i, ((w_ours, c_ours), (w_ref, c_ref)) in enumerate(zip(ours_s, ref_s, strict=True)):
        line = (f"  {name:<10} #{i + 1}  ours {n / w_ours:>9,.0f} rec/s "
                f"({n / c_ours:>9,.0f} per CPU s)   (b) {n / w_ref:>9,.0f} rec/s   "
                f"ours/(b) {w_ref / w_ours:4.2f}x wall, {c_ref / c_ours:4.2f}x CPU")  # fmt: skip
        if peer_s:
            w_peer, c_peer = peer_s[i]
            line += (f"   (c) {n / w_peer:>8,.0f} rec/s   ours/(c) "
                     f"{w_peer / w_ours:4.2f}x wall, {c_peer / c_ours:4.2f}x CPU")  # fmt: skip
        print(line)
    print(f"  {name:<10} ours/(b): {_ratios(ref_s, ours_s)}")
    if peer_s:
        print(f"  {name:<10} ours/(c): {_ratios(peer_s, ours_s)}")
    else:
        print("  (c) async-kinesis: not installed (pip install async-kinesis)")


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:7.1f}  p90 {q[89]:7.1f}  p99 {q[98]:7.1f}  max {values[-1]:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side, taking turns")
    parser.add_argument("--rate", type=float, default=2_000.0, help="latency: records/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency: how long")
    parser.add_argument("--produce", nargs=4, metavar=("URL", "STREAM", "RATE", "SECONDS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.produce:
        url, stream, rate, seconds = args.produce
        kpl_run(produce_stamped(url, stream, float(rate), float(seconds)))
        return 0

    n = args.records
    # aiobotocore (async-kinesis) wants credentials; the local server takes any.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDBENCH")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    peer = has_async_kinesis()
    print(f"kpl.Consumer vs boto3 GetRecords + aws_kinesis_agg (b) and async-kinesis (c): "
          f"{n:,} user records of 100 B, "
          f"{SHARDS} shards, {args.repeat} turns each")  # fmt: skip
    with server_process() as url:
        run_id = 0
        for name, aggregate in (("aggregated", True), ("plain", False)):
            stream = f"consumer-{name}"
            kpl_run(fill(url, stream, n, aggregate=aggregate))
            ours_s: list[Timing] = []
            ref_s: list[Timing] = []
            peer_s: list[Timing] = []
            for _ in range(args.repeat):
                run_id += 1
                ours_s.append(kpl_run(ours(url, stream, n, run_id)))
                ref_s.append(reference(url, stream, n))
                if peer:
                    peer_s.append(asyncio.run(async_kinesis(url, stream, n, aggregate)))
            report(name, n, ours_s, ref_s, peer_s)
        print(f"latency at the default settings, {args.rate:,.0f} rec/s for {args.seconds:.0f} s:")
        lat = kpl_run(latency(url, "consumer-latency", args.rate, args.seconds))
        for what, values in lat.items():
            print(f"  {what:<22} {percentiles(values)}  ({len(values):,} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
