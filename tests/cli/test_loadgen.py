"""The load generator's pure pieces, driven with a fake clock."""

from __future__ import annotations

import math
import random

import pytest

from kpl.histogram import LatencyHistogram
from kpl.loadgen import (
    LATENCY_SAMPLES_PER_S,
    THROTTLE_CODE,
    LoadStats,
    Pacer,
    RecordSource,
    merge_stats,
    parse_record_size,
    sample_every,
    summarize,
    timeline_rows,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100", (100, 100)), ("10-2000", (10, 2000)), (" 5-5 ", (5, 5)), ("1", (1, 1))],
)
def test_record_size_parses(text: str, expected: tuple[int, int]) -> None:
    assert parse_record_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "abc", "10-", "-10", "20-10", "1-2-3", "1.5"])
def test_record_size_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="record size"):
        parse_record_size(text)


def test_pacer_without_rate_grants_everything() -> None:
    pacer = Pacer(None, start=0.0)
    assert pacer.take(0.0, 1000) == 1000
    assert pacer.next_due() is None
    assert pacer.taken == 1000


def test_pacer_follows_the_schedule() -> None:
    pacer = Pacer(100.0, start=10.0)
    # At the start only record 0 is due.
    assert pacer.take(10.0, 50) == 1
    assert pacer.take(10.0, 50) == 0
    assert pacer.next_due() == pytest.approx(10.01)
    # 0.1 s later records 1..10 are due.
    assert pacer.take(10.1, 50) == 10
    assert pacer.take(10.1, 50) == 0
    # Asking for fewer than due leaves the rest for later.
    assert pacer.take(10.5, 5) == 5
    assert pacer.take(10.5, 100) == 35
    assert pacer.taken == 51


def test_pacer_rate_over_a_long_run_is_exact() -> None:
    pacer = Pacer(250.0, start=0.0)
    now = 0.0
    for _ in range(1000):
        pacer.take(now, 7)
        now += 0.01
    # 9.99 s elapsed at 250/s: floor(9.99*250)+1 records due.
    assert pacer.taken == 2498


def test_pacer_grants_a_record_at_the_moment_next_due_names() -> None:
    # Far from zero, (next_due - start) * rate floors one short: 0.00999999999476131 * 200.
    pacer = Pacer(200.0, start=100_000.0)
    assert pacer.take(100_000.0, 64) == 1
    for _ in range(1000):
        due = pacer.next_due()
        assert due is not None
        assert pacer.take(due, 64) == 1


def test_pacer_slips_instead_of_bursting_after_a_stall() -> None:
    pacer = Pacer(1000.0, start=0.0, max_lag_s=0.5)
    assert pacer.take(0.0, 10) == 1
    # Stalled 10 s (backpressure): at most 0.5 s worth comes at once.
    assert pacer.take(10.0, 100_000) == 500
    assert pacer.take(10.0, 100_000) == 0
    # And the schedule continues from there at the rate.
    assert pacer.take(10.1, 100_000) == 100


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_pacer_rejects_bad_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Pacer(rate, start=0.0)


def test_record_source_sizes_and_keys() -> None:
    source = RecordSource(random.Random(7), size_min=10, size_max=20, keys=5)
    sizes = set()
    keys = set()
    for _ in range(2000):
        data, key = source.next()
        assert 10 <= len(data) <= 20
        assert data.isalnum()
        sizes.add(len(data))
        keys.add(key)
    assert sizes == set(range(10, 21))
    assert keys == set(source.keys)
    assert len(keys) == 5


def test_record_source_is_reproducible_with_a_seed() -> None:
    a = RecordSource(random.Random(1), size_min=1, size_max=100, keys=50)
    b = RecordSource(random.Random(1), size_min=1, size_max=100, keys=50)
    assert [a.next() for _ in range(100)] == [b.next() for _ in range(100)]


