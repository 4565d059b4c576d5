"""The ``kpl load`` run over the server's engine on virtual time: the pacing, the stop at
the deadline and the summary's counts are exact, whatever the machine's speed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kpl.cli.load_run import LoadOptions, run_load
from kpl.loadgen import MAX_TICK_S
from tests.support import EngineKinesis, virtual_time


@pytest.mark.parametrize(("duration_s", "rate"), [(1.0, 200.0), (2.5, 40.0)])
@virtual_time
async def test_a_paced_run_puts_what_the_schedule_grants_by_the_deadline(
    duration_s: float, rate: float
) -> None:
    stream = EngineKinesis(stream_name="paced", shards=2)
    opts = LoadOptions(stream="paced", duration_s=duration_s, rate=rate, seed=1)
    summary, _ = await run_load(opts, transport=stream.transport())
    # Record i is due at i / rate; the deadline stops the run before the one due at it.
    assert summary["records_sent"] == round(duration_s * rate)
    assert summary["records_acked"] == summary["records_sent"]
    assert (summary["records_failed"], summary["records_unresolved"]) == (0, 0)
    assert len(stream.delivered()) == summary["records_sent"]
    assert summary["interrupted"] is False


@virtual_time
async def test_a_counted_run_creates_the_stream_and_puts_every_record() -> None:
    stream = EngineKinesis(stream_name="other", shards=1)
    opts = LoadOptions(stream="counted", shards=3, records=500, seed=2)
    summary, _ = await run_load(opts, transport=stream.transport())
    assert summary["settings"]["shards"] == 3
    assert (summary["records_sent"], summary["records_acked"]) == (500, 500)
    assert 0 < summary["put_records_calls"] <= summary["kinesis_records"] <= 500


@virtual_time
async def test_a_paced_run_wakes_once_a_tick_not_once_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kpl import Producer

    loop = asyncio.get_running_loop()
    put_times: list[float] = []
    real_put = Producer.put

    async def put(self: Producer, data: bytes, partition_key: str) -> Any:
        put_times.append(loop.time())
        return await real_put(self, data, partition_key)

    monkeypatch.setattr(Producer, "put", put)
    stream = EngineKinesis(stream_name="ticks", shards=2)
    opts = LoadOptions(stream="ticks", duration_s=1.0, rate=5000.0, seed=3)
    summary, _ = await run_load(opts, transport=stream.transport())
    assert summary["records_sent"] == len(put_times) == 5000
    # 5,000 records in ticks of 5 ms: about 200 moments of putting, never 5,000.
    assert 150 <= len(set(put_times)) <= 1 / MAX_TICK_S + 2
    assert summary["records_acked"] == 5000
    assert summary["generator_cpu_s"] <= summary["process_cpu_s"]


@virtual_time
async def test_above_the_sampling_floor_latency_comes_from_a_uniform_sample() -> None:
    stream = EngineKinesis(stream_name="sampled", shards=4)
    opts = LoadOptions(
        stream="sampled", duration_s=0.5, rate=30_000.0, seed=4, exact_latency=True
    )
    summary, _ = await run_load(opts, transport=stream.transport())
    acked = summary["records_acked"]
    assert acked == 15_000
    sample = summary["latency_sample"]
    assert (sample["kind"], sample["every"]) == ("uniform sample", 3)
    assert sample["records"] == acked // 3
    for p in ("p50", "p90", "p99"):
        exact = summary["latency_exact_ms"][p]
        assert exact > 0
        assert summary["latency_ms"][p] == pytest.approx(exact, rel=0.05)


@virtual_time
async def test_below_the_floor_every_record_is_measured() -> None:
    stream = EngineKinesis(stream_name="all", shards=1)
    opts = LoadOptions(stream="all", records=700, seed=5, rate=2000.0)
    summary, _ = await run_load(opts, transport=stream.transport())
    assert summary["latency_sample"] == {"kind": "all records", "every": 1, "records": 700}
    assert summary["stream_capacity"]["shards"] == 1

