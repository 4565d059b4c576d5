"""What ``kpl load`` shows: the live view while it runs and the summary after.

A :class:`View` is told the run's phase before records flow and gets a
:class:`~kpl.loadgen.Snapshot` every ``refresh_s`` while they do: :class:`LiveView` redraws a
rich panel on a terminal, :class:`LineView` prints one plain line (stdout is not a terminal),
:class:`NoView` shows nothing (``--json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kpl.loadgen import THROTTLE_CODE, Snapshot

__all__ = [
    "LINE_REFRESH_S",
    "LIVE_REFRESH_S",
    "LineView",
    "LiveView",
    "NoView",
    "View",
    "capacity_text",
    "outcome_note",
    "summary_table",
    "throttle_note",
]

#: Phases after which the figures are the whole run's.
_FINAL_PHASES: Final = ("done", "aborted")

#: Live view refresh period on a terminal, and between plain progress lines otherwise.
LIVE_REFRESH_S: Final = 0.25
LINE_REFRESH_S: Final = 1.0


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
        """Print one line (the last one, once the run is over, with its average rates)."""
        rates = f"{snap.records_per_s:,.0f} rec/s, {snap.bytes_per_s / 1e6:.2f} MB/s"
        if phase in _FINAL_PHASES:
            rates = f"average {rates}"
        self._echo(
            f"[{snap.elapsed_s:6.1f}s] {phase}: acked {snap.records_acked:,} "
            f"({rates}), "
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
        note = " (rates: averages over the run)" if phase in _FINAL_PHASES else ""
        header = Text.assemble((self._title, "bold"), f" — {phase}{note}")
        errors = Text(
            f"retried attempts by code: {_errors_text(snap.errors_by_code)}", style="dim"
        )
        self._live.update(Group(header, table, errors), refresh=True)

    def stop(self) -> None:
        """Leave the last frame on screen (again: nothing)."""
        if self._live.is_started:
            self._live.stop()


def throttle_note(summary: dict[str, Any]) -> str | None:
    """A line under the summary saying why throttles are expected, when there were some.

    The producer starts each shard at ``rate_limit`` percent of its write limit (150 by
    default, like the KPL) and backs off on throttles, so against a server that enforces
    the real limits some throttling is the normal cost of finding each shard's rate; the
    throttled records were retried."""
    if not summary.get("throttles"):
        return None
    rate_limit = summary.get("settings", {}).get("rate_limit")
    note = "throttles are retried"
    if isinstance(rate_limit, int | float) and rate_limit > 100:
        note = (
            f"throttles are expected: the producer starts each shard at {rate_limit:g}% of"
            " its write limit (--rate-limit, as the KPL does), backs off where it is"
            " throttled and retries what was"
        )
    if not summary.get("records_failed") and not summary.get("records_unresolved"):
        note += "; every record was acknowledged"
    return note


def capacity_text(stream: str, capacity: dict[str, Any]) -> str:
    """One line on what the stream takes, said before records flow."""
    shards = capacity["shards"]
    if capacity.get("enforced") is False or "bytes_per_s" not in capacity:
        return f"stream {stream}: {shards} shards, no write limits enforced"
    records = capacity["kinesis_records_per_s"]
    mib = capacity["bytes_per_s"] / (1 << 20)
    where = "the embedded server enforces" if capacity.get("enforced") else "the service enforces"
    return (
        f"stream {stream}: {shards} shards take {mib:,.2f} MiB/s and {records:,.0f} Kinesis "
        f"records/s of writes ({where} 1 MiB/s and 1,000 records/s a shard; the producer "
        f"aggregates many records into each Kinesis record)"
    )


def outcome_note(summary: dict[str, Any]) -> str:
    """What the run achieved, in one or two sentences under the summary."""
    acked = summary["records_acked"]
    text = (
        f"the producer delivered {acked:,} records in {summary['duration_s']:.1f} s: "
        f"{summary['records_per_s']:,.0f} records/s, {summary['bytes_per_s'] / 1e6:.2f} MB/s"
    )
    capacity = summary.get("stream_capacity") or {}
    limit = capacity.get("bytes_per_s")
    if limit:
        text += f", {summary['bytes_per_s'] / limit:.0%} of the stream's write limit"
    krecords = summary.get("kinesis_records") or 0
    if krecords and acked > krecords:
        text += f" ({acked / krecords:,.0f} records per Kinesis record)"
    failed = summary["records_failed"]
    unresolved = summary.get("records_unresolved", 0)
    if failed or unresolved:
        text += f"; {failed:,} records failed and {unresolved:,} were given up on"
    else:
        text += "; no record failed"
    return text


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run summary as a two-column table.

    Throttles are the normal cost of keeping every shard busy and are retried, so they
    are counted as such; other attempt errors, and failures by code, appear only when
    there were some.
    """
    lat = summary["latency_ms"]
    table = Table(title="kpl load summary", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    sample = summary.get("latency_sample") or {}
    every = sample.get("every", 1)
    other_codes = {
        code: n for code, n in summary["errors_by_code"].items() if code != THROTTLE_CODE
    }
    rows = [
        ("records sent", f"{summary['records_sent']:,}"),
        ("records acknowledged", f"{summary['records_acked']:,}"),
        ("records failed", f"{summary['records_failed']:,}"),
        ("duration", f"{summary['duration_s']:.2f} s"),
        ("throughput", f"{summary['records_per_s']:,.0f} records/s"),
        ("", f"{summary['bytes_per_s'] / 1e6:.2f} MB/s"),
        ("latency p50 / p90 / p99", f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} ms"),
        ("latency max", f"{lat['max']:.1f} ms"),
        ("latency measured on", "every record" if every == 1 else f"1 record in {every:,}"),
        ("retries", f"{summary['retries']:,}"),
        ("throttles (retried)", f"{summary['throttles']:,}"),
    ]
    if other_codes:
        rows.append(("other attempt errors by code", _errors_text(other_codes)))
    if summary["failures_by_code"]:
        rows.append(("record failures by code", _errors_text(summary["failures_by_code"])))
    rows += [
        ("Kinesis records", f"{summary['kinesis_records']:,}"),
        ("PutRecords calls", f"{summary['put_records_calls']:,}"),
    ]
    if summary.get("process_cpu_s") is not None:
        rows.append(
            (
                "CPU: process / load generator",
                f"{summary['process_cpu_s']:.2f} / {summary['generator_cpu_s']:.2f} s",
            )
        )
    if summary.get("records_unresolved"):
        rows.append(("unresolved (gave up)", f"{summary['records_unresolved']:,}"))
    if summary.get("interrupted"):
        rows.append(("interrupted", "yes"))
    for name, value in rows:
        table.add_row(name, value)
    return table