def test_record_source_fixed_size() -> None:
    source = RecordSource(random.Random(0), size_min=64, size_max=64, keys=1)
    assert {len(source.next()[0]) for _ in range(100)} == {64}
    assert source.keys == ["key-0"]


@pytest.mark.parametrize(("lo", "hi", "keys"), [(0, 1, 1), (5, 4, 1), (1, 1, 0)])
def test_record_source_rejects_bad_settings(lo: int, hi: int, keys: int) -> None:
    with pytest.raises(ValueError, match=r"record size|keys"):
        RecordSource(random.Random(0), size_min=lo, size_max=hi, keys=keys)


def test_histogram_percentiles_within_one_percent() -> None:
    hist = LatencyHistogram()
    samples = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1000 ms
    random.Random(3).shuffle(samples)
    for s in samples:
        hist.add(s)
    assert hist.count == 1000
    assert hist.maximum == 1.0
    for p, exact in [(50, 0.5), (90, 0.9), (99, 0.99), (100, 1.0)]:
        got = hist.percentile(p)
        assert exact <= got <= exact * 1.0101, (p, got)
    assert hist.mean == pytest.approx(0.5005)


def test_histogram_empty_and_bad_percentile() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(99) == 0.0
    assert hist.mean == 0.0
    with pytest.raises(ValueError, match="percentile"):
        hist.percentile(101)


def test_histogram_merge() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for _ in range(99):
        a.add(0.001)
    b.add(2.0)
    a.merge(b)
    assert a.count == 100
    assert a.maximum == 2.0
    assert a.percentile(99) <= 0.00102
    assert a.percentile(100) == 2.0


def test_stats_count_outcomes_retries_and_errors() -> None:
    stats = LoadStats(start=100.0)
    for _ in range(4):
        stats.on_sent(10)
    assert stats.in_flight == 4
    stats.on_acked(10, 0.005, [None], now=100.2)
    stats.on_acked(10, 0.050, [THROTTLE_CODE, THROTTLE_CODE, None], now=100.4)
    stats.on_failed("ValidationException", ["ValidationException"], now=101.5)
    assert stats.in_flight == 1
    assert stats.records_acked == 2
    assert stats.bytes_acked == 20
    assert stats.records_failed == 1
    assert stats.retries == 2
    assert stats.throttles == 2
    assert stats.errors_by_code == {THROTTLE_CODE: 2, "ValidationException": 1}
    assert stats.failures_by_code == {"ValidationException": 1}
    assert [(iv.records, iv.failed) for iv in stats.timeline] == [(2, 0), (0, 1)]

    summary = summarize(
        stats,
        end=102.0,
        kinesis_records=1,
        put_records_calls=1,
        settings={"records": 4},
    )
    assert summary["records_sent"] == 4
    assert summary["records_acked"] == 2
    assert summary["records_failed"] == 1
    assert summary["records_unresolved"] == 1
    assert summary["duration_s"] == 2.0
    assert summary["records_per_s"] == 1.0
    assert summary["bytes_per_s"] == 10.0
    assert summary["latency_ms"]["max"] == 50.0
    assert 5.0 <= summary["latency_ms"]["p50"] <= 5.06
    assert summary["retries"] == 2
    assert summary["settings"] == {"records": 4}


def test_snapshot_rates_cover_the_window() -> None:
    stats = LoadStats(start=0.0)
    for _ in range(30):
        stats.on_sent(100)
        stats.on_acked(100, 0.002, [None], now=0.1)
    first = stats.snapshot(0.5)
    assert first.records_per_s == pytest.approx(60.0)
    assert first.bytes_per_s == pytest.approx(6000.0)
    assert first.in_flight == 0
    assert 2.0 <= first.p99_ms <= 2.03
    # Nothing acked in the next window: rate drops to zero, percentiles fall back to the run.
    second = stats.snapshot(1.0)
    assert second.records_per_s == 0.0
    assert 2.0 <= second.p50_ms <= 2.03
    assert second.elapsed_s == 1.0


