"""The run behind ``kpl load``: a server, a stream, the producer, paced putters, a summary.

The asyncio shell around :mod:`kpl.loadgen`. Without an endpoint it starts the bundled
server in-process on a free loopback port (the embedded default). ``producers`` tasks
share one :class:`kpl.Producer`; each takes records from one :class:`~kpl.loadgen.Pacer`
and registers a done-callback on every record's future, so the latency measured is
put() → acknowledged and no task waits on a single record. Ctrl-C (or SIGTERM) stops
producing, flushes what was put and still returns the summary; a second Ctrl-C gives up
on the flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from kpl.cli._common import AWS_ENDPOINT, wait_for_active
from kpl.cli.load_view import NoView, View
from kpl.config import ProducerConfig
from kpl.loadgen import LoadStats, Pacer, RecordSource, summarize

if TYPE_CHECKING:
    from kpl.transport import Transport

__all__ = ["LoadOptions", "failure_code", "run_load"]

#: Records a putting task takes from the pacer at a time (when unpaced, or due).
_CHUNK: Final = 64


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
    producers: int = 4
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
            "producers": self.producers,
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


def failure_code(error: BaseException) -> str:
    """The code a failed record is counted under: the wire code it carries, else its class."""
    return str(getattr(error, "code", None) or type(error).__name__)


def _embedded_server(server_args: tuple[str, ...]) -> contextlib.AbstractAsyncContextManager[Any]:
    from kpl.cli.server import server_parser
    from server import StreamServer
    from server.cli_args import config_from_args

    config = config_from_args(server_parser("kpl load --server-args").parse_args(server_args))
    return StreamServer(config=config, host="127.0.0.1", port=0)


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
    opts: LoadOptions, view: View | None = None, *, transport: Transport | None = None
) -> tuple[dict[str, Any], LoadStats]:
    """Run one load; return the summary (``--json``'s object) and the stats.

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
        embedded = endpoint is None and transport is None
        set_phase(
            "starting the embedded server"
            if embedded
            else f"connecting to {endpoint or 'the transport'} for stream {opts.stream}"
        )
        if embedded:
            server = await stack.enter_async_context(_embedded_server(opts.server_args))
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

        rng = random.Random(opts.seed)
        source = RecordSource(rng, size_min=opts.size_min, size_max=opts.size_max, keys=opts.keys)
        start = loop.time()
        stats = LoadStats(start)
        pacer = Pacer(opts.rate, start)
        deadline = start + opts.duration_s if opts.duration_s is not None else None
        remaining = opts.records
        producing_done = False
        idle = asyncio.Event()

        def on_outcome(t0: float, size: int, future: asyncio.Future[Any]) -> None:
            now = loop.time()
            if future.cancelled():
                stats.on_failed("Cancelled", (), now)
            else:
                error = future.exception()
                if error is None:
                    attempts = future.result().attempts
                    # The usual case, one successful attempt, needs no list of codes.
                    codes = [a.error_code for a in attempts] if len(attempts) > 1 else ()
                    stats.on_acked(size, now - t0, codes, now)
                else:
                    code = failure_code(error)
                    attempts = getattr(error, "attempts", ())
                    stats.on_failed(code, [a.error_code for a in attempts], now)
            if producing_done and stats.in_flight == 0:
                idle.set()

        async def putter() -> None:
            nonlocal remaining
            while not stop.is_set():
                now = loop.time()
                if deadline is not None and now >= deadline:
                    stop.set()
                    return
                want = _CHUNK if remaining is None else min(_CHUNK, remaining)
                if want == 0:
                    return
                granted = pacer.take(now, want)
                if granted == 0:
                    due = pacer.next_due()
                    wait = max(0.0, (due if due is not None else now) - now)
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - now))
                    # Sleep until the schedule says so; a stop wakes the caller via cancel.
                    await asyncio.sleep(wait)
                    continue
                if remaining is not None:
                    remaining -= granted
                for _ in range(granted):
                    data, key = source.next()
                    t0 = loop.time()
                    future = await producer.put(data, partition_key=key)
                    stats.on_sent(len(data))
                    future.add_done_callback(functools.partial(on_outcome, t0, len(data)))

        async def ticker() -> None:
            while True:
                await asyncio.sleep(view.refresh_s)
                view.update(stats.snapshot(loop.time()), phase)

        producing = True
        set_phase("producing")
        tick = asyncio.create_task(ticker())
        try:
            putters = [asyncio.create_task(putter()) for _ in range(opts.producers)]
            all_put: asyncio.Future[Any] = asyncio.gather(*putters)
            stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            if deadline is not None:
                loop.call_at(deadline, stop.set)
            await asyncio.wait({all_put, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in putters:
                task.cancel()
            stopped.cancel()
            outcomes = await asyncio.gather(*putters, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError):
                await all_put
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome

            set_phase("flushing")
            producing_done = True
            if stats.in_flight == 0:
                idle.set()
            flushing: asyncio.Future[Any] = asyncio.ensure_future(producer.flush())
            settled: asyncio.Future[Any] = asyncio.ensure_future(idle.wait())
            aborted: asyncio.Future[Any] = asyncio.ensure_future(abort.wait())
            await asyncio.wait({settled, aborted}, return_when=asyncio.FIRST_COMPLETED)
            settled.cancel()
            aborted.cancel()
            if abort.is_set():
                flushing.cancel()
            # Every future is resolved (or we gave up): the flush has nothing left to wait for.
            await asyncio.gather(flushing, settled, aborted, return_exceptions=True)
            end = stats.last_outcome if idle.is_set() and stats.last_outcome else loop.time()
        finally:
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
            view.update(stats.snapshot(loop.time()), "done" if not abort.is_set() else "aborted")
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
        )
    return summary, stats

