"""``kpl load``: drive the producer at a stream and report what happened.

The asyncio shell around :mod:`kpl.loadgen`. Without ``--endpoint`` it starts the bundled
server in-process on a free loopback port (the embedded default). ``--producers`` tasks
share one :class:`kpl.Producer`; each takes records from one :class:`~kpl.loadgen.Pacer`
and registers a done-callback on every record's future, so the latency measured is
put() → acknowledged and no task waits on a single record. Ctrl-C (or SIGTERM) stops
producing, flushes what was put and still prints the summary; a second Ctrl-C gives up
on the flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import shlex
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import click
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kpl.cli._common import (
    AWS_ENDPOINT,
    EXIT_INTERRUPTED,
    CliError,
    FloatRange,
    IntRange,
    check_region,
    describe_error,
    is_terminal,
    wait_for_active,
)
from kpl.config import ProducerConfig
from kpl.loadgen import (
    LoadStats,
    Pacer,
    RecordSource,
    Snapshot,
    parse_record_size,
    summarize,
    timeline_rows,
)
from kpl.producer import run

__all__ = ["LoadOptions", "load", "run_load"]

#: Records a putting task takes from the pacer at a time (when unpaced, or due).
_CHUNK: Final = 64
#: Live view refresh period on a terminal, and between plain progress lines otherwise.
LIVE_REFRESH_S: Final = 0.25
LINE_REFRESH_S: Final = 1.0
DEFAULT_DURATION_S: Final = 10.0


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


class View(Protocol):
    """What the run shows while it goes."""

    refresh_s: float

    def start(self) -> None: ...
    def announce(self, phase: str) -> None: ...
    def update(self, snap: Snapshot, phase: str) -> None: ...
    def stop(self) -> None: ...


class NoView:
    """Shows nothing (``--json``, or a caller that only wants the result)."""

    refresh_s = LINE_REFRESH_S

    def start(self) -> None:
        """Nothing to start."""

    def announce(self, phase: str) -> None:
        """Nothing to show."""

    def update(self, snap: Snapshot, phase: str) -> None:
        """Nothing to show."""

    def stop(self) -> None:
        """Nothing to stop."""


def _errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n:,}" for code, n in sorted(errors.items())) or "none"


class LineView(NoView):
    """One plain progress line per second (stdout is not a terminal)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo = echo

    def announce(self, phase: str) -> None:
        """Say what the run is doing before records flow (starting, creating the stream)."""
        self._echo(f"kpl load: {phase}")

    def update(self, snap: Snapshot, phase: str) -> None:
        """Print one line."""
        self._echo(
            f"[{snap.elapsed_s:6.1f}s] {phase}: acked {snap.records_acked:,} "
            f"({snap.records_per_s:,.0f} rec/s, {snap.bytes_per_s / 1e6:.2f} MB/s), "
            f"in flight {snap.in_flight:,}, failed {snap.records_failed:,}, "
            f"retries {snap.retries:,}, throttles {snap.throttles:,}, "
            f"p50 {snap.p50_ms:.1f} ms, p99 {snap.p99_ms:.1f} ms"
        )