def test_timeline_coarsens_on_long_runs() -> None:
    stats = LoadStats(start=0.0, interval_s=1.0, max_intervals=4)
    for t in range(10):
        stats.on_sent(1)
        stats.on_acked(1, 0.001, [None], now=t + 0.5)
    assert len(stats.timeline) <= 4
    assert stats.interval_s == 4.0
    assert sum(iv.records for iv in stats.timeline) == 10
    rows = timeline_rows(stats)
    assert [r["t_s"] for r in rows] == [2.0, 6.0, 10.0]
    assert rows[0]["records_per_s"] == 1.0
    # Cut at the run's end (10 s), the last interval covers 2 s, not 4.
    rows = timeline_rows(stats, end=10.0)
    assert [r["t_s"] for r in rows] == [2.0, 6.0, 9.0]
    assert rows[-1]["records_per_s"] == 1.0
    # A sliver of a last interval (0.5 s of 4) joins the one before it.
    rows = timeline_rows(stats, end=8.5)
    assert [r["t_s"] for r in rows] == [2.0, 6.25]
    assert rows[-1]["records_per_s"] == pytest.approx(6 / 4.5)


# ----------------------------------------------------------------------------- ticks


@pytest.mark.parametrize(
    ("rate", "tick"), [(None, 0.0), (100.0, 0.005), (10_000.0, 0.0032), (1e6, 0.001)]
)
def test_pacer_tick_adapts_to_the_rate_within_bounds(rate: float | None, tick: float) -> None:
    assert Pacer(rate, start=0.0).tick_s == pytest.approx(tick)


def test_pacer_ticks_grant_everything_due_since_the_last_one() -> None:
    pacer = Pacer(10_000.0, start=0.0)
    now, grants = 0.0, []
    while now < 1.0:
        grants.append(pacer.take(now, 1_000_000))
        now += pacer.tick_s
    # 10,000 records in ~313 wake-ups, never one per record, none skipped.
    assert len(grants) == math.ceil(1.0 / pacer.tick_s)
    assert pacer.take_before(1.0, 1_000_000) + sum(grants) == 10_000
    assert max(grants) <= 33


def test_take_before_leaves_out_the_record_due_at_the_deadline() -> None:
    pacer = Pacer(100.0, start=5.0)
    assert pacer.take_before(5.0, 10) == 0
    assert pacer.take_before(5.1, 1000) == 10  # records 0..9; record 10 is due at 5.1
    assert pacer.take(5.1, 1000) == 1
    assert Pacer(None, start=0.0).take_before(1.0, 7) == 7


def test_pacer_ticks_slip_rather_than_burst_after_a_stall() -> None:
    pacer = Pacer(10_000.0, start=0.0, max_lag_s=0.1)
    assert pacer.take(0.0, 10**6) == 1
    assert pacer.take(5.0, 10**6) == 1000  # 0.1 s worth, not 5 s
    assert pacer.take(5.0 + pacer.tick_s, 10**6) == 32


# ----------------------------------------------------------------------------- records


def test_record_source_take_walks_the_same_sequence_as_next() -> None:
    a = RecordSource(random.Random(4), size_min=5, size_max=50, keys=30)
    b = RecordSource(random.Random(4), size_min=5, size_max=50, keys=30)
    datas, keys, sizes = a.take(10_000)  # wraps around the payload table
    assert list(zip(datas, keys, strict=True)) == [b.next() for _ in range(10_000)]
    assert sizes == [len(d) for d in datas]
    more = a.take(3)
    assert list(zip(more[0], more[1], strict=True)) == [b.next() for _ in range(3)]


def test_record_source_pairs_do_not_repeat_with_the_payload_table() -> None:
    source = RecordSource(random.Random(2), size_min=100, size_max=100, keys=1000,
                          table_bytes=100 * 16)  # fmt: skip
    datas, keys, _ = source.take(16 * 9000)
    # 16 payloads: the same payload comes back every 16 records, with other keys.
    assert len({keys[i] for i in range(0, len(keys), 16)}) > 900
    assert len(set(keys)) == 1000
    assert len(set(datas)) == 16


