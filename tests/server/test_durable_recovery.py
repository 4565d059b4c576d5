"""Damaged data directories: acknowledged numbers never reissued, damage reported, not deleted.

Each test writes acknowledged records, damages the files the way an unlucky operator or
disk would, restarts, and checks what is read, what is logged and counted, what stays on
disk, and that the shard's next numbers are above every number acknowledged before.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.__main__ import main as server_main
from server.core.engine import Engine
from server.core.seqnum import INDEX_UNIT, sequence_head
from server.core.streams import EngineConfig
from server.storage.durable import DurableStorage, check_data_dir, encode_frame
from server.storage.durable.recovery import LOST_MARK_JUMP, is_torn
from server.web.runner import StreamServer
from tests.server.test_durable import (
    BASE,
    SHARD,
    fresh,
    make_meta,
    open_store,
    read_all,
    recs,
    segments,
)

SHARD_DIR = Path("streams") / "s-s1" / SHARD


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def opened() -> Iterator[list[DurableStorage]]:
    """Storages a test opened; closed at the end even if the test fails."""
    stores: list[DurableStorage] = []
    yield stores
    for store in stores:
        store.close()


async def written(
    data_dir: Path, opened: list[Any], frames: int = 4, per_frame: int = 5, **kw: Any
) -> int:
    """Acknowledged records in ``frames`` appends; the highest counter acknowledged."""
    store = await fresh(data_dir, opened, **kw)
    for k in range(frames):
        store.append("s1", SHARD, recs(1 + k * per_frame, per_frame))
        await store.wait_durable()
    store.close()
    return frames * per_frame


def restart(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture, **kw: Any
) -> DurableStorage:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="server.storage"):
        return open_store(data_dir, opened, **kw)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def assert_never_reissued(store: DurableStorage, top: int) -> None:
    floor = store.sequence_floor("s1", SHARD)
    assert floor is not None
    assert floor >= BASE + top


def files_of(data_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}


def flip4(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(offset, offset + 4):
        raw[i] ^= 0xA5
    path.write_bytes(bytes(raw))


async def test_flipped_bytes_near_the_end_are_reported_kept_and_never_renumbered(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    top = await written(data_dir, opened)
    (segment,) = segments(data_dir)
    size = segment.stat().st_size
    flip4(segment, size - 50)
    store = restart(data_dir, opened, caplog)
    assert [r[0] for r in read_all(store)] == [BASE + n for n in range(1, 16)]
    (line,) = warnings(caplog)
    frame = len(encode_frame(recs(16, 5)))
    assert f"{SHARD}/{segment.name} bytes {size - frame}-{size}" in line
    assert "5 records lost" in line
    assert "after sequence number" in line
    assert store.recovery.records_lost == 5
    assert segment.stat().st_size == size  # kept for the operator
    assert_never_reissued(store, top)
    # Appends go to a new segment; the damage is still found on the next start.
    store.append("s1", SHARD, recs(top + 1_000_000_001, 1))
    await store.wait_durable()
    store.close()
    store = restart(data_dir, opened, caplog)
    assert len(read_all(store)) == 16
    assert len(warnings(caplog)) == 1


async def test_a_truncated_last_segment_is_cut_but_its_numbers_stay_taken(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    top = await written(data_dir, opened)
    (segment,) = segments(data_dir)
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - 30)  # mid-frame: indistinguishable from an interrupted write
    store = restart(data_dir, opened, caplog)
    assert len(read_all(store)) == 15
    assert warnings(caplog) == []
    assert "interrupted write" in caplog.text
    assert_never_reissued(store, top)


async def test_a_truncated_earlier_segment_is_damage(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    top = await written(data_dir, opened, frames=12, per_frame=2, segment_bytes=300)
    files = segments(data_dir)
    assert len(files) >= 3
    size = files[0].stat().st_size
    with files[0].open("r+b") as f:
        f.truncate(size - 10)
    store = restart(data_dir, opened, caplog, segment_bytes=300)
    (line,) = warnings(caplog)
    assert files[0].name in line
    assert f"bytes {size}" not in line
    assert "records lost" in line
    assert len(read_all(store)) == top - 2
    assert_never_reissued(store, top)


async def test_a_deleted_last_segment_is_reported_and_never_renumbered(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    top = await written(data_dir, opened, frames=12, per_frame=2, segment_bytes=300)
    files = segments(data_dir)
    files[-1].unlink()
    store = restart(data_dir, opened, caplog, segment_bytes=300)
    (line,) = warnings(caplog)
    assert f"segments {len(files)} to {len(files)}" in line
    assert "missing" in line
    assert_never_reissued(store, top)
    # The next segment takes a number above the lost one.
    store.append("s1", SHARD, recs(top + 1_000_000_001, 1))
    await store.wait_durable()
    assert segments(data_dir)[-1].name == f"{len(files) + 1:020d}.seg"


async def test_a_segment_missing_in_the_middle_is_reported(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    top = await written(data_dir, opened, frames=12, per_frame=2, segment_bytes=300)
    files = segments(data_dir)
    files[1].unlink()
    store = restart(data_dir, opened, caplog, segment_bytes=300)
    (line,) = warnings(caplog)
    assert "segments 2 to 2 are missing" in line
    assert [r[0] for r in read_all(store)][-1] == BASE + top


async def test_every_segment_deleted(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    top = await written(data_dir, opened)
    for segment in segments(data_dir):
        segment.unlink()
    store = restart(data_dir, opened, caplog)
    assert read_all(store) == []
    assert any("missing" in line for line in warnings(caplog))
    assert_never_reissued(store, top)


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
async def test_a_lost_mark_makes_numbering_jump(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    top = await written(data_dir, opened)
    mark = data_dir / SHARD_DIR / "hwm"
    if damage == "deleted":
        mark.unlink()
    else:
        mark.write_bytes(b"\0" * len(mark.read_bytes()))
    store = restart(data_dir, opened, caplog)
    (line,) = warnings(caplog)
    assert "high-water mark" in line
    assert (store.sequence_floor("s1", SHARD) or 0) >= BASE + top + LOST_MARK_JUMP
    store.close()
    # Rewritten: the next start finds nothing wrong.
    restart(data_dir, opened, caplog)
    assert warnings(caplog) == []


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "another stream's"])
async def test_bad_metadata_sets_the_stream_aside_and_the_others_serve(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store = open_store(data_dir, opened)
    store.save_stream(make_meta("s1"))
    store.save_stream(make_meta("s2"))
    store.append("s1", SHARD, recs(1, 3))
    store.append("s2", SHARD, recs(1, 3))
    await store.wait_durable()
    store.close()
    meta = data_dir / "streams" / "s-s1" / "meta"
    if damage == "deleted":
        meta.unlink()
    elif damage == "corrupt":
        meta.write_bytes(meta.read_bytes()[:-9])
    else:
        meta.write_bytes((data_dir / "streams" / "s-s2" / "meta").read_bytes())
    store = restart(data_dir, opened, caplog)
    assert [m.name for m in store.load_streams()] == ["s2"]
    assert len(store.read("s2", SHARD, 0, 100, 0)) == 3
    (line,) = warnings(caplog)
    assert "streams/s-s1" in line
    assert "set aside" in line
    (aside,) = (data_dir / "quarantine").iterdir()
    assert len(list((aside / SHARD).glob("*.seg"))) == 1  # every file intact
    assert store.recovery.quarantined == ["streams/s-s1"]


def test_torn_versus_damaged_bytes() -> None:
    frame = encode_frame(recs(1, 3))
    good = encode_frame(recs(1, 1))
    flipped = bytearray(frame)
    flipped[-10] ^= 0xFF
    assert is_torn(good + frame[:-5], len(good))  # cut short
    assert is_torn(good + frame[:5], len(good))  # not even a whole header
    assert is_torn(good + b"\0" * 5000, len(good))  # never written
    assert is_torn(good + frame + b"\0" * 8192, len(good))  # whole pages never written
    assert not is_torn(good + bytes(flipped), len(good))  # complete but corrupt
    assert not is_torn(good + b"garbage" * 10, len(good))
    assert not is_torn(good + bytes(flipped) + frame[:-5], len(good))


async def test_check_reports_without_changing_anything(
    data_dir: Path, opened: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    await written(data_dir, opened)
    assert server_main(["--data-dir", str(data_dir), "--check"]) == 0
    assert "1 streams, 1 shards, 1 readable segments, 20 records: no damage" in (
        capsys.readouterr().out
    )
    (segment,) = segments(data_dir)
    flip4(segment, segment.stat().st_size - 50)
    (data_dir / SHARD_DIR / "hwm").unlink()
    before = files_of(data_dir)
    assert server_main(["--data-dir", str(data_dir), "--check"]) == 1
    out = capsys.readouterr().out
    assert "5 records lost" in out
    assert "high-water mark is missing" in out
    assert "2 problems" in out
    assert files_of(data_dir) == before
    report, _ = check_data_dir(data_dir)
    assert report.records_lost == 5


def test_check_refuses_a_directory_in_use(data_dir: Path, opened: list[Any]) -> None:
    open_store(data_dir, opened)
    done = subprocess.run(
        [sys.executable, "-m", "server", "--data-dir", str(data_dir), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 2
    assert "in use" in done.stderr


async def test_the_engine_numbers_on_above_lost_records(
    data_dir: Path, opened: list[Any]
) -> None:
    store = await fresh(data_dir, opened, segment_bytes=300)
    # Numbers in the engine's layout: the shard's head plus a sequence index per record.
    head = sequence_head(1, 0)
    for k in range(1, 25):
        store.append("s1", SHARD, [(head + k * INDEX_UNIT, 100.0 + k, "k", b"x" * 20)])
        await store.wait_durable()
    store.close()
    segments(data_dir)[-1].unlink()
    store = open_store(data_dir, opened, segment_bytes=300)
    last = store.last_sequence_number("s1", SHARD)
    assert last is not None
    assert last < head + 24 * INDEX_UNIT  # the records of the lost segment are gone
    engine = Engine(EngineConfig(), store, random.Random(1))
    shard = engine.streams.by_name["s1"].shards[SHARD]
    assert shard.next_seq > head + 24 * INDEX_UNIT  # never a number acknowledged before


async def test_the_metrics_count_what_recovery_found(data_dir: Path, opened: list[Any]) -> None:
    await written(data_dir, opened)
    (segment,) = segments(data_dir)
    flip4(segment, segment.stat().st_size - 50)
    async with StreamServer(port=0, data_dir=data_dir, metrics=True) as server:
        assert server.metrics is not None
        text = server.metrics.exposition().decode()
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("server_storage_recovery")
    }
    assert found == {
        "server_storage_recovery_damage_found": 1.0,
        "server_storage_recovery_records_lost": 5.0,
        "server_storage_recovery_streams_quarantined": 0.0,
    }