class LiveView(NoView):
    """A rich live panel refreshed a few times a second."""

    refresh_s = LIVE_REFRESH_S

    def __init__(self, console: Console, title: str) -> None:
        self._console = console
        self._title = title
        self._live = Live(
            Text(f"{title}: starting"),
            console=console,
            auto_refresh=False,
            transient=False,
        )

    def start(self) -> None:
        """Take over the terminal's last lines."""
        self._live.start()

    def announce(self, phase: str) -> None:
        """Show what the run is doing before records flow."""
        self._live.update(Text.assemble((self._title, "bold"), f" — {phase}"), refresh=True)

    def update(self, snap: Snapshot, phase: str) -> None:
        """Redraw with the latest figures."""
        table = Table(box=None, show_header=True, pad_edge=False)
        for column in (
            "elapsed",
            "records/s",
            "MB/s",
            "acked",
            "in flight",
            "failed",
            "retries",
            "throttles",
            "p50 ms",
            "p99 ms",
        ):
            table.add_column(column, justify="right")
        table.add_row(
            f"{snap.elapsed_s:.1f}s",
            f"{snap.records_per_s:,.0f}",
            f"{snap.bytes_per_s / 1e6:.2f}",
            f"{snap.records_acked:,}",
            f"{snap.in_flight:,}",
            f"{snap.records_failed:,}",
            f"{snap.retries:,}",
            f"{snap.throttles:,}",
            f"{snap.p50_ms:.1f}",
            f"{snap.p99_ms:.1f}",
        )
        header = Text.assemble((self._title, "bold"), f" — {phase}")
        errors = Text(
            f"attempt errors by code: {_errors_text(snap.errors_by_code)}", style="dim"
        )
        self._live.update(Group(header, table, errors), refresh=True)

    def stop(self) -> None:
        """Leave the last frame on screen (again: nothing)."""
        if self._live.is_started:
            self._live.stop()


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


