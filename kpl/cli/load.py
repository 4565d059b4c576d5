"""``kpl load``: drive the producer at a stream and report what happened.

This module is the command: its options, their validation, the choice of view and the
exit code. The run itself is :func:`kpl.cli.load_run.run_load`; what it shows while it
goes and the summary after are in :mod:`kpl.cli.load_view`.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from typing import Any, Final

import click
import orjson
from rich.console import Console

from kpl.cli._common import (
    AWS_ENDPOINT,
    EXIT_INTERRUPTED,
    CliError,
    FloatRange,
    IntRange,
    check_region,
    describe_error,
    is_terminal,
)
from kpl.cli.load_run import LoadOptions, run_load
from kpl.cli.load_view import (
    LineView,
    LiveView,
    NoView,
    View,
    outcome_note,
    summary_table,
    throttle_note,
)
from kpl.config import ProducerConfig
from kpl.loadgen import parse_record_size, timeline_rows
from kpl.runner import run

__all__ = ["LoadOptions", "load", "run_load"]

DEFAULT_DURATION_S: Final = 10.0


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
    "--processes",
    type=IntRange(min=1),
    default=1,
    show_default=True,
    help="Producer processes sharing the load (each its own event loop and producer).",
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
    processes: int,
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
    if processes > 1 and metrics_port is not None:
        raise click.UsageError("--metrics-port serves one producer: not with --processes")
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
        processes=processes,
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
        console.print(outcome_note(summary), highlight=False)
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
