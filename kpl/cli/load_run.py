"""The run behind ``kpl load``: a server, a stream, the producer, a paced feed, a summary.

The asyncio shell around :mod:`kpl.loadgen`. Without an endpoint it starts the bundled
server in-process on a free loopback port (the embedded default). One feeding task wakes
once per :attr:`~kpl.loadgen.Pacer.tick_s` and hands everything due to a
:class:`~kpl.cli.load_feed.Feed`, which puts it into one :class:`kpl.Producer` and settles
outcomes in bulk (no callback per record). ``--processes N`` hands the run to
:mod:`kpl.cli.load_procs` once the stream exists. Ctrl-C (or SIGTERM) stops producing,
flushes what was put and still returns the summary; a second Ctrl-C gives up on the flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from kpl.cli._common import AWS_ENDPOINT, wait_for_active
from kpl.cli.load_feed import SWEEP_S, Feed, failure_code
from kpl.cli.load_view import NoView, View, capacity_text
from kpl.config import ProducerConfig
from kpl.histogram import LatencyHistogram
from kpl.loadgen import (
    LoadStats,
    Pacer,
    RecordSource,
    latency_figures,
    sample_every,
    stream_capacity,
    summarize,
)

if TYPE_CHECKING:
    from kpl.transport import Transport

__all__ = ["LoadOptions", "failure_code", "run_load"]

#: Unpaced, the latency sample's stride follows the rate measured over this long (s).
_STRIDE_S: Final = 0.2
_STRIDE_RECORDS: Final = 20_000

#: Most records put as one chunk (unpaced: every chunk; paced: what is due, in chunks).
_CHUNK: Final = 1000


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """Everything one ``kpl load`` run needs (validated by the command)."""

    stream: str = "kpl-load"
    #: ``None``: start the embedded server; ``"aws"``: the region's AWS endpoint
    endpoint: str | None = None
    region: str | None = None
    shards: int = 4
    records: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    size_min: int = 100
    size_max: int = 100
    keys: int = 1000
    #: Producer processes (each its own event loop and producer) sharing the load.
    processes: int = 1
    #: Also measure every record's latency (``latency_exact_ms``): the reference a
    #: benchmark checks the sampled percentiles against.
    exact_latency: bool = False
    seed: int | None = None
    server_args: tuple[str, ...] = ()
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    #: Serve the producer's metrics on ``http://127.0.0.1:PORT/metrics`` during the run.
    metrics_port: int | None = None

    def settings(self) -> dict[str, Any]:
        """The run's settings as reported (JSON, report page)."""
        out: dict[str, Any] = {
            "stream": self.stream,
            "endpoint": self.endpoint or "embedded",
            "shards": self.shards,
            "records": self.records,
            "duration_s": self.duration_s,
            "rate": self.rate,
            "record_size": (
                str(self.size_min)
                if self.size_min == self.size_max
                else f"{self.size_min}-{self.size_max}"
            ),
            "keys": self.keys,
            "processes": self.processes,
        }
        if self.server_args:
            out["server_args"] = " ".join(self.server_args)
        cfg = asdict(self.producer)
        for name in (
            "aggregation_enabled",
            "rate_limit",
            "preserve_order",
            "record_ttl",
            "record_max_buffered_time",
            "max_connections",
            "fail_if_throttled",
        ):
            if name in cfg:
                out[name] = cfg[name]
        return out


def _embedded_server(
    server_args: tuple[str, ...],
) -> tuple[contextlib.AbstractAsyncContextManager[Any], float | None]:
    """The embedded server, and the factor its write limits are scaled by (``None``:
    it enforces none)."""
    from kpl.cli.server import server_parser
    from server import StreamServer
    from server.cli_args import config_from_args

    config = config_from_args(server_parser("kpl load --server-args").parse_args(server_args))
    scale = None if config.limits == "off" else float(config.limits_scale)
    return StreamServer(config=config, host="127.0.0.1", port=0), scale


@contextlib.asynccontextmanager
async def _signals(on_signal: Callable[[], None]) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
            pass  # not the main thread, or no signal support: Ctrl-C stays the default
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _close_producer(producer: Any, abort: asyncio.Event) -> None:
    """Close the producer; a (second) Ctrl-C cuts the close short instead of letting it
    wait for in-flight records up to their TTL."""
    closing: asyncio.Future[Any] = asyncio.ensure_future(producer.close())
    aborted: asyncio.Future[Any] = asyncio.ensure_future(abort.wait())
    await asyncio.wait({closing, aborted}, return_when=asyncio.FIRST_COMPLETED)
    aborted.cancel()
    if not closing.done():
        closing.cancel()  # Producer.close() cancelled still stops its sender and transport
    await asyncio.gather(closing, aborted, return_exceptions=True)