async def run_load(opts: LoadOptions, view: View | None = None) -> tuple[dict[str, Any], LoadStats]:
    """Run one load; return the summary (``--json``'s object) and the stats."""
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
        endpoint: str | None = opts.endpoint
        set_phase(
            "starting the embedded server"
            if endpoint is None
            else f"connecting to {endpoint} for stream {opts.stream}"
        )
        if endpoint is None:
            server = await stack.enter_async_context(_embedded_server(opts.server_args))
            endpoint = str(server.url)
        elif endpoint == AWS_ENDPOINT:
            endpoint = None  # the client and producer pick the region's endpoint
        client = await stack.enter_async_context(KinesisClient(endpoint, region=opts.region))
        shards = await _ensure_stream(client, opts.stream, opts.shards, set_phase)
        producer = Producer(
            opts.stream, endpoint_url=endpoint, region=opts.region, config=opts.producer
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
                    # RecordFailed and every Kinesis error class carry their wire code.
                    code = str(getattr(error, "code", None) or type(error).__name__)
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


def throttle_note(summary: dict[str, Any]) -> str | None:
    """A line under the summary saying why throttles are expected, when there were some.

    The producer's rate limit lets each shard be sent up to ``rate_limit`` percent of its
    write limit (150 by default, like the KPL), so against a server that enforces the real
    limits some throttling is the normal cost of keeping every shard busy; the throttled
    records were retried."""
    if not summary.get("throttles"):
        return None
    rate_limit = summary.get("settings", {}).get("rate_limit")
    note = "throttles are retried"
    if isinstance(rate_limit, int | float) and rate_limit > 100:
        note = (
            f"throttles are expected: the producer sends each shard up to {rate_limit:g}% of"
            " its write limit (--rate-limit, as the KPL does) and retries what is throttled"
        )
    if not summary.get("records_failed") and not summary.get("records_unresolved"):
        note += "; every record was acknowledged"
    return note


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run summary as a two-column table."""
    lat = summary["latency_ms"]
    table = Table(title="kpl load summary", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    rows = [
        ("records sent", f"{summary['records_sent']:,}"),
        ("records acknowledged", f"{summary['records_acked']:,}"),
        ("records failed", f"{summary['records_failed']:,}"),
        ("duration", f"{summary['duration_s']:.2f} s"),
        ("throughput", f"{summary['records_per_s']:,.0f} records/s"),
        ("", f"{summary['bytes_per_s'] / 1e6:.2f} MB/s"),
        ("latency p50 / p90 / p99", f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} ms"),
        ("latency max", f"{lat['max']:.1f} ms"),
        ("retries", f"{summary['retries']:,}"),
        ("throttles", f"{summary['throttles']:,}"),
        ("attempt errors by code", _errors_text(summary["errors_by_code"])),
        ("record failures by code", _errors_text(summary["failures_by_code"])),
        ("Kinesis records", f"{summary['kinesis_records']:,}"),
        ("PutRecords calls", f"{summary['put_records_calls']:,}"),
    ]
    if summary.get("records_unresolved"):
        rows.append(("unresolved (gave up)", f"{summary['records_unresolved']:,}"))
    if summary.get("interrupted"):
        rows.append(("interrupted", "yes"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        return parse_record_size(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.command("load", short_help="Drive the producer at a stream and report what happened.")
@click.option(
    "--endpoint",
    metavar="URL",
    default=None,
    help=(
        "Stream API endpoint URL, or 'aws' for the region's AWS endpoint; without it the "
        "load runs against an embedded server."
    ),
)
@click.option("--region", metavar="REGION", default=None, help="Region to sign for.")
@click.option("--stream", default="kpl-load", show_default=True, help="Stream to load.")
@click.option(
    "--shards",
    type=IntRange(min=1),
    default=4,
    show_default=True,
    help="Shard count when the stream has to be created.",
)
@click.option("--records", type=IntRange(min=1), default=None, help="Records to put.")
@click.option(
    "--duration",
    type=FloatRange(min=0, min_open=True),
    default=None,
    help=f"Seconds to put for (default {DEFAULT_DURATION_S:g} s unless --records).",
)
@click.option(
    "--rate",
    type=FloatRange(min=0, min_open=True),
    default=None,
    help="Records/s to aim at (default: as fast as the producer goes).",
)
@click.option(
    "--record-size",
    "record_size",
    default="100",
    show_default=True,
    callback=_parse_size,
    metavar="B|MIN-MAX",
    help="Record data size in bytes, or a range to draw from.",
)
@click.option(
    "--keys",
    type=IntRange(min=1),
    default=1000,
    show_default=True,
    help="Distinct partition keys.",
)
@click.option(
    "--producers",
    type=IntRange(min=1),
    default=4,
    show_default=True,
    help="Concurrent putting tasks.",
)
@click.option("--seed", type=int, default=None, help="Seed of the record generator.")
@click.option("--no-aggregation", is_flag=True, help="Send one Kinesis record per user record.")
@click.option(
    "--rate-limit",
    type=float,
    default=None,
    help="Producer's per-shard rate limit, percent of the shard limits (default 150).",
)
@click.option(
    "--preserve-order", is_flag=True, help="Keep per-key order (one request in flight per shard)."
)
@click.option(
    "--record-ttl",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Give up on a record after this long (default 30).",
)
@click.option(
    "--max-buffered-time",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Longest a record waits to be batched (default 0.1).",
)
@click.option(
    "--max-connections",
    type=IntRange(min=1),
    default=None,
    help="HTTP connections to the endpoint (default 24).",
)
@click.option("--fail-if-throttled", is_flag=True, help="Fail throttled records at once.")
@click.option(
    "--server-args",
    metavar="'FLAGS'",
    default=None,
    help="Flags of the embedded server, as for kpl server (e.g. '--limits off').",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option(
    "--metrics-port", type=IntRange(0, 65535), default=None, metavar="PORT",
    help="Serve the producer's metrics (Prometheus text) on 127.0.0.1:PORT/metrics.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write throughput and latency charts to FILE (.html or .png).",
)
def load(
    endpoint: str | None,
    region: str | None,
    stream: str,
    shards: int,
    records: int | None,
    duration: float | None,
    rate: float | None,
    record_size: tuple[int, int],
    keys: int,
    producers: int,
    seed: int | None,
    no_aggregation: bool,
    rate_limit: float | None,
    preserve_order: bool,
    record_ttl: float | None,
    max_buffered_time: float | None,
    max_connections: int | None,
    fail_if_throttled: bool,
    server_args: str | None,
    as_json: bool,
    metrics_port: int | None,
    report: Path | None,
) -> int:
    """Put records into a stream with the producer and report what happened.

    Without --endpoint, an embedded server is started for the run, so this works with
    nothing else running. The stream is created with --shards when missing. On a
    terminal a live view shows progress; a summary follows (--json: one JSON object).
    Ctrl-C stops producing, flushes and still prints the summary.
    """
    if records is not None and duration is not None:
        raise click.UsageError("use --records or --duration, not both")
    if records is None and duration is None:
        duration = DEFAULT_DURATION_S
    if endpoint is not None and server_args is not None:
        raise click.UsageError("--server-args is for the embedded server (no --endpoint)")
    if endpoint not in (None, AWS_ENDPOINT) and not endpoint.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"must be an http:// or https:// URL (or 'aws'), got {endpoint!r}",
            param_hint="'--endpoint'",
        )
    if endpoint is not None:
        check_region(None if endpoint == AWS_ENDPOINT else endpoint, region)
    size_min, size_max = record_size
    overrides: dict[str, Any] = {}
    if no_aggregation:
        overrides["aggregation_enabled"] = False
    if preserve_order:
        overrides["preserve_order"] = True
    if fail_if_throttled:
        overrides["fail_if_throttled"] = True
    for name, value in (
        ("rate_limit", rate_limit),
        ("record_ttl", record_ttl),
        ("record_max_buffered_time", max_buffered_time),
        ("max_connections", max_connections),
    ):
        if value is not None:
            overrides[name] = value
    try:
        config = ProducerConfig(**overrides)
    except (TypeError, ValueError) as error:
        raise click.UsageError(f"bad producer option: {error}") from error
    longest_key = len(f"key-{keys - 1}")
    if size_max + longest_key > config.max_record_size:
        raise click.BadParameter(
            f"records of {size_max} bytes exceed the {config.max_record_size}-byte record limit",
            param_hint="'--record-size'",
        )
    parsed_server_args: tuple[str, ...] = ()
    if server_args is not None:
        from kpl.cli.server import server_parser

        try:
            parsed_server_args = tuple(shlex.split(server_args))
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="'--server-args'") from error
        server_parser("kpl load --server-args").parse_args(parsed_server_args)
    if report is not None:
        from kpl.report import ReportError, check_report_target

        try:
            check_report_target(report)
        except ReportError as error:
            raise CliError(str(error)) from error

    opts = LoadOptions(
        stream=stream,
        endpoint=endpoint,
        region=region,
        shards=shards,
        records=records,
        duration_s=duration,
        rate=rate,
        size_min=size_min,
        size_max=size_max,
        keys=keys,
        producers=producers,
        seed=seed,
        server_args=parsed_server_args,
        producer=config,
        metrics_port=metrics_port,
    )

    console = Console(soft_wrap=True)
    view: View
    if as_json:
        view = NoView()
    elif is_terminal():
        view = LiveView(console, f"kpl load → {stream}")
    else:
        view = LineView(click.echo)

    try:
        summary, stats = run(run_load(opts, view))
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("kpl load: interrupted before the run started", err=True)
        return EXIT_INTERRUPTED
    except ValueError as error:
        raise CliError(str(error)) from error
    except Exception as error:
        from kpl.errors import KinesisError

        if isinstance(error, KinesisError | TimeoutError):
            raise CliError(describe_error(error, endpoint)) from error
        raise

    if report is not None:
        from kpl.report import ReportError, render_report

        try:
            render_report(
                report, summary, timeline_rows(stats, stats.start + summary["duration_s"])
            )
        except ReportError as error:
            raise CliError(str(error)) from error

    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        console.print(summary_table(summary))
        note = throttle_note(summary)
        if note is not None:
            console.print(note, style="dim", highlight=False)
        if report is not None:
            console.print(f"report written to {report}", highlight=False)
    if summary["records_failed"] or summary["records_unresolved"]:
        click.echo(
            f"kpl load: {summary['records_failed']:,} records failed, "
            f"{summary['records_unresolved']:,} unresolved",
            err=True,
        )
        return 1
    return 0
