"""The live view and the summary table render what they are given."""

from __future__ import annotations

import io

from rich.console import Console

from kpl.cli.load_view import LineView, LiveView, summary_table
from kpl.loadgen import THROTTLE_CODE, LoadStats, summarize


def _stats() -> LoadStats:
    stats = LoadStats(start=0.0)
    for i in range(100):
        stats.on_sent(100)
        codes = [THROTTLE_CODE, None] if i % 10 == 0 else ()
        stats.on_acked(100, 0.004, codes, now=0.5)
    return stats


def test_live_view_draws_the_figures_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    view = LiveView(console, "kpl load → s")
    view.start()
    view.update(_stats().snapshot(1.0), "producing")
    view.stop()
    text = out.getvalue()
    assert "kpl load → s" in text
    assert "producing" in text
    assert "records/s" in text
    assert "100" in text  # acked
    assert f"{THROTTLE_CODE} 10" in text


def test_line_view_prints_one_line_per_update() -> None:
    lines: list[str] = []
    LineView(lines.append).update(_stats().snapshot(1.0), "producing")
    assert len(lines) == 1
    assert "producing: acked 100" in lines[0]
    assert "throttles 10" in lines[0]


def test_summary_table_lists_every_figure() -> None:
    summary = summarize(
        _stats(), end=1.0, kinesis_records=2, put_records_calls=1, settings={}, interrupted=True
    )
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(summary_table(summary))
    text = out.getvalue()
    for label in (
        "records sent",
        "records acknowledged",
        "latency p50 / p90 / p99",
        "retries",
        "throttles",
        "Kinesis records",
        "PutRecords calls",
        "interrupted",
    ):
        assert label in text
    assert "100 records/s" in text


def test_the_last_line_gives_the_runs_average_rates() -> None:
    stats = LoadStats(start=0.0)
    stats.on_sent_many(20_000, 2_000_000)
    stats.on_acked_many(19_000, 1_900_000, 0, now=0.95)
    stats.snapshot(1.0)
    stats.on_acked_many(1_000, 100_000, 0, now=1.0)
    lines: list[str] = []
    LineView(lines.append).update(stats.snapshot(1.004, final=True), "done")
    assert "done: acked 20,000 (average 20,000 rec/s, 2.00 MB/s)" in lines[0]