def _producer_counts(metrics: dict[str, float]) -> tuple[int, int]:
    """(Kinesis records put, PutRecords calls made) from the producer's metrics."""
    return round(metrics.get("KinesisRecordsPut", 0.0)), round(
        metrics.get("PutRecordsRequests", 0.0)
    )


async def _ensure_stream(client: Any, name: str, shards: int, phase: Callable[[str], None]) -> int:
    from kpl.errors import ResourceInUseException, ResourceNotFoundException

    try:
        summary = await client.describe_stream_summary(name)
    except ResourceNotFoundException:
        phase(f"creating stream {name} with {shards} shards")
        with contextlib.suppress(ResourceInUseException):  # created meanwhile by another
            await client.create_stream(name, shards)
        summary = await wait_for_active(client, name)
    if summary.get("StreamStatus") != "ACTIVE":
        phase(f"waiting for stream {name} to be ACTIVE")
        summary = await wait_for_active(client, name)
    return int(summary.get("OpenShardCount", shards))


async def run_load(
    opts: LoadOptions,
    view: View | None = None,
    *,
    transport: Transport | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], LoadStats]:
    """Run one load; return the summary (``--json``'s object) and the stats.

    ``ready`` is awaited once everything is set up, just before the first put (the
    processes of one run start putting together).

    With ``transport``, every call goes through it (no server is started and
    ``opts.endpoint`` is not used): the seam for running a load without a network.
    """
    from kpl import Producer
    from kpl.client import KinesisClient

    view = view or NoView()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    abort = asyncio.Event()
    interrupted = False
    producing = False
    main = asyncio.current_task()

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        if not producing and main is not None:
            # Still starting (server, stream): nothing to summarise, stop right away.
            main.cancel()
            return
        if stop.is_set():
            abort.set()
        stop.set()

    phase = "starting"

    def set_phase(text: str) -> None:
        nonlocal phase
        phase = text
        if not producing:
            view.announce(text)

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_signals(on_signal))
        view.start()
        stack.callback(view.stop)
        endpoint: str | None = None if transport is not None else opts.endpoint
        limits_scale: float | None = 1.0
        embedded = endpoint is None and transport is None
        set_phase(
            "starting the embedded server"
            if embedded
            else f"connecting to {endpoint or 'the transport'} for stream {opts.stream}"
        )
        if embedded:
            server_cm, limits_scale = _embedded_server(opts.server_args)
            server = await stack.enter_async_context(server_cm)
            endpoint = str(server.url)
        elif endpoint == AWS_ENDPOINT:
            endpoint = None  # the client and producer pick the region's endpoint
        # A given transport stays its owner's: neither the client nor the producer closes it.
        client = await stack.enter_async_context(
            KinesisClient(endpoint, region=opts.region, transport=transport, owns_transport=False)
            if transport is not None
            else KinesisClient(endpoint, region=opts.region)
        )
        shards = await _ensure_stream(client, opts.stream, opts.shards, set_phase)
        # What the stream takes: the service's limits, unless the embedded server was
        # told otherwise (an external endpoint's own settings are unknown here).
        capacity = stream_capacity(
            shards, limits_scale if embedded else 1.0, enforced=True if embedded else None
        )
        if not embedded or limits_scale is not None:
            set_phase(capacity_text(opts.stream, capacity))
        if opts.processes > 1 and transport is None:
            from kpl.cli.load_procs import run_processes

            settings = opts.settings()
            settings["shards"] = shards
            settings["endpoint"] = opts.endpoint or f"embedded ({endpoint})"
            producing = True
            summary, stats = await run_processes(
                opts, view, endpoint or AWS_ENDPOINT, shards, settings
            )
            summary["stream_capacity"] = capacity
            return summary, stats
        producer = Producer(
            opts.stream,
            endpoint_url=endpoint,
            region=opts.region,
            config=opts.producer,
            transport=transport,
        )
        producer.start()
        stack.push_async_callback(_close_producer, producer, abort)
        if opts.metrics_port is not None:
            from kpl.metrics import serve_producer

            stack.callback(serve_producer(producer, opts.metrics_port))

        if ready is not None:
            await ready()
        rng = random.Random(opts.seed)
        source = RecordSource(rng, size_min=opts.size_min, size_max=opts.size_max, keys=opts.keys)
        start = loop.time()
        stats = LoadStats(start)
        pacer = Pacer(opts.rate, start)
        deadline = start + opts.duration_s if opts.duration_s is not None else None
        exact = LatencyHistogram() if opts.exact_latency else None
        feed = Feed(
            producer,
            source,
            stats,
            loop.time,
            every=sample_every(opts.rate) if opts.rate is not None else 1,
            exact=exact,
            # Unpaced, the records that need no latency can go in bulk.
            bulk=opts.rate is None,
        )
        cpu_start = time.process_time()
        remaining = opts.records

        async def feeding() -> None:
            # One task: everything due since the previous tick is put at once.
            nonlocal remaining
            next_sweep = loop.time() + SWEEP_S
            last_stride = (loop.time(), 0)
            while not stop.is_set():
                now = loop.time()
                want = _CHUNK if remaining is None else min(_CHUNK, remaining)
                if want == 0:
                    return
                if deadline is not None and now >= deadline:
                    if opts.rate is None:
                        return
                    granted = pacer.take_before(deadline, want)
                else:
                    granted = pacer.take(now, want)
                if granted:
                    if remaining is not None:
                        remaining -= granted
                    await feed.put(granted)
                if now >= next_sweep:
                    feed.sweep()
                    next_sweep = now + SWEEP_S
                if opts.rate is None and (
                    now - last_stride[0] >= _STRIDE_S
                    or pacer.taken - last_stride[1] >= _STRIDE_RECORDS
                ):
                    # Unpaced: keep the latency sample near its floor at the rate seen
                    # (as soon as that many records went in, at the start's burst too).
                    feed.every = sample_every(
                        (pacer.taken - last_stride[1]) / max(now - last_stride[0], 1e-3)
                    )
                    stats.latency_every = max(stats.latency_every, feed.every)
                    last_stride = (now, pacer.taken)
                if deadline is not None and now >= deadline:
                    if granted < want:
                        return
                    continue
                if opts.rate is None or granted == want:
                    continue  # more may be due at once (or no pacing): no sleep
                due = pacer.next_due()
                wake = max(now + pacer.tick_s, due if due is not None else now)
                if deadline is not None:
                    wake = min(wake, deadline)
                await asyncio.sleep(max(0.0, wake - now))

        async def ticker() -> None:
            while True:
                await asyncio.sleep(view.refresh_s)
                started = time.process_time()
                view.update(stats.snapshot(loop.time()), phase)
                feed.cpu_s += time.process_time() - started

        stats.latency_every = feed.every
        producing = True
        set_phase("producing")
        tick = asyncio.create_task(ticker())
        try:
            putter = asyncio.create_task(feeding())
            stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            await asyncio.wait({putter, stopped}, return_when=asyncio.FIRST_COMPLETED)
            putter.cancel()
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopped
            try:
                await putter
            except asyncio.CancelledError:
                if not stop.is_set():
                    raise

            set_phase("flushing")
            flushing: asyncio.Future[Any] = asyncio.ensure_future(producer.flush())
            aborted: asyncio.Future[Any] = asyncio.ensure_future(abort.wait())
            while feed.in_flight and not abort.is_set() and not flushing.done():
                await asyncio.wait({flushing, aborted}, timeout=SWEEP_S)
                feed.sweep()
            # The flush returned: every record put before it has its outcome (what is left
            # in flight is counted unresolved, never waited on forever).
            await asyncio.sleep(0)
            feed.sweep()
            aborted.cancel()
            if abort.is_set():
                flushing.cancel()
            # Every future is resolved (or we gave up): the flush has nothing left to wait for.
            await asyncio.gather(flushing, aborted, return_exceptions=True)
            settled = not feed.in_flight
            end = stats.last_outcome if settled and stats.last_outcome else loop.time()
        finally:
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
            view.update(
                stats.snapshot(loop.time(), final=True), "done" if not abort.is_set() else "aborted"
            )
            view.stop()

        kinesis_records, put_calls = _producer_counts(dict(producer.metrics()))
        settings = opts.settings()
        settings["shards"] = shards
        settings["endpoint"] = opts.endpoint or f"embedded ({endpoint})"
        summary = summarize(
            stats,
            end=end,
            kinesis_records=kinesis_records,
            put_records_calls=put_calls,
            settings=settings,
            interrupted=interrupted,
            process_cpu_s=time.process_time() - cpu_start,
            generator_cpu_s=feed.cpu_s,
        )
        if exact is not None:
            summary["latency_exact_ms"] = latency_figures(exact)
        summary["bulk"] = feed.bulk
        summary["stream_capacity"] = capacity
        feed.forget()
    return summary, stats

