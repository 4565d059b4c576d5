"""The ``kpl load`` run over the server's engine on virtual time: the pacing, the stop at
the deadline and the summary's counts are exact, whatever the machine's speed."""

from __future__ import annotations

import pytest

from kpl.cli.load_run import LoadOptions, run_load
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