def test_record_source_tables_stay_small_for_large_records() -> None:
    source = RecordSource(random.Random(0), size_min=1 << 20, size_max=1 << 20, keys=1)
    datas, _, sizes = source.take(40)
    assert sizes == [1 << 20] * 40
    assert len({id(d) for d in datas}) == 16  # the table's floor, not one per record


# ----------------------------------------------------------------------------- bulk stats


@pytest.mark.parametrize(
    ("rate", "every"), [(1.0, 1), (10_000.0, 1), (19_999.0, 1), (20_000.0, 2), (95_000.0, 9)]
)
def test_latency_sample_keeps_at_least_ten_thousand_a_second(rate: float, every: int) -> None:
    assert sample_every(rate) == every
    assert rate / every >= min(rate, LATENCY_SAMPLES_PER_S)


def test_bulk_counts_and_sampled_latencies() -> None:
    stats = LoadStats(start=0.0)
    stats.on_sent_many(100, 10_000)
    stats.on_acked_many(60, 6_000, 2, now=0.4)
    stats.on_attempts([THROTTLE_CODE, THROTTLE_CODE, None])
    stats.on_latency(0.010, now=0.4)
    stats.on_acked_many(40, 4_000, 0, now=1.2)
    stats.on_latency(0.020, now=1.2)
    stats.latency_every = 50
    assert (stats.records_acked, stats.bytes_acked, stats.in_flight) == (100, 10_000, 0)
    assert (stats.retries, stats.throttles) == (2, 2)
    assert [iv.records for iv in stats.timeline] == [60, 40]
    summary = summarize(stats, end=2.0, kinesis_records=1, put_records_calls=1, settings={})
    assert summary["latency_sample"] == {"kind": "uniform sample", "every": 50, "records": 2}
    assert 20.0 <= summary["latency_ms"]["max"] <= 20.0


def test_final_snapshot_rate_is_the_run_average() -> None:
    stats = LoadStats(start=0.0)
    stats.on_sent_many(20_000, 0)
    stats.on_acked_many(19_000, 0, 0, now=0.95)
    stats.snapshot(1.0)
    stats.on_acked_many(1_000, 0, 0, now=1.004)
    # A sliver of 5 ms after the last refresh: its own rate would read 200,000/s.
    final = stats.snapshot(1.005, final=True)
    assert final.records_per_s == pytest.approx(20_000 / 1.004)


def test_merge_stats_makes_one_run_of_several_processes() -> None:
    a, b = LoadStats(start=10.0), LoadStats(start=10.3)
    for stats, code in ((a, THROTTLE_CODE), (b, "InternalFailure")):
        stats.on_sent_many(3, 300)
        stats.on_acked_many(2, 200, 1, now=stats.start + 0.5)
        stats.on_attempts([code, None])
        stats.on_latency(0.001 if stats is a else 0.002, now=stats.start + 0.5)
        stats.on_failed(code, [code], now=stats.start + 1.5)
    merged = merge_stats([a, b])
    assert merged.start == 10.0
    assert (merged.records_sent, merged.records_acked, merged.records_failed) == (6, 4, 2)
    assert merged.errors_by_code == {THROTTLE_CODE: 2, "InternalFailure": 2}
    assert merged.failures_by_code == {THROTTLE_CODE: 1, "InternalFailure": 1}
    assert merged.last_outcome == pytest.approx(11.8)
    assert [iv.records for iv in merged.timeline] == [4, 0]
    assert [iv.failed for iv in merged.timeline] == [0, 2]
    assert merged.latency.count == 2
    assert merged.latency.maximum == 0.002
    with pytest.raises(ValueError, match="nothing"):
        merge_stats([])
