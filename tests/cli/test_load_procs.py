"""``kpl load --processes N``: the share of each process, the combined view, one summary."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kpl.cli import cli
from kpl.cli.load_procs import combine_snapshots, shares
from kpl.loadgen import THROTTLE_CODE, Snapshot


@pytest.mark.parametrize(
    ("total", "n", "parts"), [(10, 2, [5, 5]), (11, 3, [4, 4, 3]), (1, 2, [1, 0])]
)
def test_shares_differ_by_at_most_one(total: int, n: int, parts: list[int]) -> None:
    assert shares(total, n) == parts


def _snap(acked: int, rate: float, p99: float, errors: dict[str, int]) -> Snapshot:
    return Snapshot(
        elapsed_s=acked / 1000, records_sent=acked + 10, records_acked=acked, records_failed=1,
        in_flight=9, records_per_s=rate, bytes_per_s=rate * 100, retries=2, throttles=2,
        p50_ms=p99 / 2, p99_ms=p99, errors_by_code=errors,
    )  # fmt: skip


def test_combined_snapshot_adds_counts_and_rates_and_keeps_the_worst_latency() -> None:
    combined = combine_snapshots([
        _snap(1000, 500.0, 20.0, {THROTTLE_CODE: 2}),
        _snap(3000, 700.0, 30.0, {THROTTLE_CODE: 1, "InternalFailure": 1}),
    ])  # fmt: skip
    assert (combined.records_acked, combined.records_sent, combined.in_flight) == (4000, 4020, 18)
    assert combined.records_per_s == 1200.0
    assert combined.bytes_per_s == 120_000.0
    assert (combined.p50_ms, combined.p99_ms, combined.elapsed_s) == (15.0, 30.0, 3.0)
    assert combined.errors_by_code == {THROTTLE_CODE: 3, "InternalFailure": 1}


def test_two_processes_make_one_run() -> None:
    result = CliRunner().invoke(
        cli,
        ["load", "--records", "3001", "--processes", "2", "--shards", "2", "--json",
         "--seed", "1"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["records_sent"], summary["records_acked"]) == (3001, 3001)
    assert (summary["records_failed"], summary["records_unresolved"]) == (0, 0)
    assert summary["settings"]["processes"] == 2
    assert summary["latency_sample"]["records"] == 3001
    assert 0 < summary["generator_cpu_s"] < summary["process_cpu_s"]
    assert 0 < summary["put_records_calls"] <= summary["kinesis_records"] <= 3001


def test_metrics_port_is_one_producers_so_not_with_processes() -> None:
    result = CliRunner().invoke(
        cli, ["load", "--records", "10", "--processes", "2", "--metrics-port", "0"]
    )
    assert result.exit_code == 2
    assert "--metrics-port serves one producer" in result.stderr
