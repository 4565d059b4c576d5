"""DurableStorage on a temporary directory: recovery, rollover, trim, metadata, failures."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.cli_args import add_server_arguments, config_from_args
from server.core.errors import InternalFailure
from server.core.seqnum import shard_base
from server.storage import durable
from server.storage.base import ShardMeta, Storage, StoredRecord, StreamMeta
from server.storage.durable import DataDirError, DurableStorage, encode_frame
from server.storage.durable import storage as durable_storage
from server.storage.durable.commit import GroupCommit

BASE = shard_base(0, 1_700_000_000)
HUGE_KEY = 2**128 - 1


def make_meta(name: str = "s1", shards: int = 1) -> StreamMeta:
    meta = StreamMeta(
        name=name,
        arn=f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}",
        status="ACTIVE",
        status_since=1.5,
        created_at=1.0,
        mode="PROVISIONED",
        retention_hours=24,
        max_record_size_kib=1024,
        tags={"team": "data"},
        stream_id="abc",
    )
    for index in range(shards):
        meta.shards.append(
            ShardMeta(
                shard_id=f"shardId-{index:012d}",
                starting_hash_key=0,
                ending_hash_key=HUGE_KEY,
                starting_sequence_number=shard_base(index, 1_700_000_000),
                created_at=1.0,
            )
        )
    meta.next_shard_index = shards
    return meta


def recs(first: int, count: int, arrival: float = 100.0, size: int = 20) -> list[StoredRecord]:
    """``count`` records numbered from counter ``first``, one arrival each second."""
    return [
        (BASE + n, arrival + (n - first), f"k{n}", bytes([n % 256]) * size)
        for n in range(first, first + count)
    ]


SHARD = "shardId-000000000000"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def opened(data_dir: Path) -> Iterator[list[DurableStorage]]:
    """Storages a test opened; closed at the end even if the test fails."""
    stores: list[DurableStorage] = []
    yield stores
    for store in stores:
        store.close()


def open_store(data_dir: Path, opened: list[DurableStorage], **kw: Any) -> DurableStorage:
    store = DurableStorage(data_dir, **kw)
    opened.append(store)
    return store


async def fresh(data_dir: Path, opened: list[DurableStorage], **kw: Any) -> DurableStorage:
    store = open_store(data_dir, opened, **kw)
    store.save_stream(make_meta())
    await store.wait_durable()
    return store


def reopen(store: DurableStorage, opened: list[DurableStorage], **kw: Any) -> DurableStorage:
    store.close()
    return open_store(store.data_dir, opened, **kw)


def read_all(store: DurableStorage, shard: str = SHARD) -> list[StoredRecord]:
    return store.read("s1", shard, 0, 100_000, 0)


def segments(data_dir: Path, shard: str = SHARD) -> list[Path]:
    return sorted((data_dir / "streams" / "s-s1" / shard).glob("*.seg"))


# -- round trip, visibility, metadata ------------------------------------------------


async def test_satisfies_protocol_and_round_trips(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened)
    assert isinstance(store, Storage)
    records = recs(1, 10)
    store.append("s1", SHARD, records[:4])
    store.append("s1", SHARD, records[4:])
    await store.wait_durable()
    assert read_all(store) == records
    store = reopen(store, opened)
    (meta,) = store.load_streams()
    assert meta == make_meta()
    assert meta.shards[0].ending_hash_key == HUGE_KEY
    assert read_all(store) == records
    assert store.last_sequence_number("s1", SHARD) == BASE + 10
    assert store.oldest_sequence_number("s1", SHARD) == BASE + 1


async def test_records_are_readable_only_once_durable(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 3))
    assert read_all(store) == []
    assert store.last_sequence_number("s1", SHARD) == BASE + 3
    await store.wait_durable()
    assert len(read_all(store)) == 3


async def test_clean_close_syncs_pending_changes(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 3))
    meta = make_meta()
    meta.tags["extra"] = "1"
    store.save_stream(meta)
    store = reopen(store, opened)
    assert store.load_streams()[0].tags == {"team": "data", "extra": "1"}
    assert len(read_all(store)) == 3


async def test_metadata_replace_is_atomic(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened)
    store.close()
    stream_dir = data_dir / "streams" / "s-s1"
    # A crash mid-save leaves a half-written temp file next to the intact old version.
    (stream_dir / "meta.tmp").write_bytes(b"\x85garbage")
    # A stream created but never saved durably has a directory and no metadata.
    (data_dir / "streams" / "s-ghost" / SHARD).mkdir(parents=True)
    store = open_store(data_dir, opened)
    assert [m.name for m in store.load_streams()] == ["s1"]
    assert not (stream_dir / "meta.tmp").exists()
    assert not (data_dir / "streams" / "s-ghost").exists()
    assert list((data_dir / "trash").iterdir()) == []


async def test_unreadable_metadata_sets_the_stream_aside(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    store = await fresh(data_dir, opened)
    store.close()
    (data_dir / "streams" / "s-s1" / "meta").write_bytes(b"\xc1 not msgpack")
    with caplog.at_level(logging.WARNING, logger="server.storage"):
        store = open_store(data_dir, opened)
    assert store.load_streams() == []
    (aside,) = (data_dir / "quarantine").iterdir()
    assert (aside / "meta").read_bytes() == b"\xc1 not msgpack"
    assert "streams/s-s1" in caplog.text
    assert "unreadable" in caplog.text


async def test_delete_stream_removes_its_files(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened, segment_bytes=200)
    store.append("s1", SHARD, recs(1, 20))
    await store.wait_durable()
    assert len(segments(data_dir)) > 1
    store.delete_stream("s1")
    await store.wait_durable()
    assert list((data_dir / "streams").iterdir()) == []
    assert list((data_dir / "trash").iterdir()) == []
    assert read_all(store) == []
    # The name can be used again, from scratch.
    store.save_stream(make_meta())
    store.append("s1", SHARD, recs(50, 1))
    await store.wait_durable()
    store = reopen(store, opened)
    assert [r[0] for r in read_all(store)] == [BASE + 50]


async def test_shard_dropped_from_metadata_loses_its_directory(
    data_dir: Path, opened: list[Any]
) -> None:
    store = open_store(data_dir, opened)
    store.save_stream(make_meta(shards=2))
    store.append("s1", "shardId-000000000001", recs(1, 2))
    await store.wait_durable()
    store.save_stream(make_meta(shards=1))
    await store.wait_durable()
    assert not (data_dir / "streams" / "s-s1" / "shardId-000000000001").exists()
    assert store.read("s1", "shardId-000000000001", 0, 10, 0) == []


# -- torn tails and corrupt frames ---------------------------------------------------


async def test_torn_tail_is_cut_and_numbers_continue(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 5))
    await store.wait_durable()
    store.close()
    (segment,) = segments(data_dir)
    good_size = segment.stat().st_size
    torn = encode_frame(recs(6, 3))[:-7]  # the crash hit mid-frame
    with segment.open("ab") as f:
        f.write(torn)
    store = open_store(data_dir, opened)
    assert [r[0] for r in read_all(store)] == [BASE + n for n in range(1, 6)]
    assert segment.stat().st_size == good_size
    assert store.last_sequence_number("s1", SHARD) == BASE + 5
    store.append("s1", SHARD, recs(6, 1))
    await store.wait_durable()
    assert len(reopen(store, opened).read("s1", SHARD, 0, 100, 0)) == 6


@pytest.mark.parametrize("tail", [b"\x00" * 4096, b"K", b"KR\x05\x00\x00\x00"])
async def test_garbage_tails_are_cut(data_dir: Path, opened: list[Any], tail: bytes) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 3))
    await store.wait_durable()
    store.close()
    (segment,) = segments(data_dir)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(tail)
    store = open_store(data_dir, opened)
    assert len(read_all(store)) == 3
    assert segment.stat().st_size == size


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


async def test_corrupt_last_frame_is_kept_and_its_numbers_never_reused(
    data_dir: Path, opened: list[Any]
) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 3))
    store.append("s1", SHARD, recs(4, 2))  # one frame per append
    await store.wait_durable()
    store.close()
    (segment,) = segments(data_dir)
    size = segment.stat().st_size
    _flip(segment, size - 3)  # inside the last frame's data
    store = open_store(data_dir, opened)
    assert [r[0] for r in read_all(store)] == [BASE + 1, BASE + 2, BASE + 3]
    assert store.last_sequence_number("s1", SHARD) == BASE + 3
    assert (store.sequence_floor("s1", SHARD) or 0) >= BASE + 5
    assert segment.stat().st_size == size  # the damaged bytes stay for the operator
    assert store.recovery.records_lost == 2
    store.append("s1", SHARD, recs(1_000_000_001, 1))  # goes to a new segment
    await store.wait_durable()
    assert len(read_all(reopen(store, opened))) == 4
    assert len(segments(data_dir)) == 2


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
async def test_corrupt_frame_in_the_middle_is_skipped_not_cut(
    data_dir: Path, opened: list[Any], caplog: pytest.LogCaptureFixture, where: str
) -> None:
    store = await fresh(data_dir, opened)
    records = recs(1, 6)
    for record in records:  # one frame each
        store.append("s1", SHARD, [record])
    await store.wait_durable()
    store.close()
    (segment,) = segments(data_dir)
    size = segment.stat().st_size
    frame = len(encode_frame(records[:1]))  # all frames here have the same size
    third = 2 * frame
    _flip(segment, third + {"payload": frame - 2, "length": 4, "magic": 0}[where])
    with caplog.at_level(logging.WARNING, logger="server.storage"):
        store = open_store(data_dir, opened)
    assert read_all(store) == records[:2] + records[3:]
    assert segment.stat().st_size == size
    assert "unreadable" in caplog.text
    assert SHARD in caplog.text
    # Reads inside and across the damaged region use the index, not the damaged bytes.
    assert store.read("s1", SHARD, BASE + 2, 2, 0) == [records[1], records[3]]
    assert store.last_sequence_number("s1", SHARD) == BASE + 6


async def test_corrupt_frame_in_an_earlier_segment(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened, segment_bytes=300)
    records = recs(1, 30)
    for record in records:
        store.append("s1", SHARD, [record])
    await store.wait_durable()
    store.close()
    files = segments(data_dir)
    assert len(files) >= 3
    in_first = len(durable.scan_segment(files[0].read_bytes(), -1).records)
    _flip(files[0], files[0].stat().st_size - 2)  # the first segment's last frame
    store = open_store(data_dir, opened, segment_bytes=300)
    # Only the damaged frame is lost; the later segments are all kept.
    assert read_all(store) == records[: in_first - 1] + records[in_first:]


# -- rollover, reads across segments, trim -------------------------------------------


async def test_rollover_and_reads_across_segments(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened, segment_bytes=500)
    records = recs(1, 100)
    for start in range(0, 100, 7):
        store.append("s1", SHARD, records[start : start + 7])
    await store.wait_durable()
    files = segments(data_dir)
    assert len(files) > 5
    assert all(f.stat().st_size <= 500 for f in files)
    check_reads(store, records)
    check_reads(reopen(store, opened, segment_bytes=500), records)


def check_reads(s: DurableStorage, records: list[StoredRecord]) -> None:
    assert read_all(s) == records
    # Every start position, with a limit that spans segment boundaries.
    for n in range(1, 101, 9):
        assert s.read("s1", SHARD, BASE + n, 13, 0) == records[n - 1 : n - 1 + 13]
    assert s.read("s1", SHARD, BASE + 101, 10, 0) == []
    assert s.read("s1", SHARD, 0, 5, 0) == records[:5]
    # max_bytes counts data + key (20 + 3 bytes here) and always gives one record.
    assert s.read("s1", SHARD, BASE + 10, 100, 23 * 4) == records[9:13]
    assert s.read("s1", SHARD, BASE + 10, 100, 23 * 4 + 22) == records[9:13]
    assert s.read("s1", SHARD, BASE + 10, 100, 1) == records[9:10]
    # Arrivals are 100.0, 101.0 ...: by timestamp across segments.
    assert s.sequence_number_at("s1", SHARD, 150.0) == BASE + 51
    assert s.sequence_number_at("s1", SHARD, 150.5) == BASE + 52
    assert s.sequence_number_at("s1", SHARD, 0.0) == BASE + 1
    assert s.sequence_number_at("s1", SHARD, 1000.0) is None


async def test_one_large_batch_is_split_across_segments(data_dir: Path, opened: list[Any]) -> None:
    store = await fresh(data_dir, opened, segment_bytes=1000)
    records = recs(1, 40, size=100)
    store.append("s1", SHARD, records)
    await store.wait_durable()
    assert len(segments(data_dir)) >= 4
    assert read_all(reopen(store, opened)) == records


async def test_trim_drops_exactly_and_deletes_whole_segments(
    data_dir: Path, opened: list[Any]
) -> None:
    store = await fresh(data_dir, opened, segment_bytes=500)
    records = recs(1, 100)
    store.append("s1", SHARD, records)
    await store.wait_durable()
    before = segments(data_dir)
    assert store.trim("s1", SHARD, 150.0) == 50  # arrivals 100.0 .. 149.0
    await store.wait_durable()  # the deletions run in a worker thread
    assert store.oldest_sequence_number("s1", SHARD) == BASE + 51
    assert read_all(store) == records[50:]
    assert store.read("s1", SHARD, BASE + 3, 2, 0) == records[50:52]
    assert store.sequence_number_at("s1", SHARD, 120.0) == BASE + 51
    after = segments(data_dir)
    assert before[0] not in after
    assert len(after) < len(before)
    assert store.trim("s1", SHARD, 150.0) == 0
    # Records of a kept segment below the floor come back after a restart until the
    # next trim; the deleted segments do not.
    store = reopen(store, opened, segment_bytes=500)
    oldest = store.oldest_sequence_number("s1", SHARD)
    assert oldest is not None
    assert BASE + 1 < oldest <= BASE + 51


async def test_numbers_continue_after_trimming_everything(
    data_dir: Path, opened: list[Any]
) -> None:
    store = await fresh(data_dir, opened, segment_bytes=300)
    store.append("s1", SHARD, recs(1, 40))
    await store.wait_durable()
    assert store.trim("s1", SHARD, 10_000.0) == 40
    await store.wait_durable()
    assert read_all(store) == []
    assert store.oldest_sequence_number("s1", SHARD) is None
    assert store.last_sequence_number("s1", SHARD) == BASE + 40
    assert len(segments(data_dir)) == 1  # the newest segment carries the high-water mark
    store = reopen(store, opened, segment_bytes=300)
    assert store.last_sequence_number("s1", SHARD) == BASE + 40


async def test_trim_keeps_segments_until_a_later_one_is_durable(
    data_dir: Path, opened: list[Any]
) -> None:
    store = await fresh(data_dir, opened, segment_bytes=300)
    store.append("s1", SHARD, recs(1, 10))
    await store.wait_durable()
    newest_durable = segments(data_dir)[-1]
    store.append("s1", SHARD, recs(11, 10))  # rolls over, not yet durable
    assert segments(data_dir)[-1] != newest_durable
    store.trim("s1", SHARD, 10_000.0)
    await store.wait_durable()  # the deletions are done (and the later segment durable)
    # Deleting the newest durable segment now could lose the shard's high-water mark in a
    # crash (the later ones may never reach the disk); older ones may go.
    assert newest_durable in segments(data_dir)
    assert segments(data_dir)[0] == newest_durable
    store.trim("s1", SHARD, 10_000.0)
    await store.wait_durable()
    assert len(segments(data_dir)) == 1


# -- group commit and failures -------------------------------------------------------


async def test_concurrent_waiters_share_one_sync_pass(
    data_dir: Path, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await fresh(data_dir, opened)
    passes: list[int] = []
    real = GroupCommit.run_job

    def counting(self: GroupCommit, job: Any) -> None:
        passes.append(len(job.data_fds))
        real(self, job)

    monkeypatch.setattr(GroupCommit, "run_job", counting)

    async def put(n: int) -> None:
        store.append("s1", SHARD, recs(n, 1))
        await store.wait_durable()

    await asyncio.gather(*(put(n) for n in range(1, 21)))
    assert passes == [1]
    # A write that arrives while a pass is in flight is covered by the next one.
    first = asyncio.ensure_future(put(21))
    await asyncio.sleep(0)
    await asyncio.gather(first, put(22), put(23))
    assert len(passes) == 3
    assert len(read_all(store)) == 23
    await store.wait_durable()  # nothing new: no pass
    assert len(passes) == 3


async def test_failed_write_is_internal_failure_and_loses_nothing(
    data_dir: Path, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 2))
    await store.wait_durable()
    (segment,) = segments(data_dir)
    size = segment.stat().st_size
    real = durable_storage.write_all

    def disk_full(fd: int, data: Any) -> None:
        os.write(fd, bytes(data)[:5])  # a partial frame reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable_storage, "write_all", disk_full)
    with pytest.raises(InternalFailure):
        store.append("s1", SHARD, recs(3, 1))
    assert segment.stat().st_size == size
    monkeypatch.setattr(durable_storage, "write_all", real)
    store.append("s1", SHARD, recs(4, 1))  # the disk has room again
    await store.wait_durable()
    assert [r[0] for r in read_all(reopen(store, opened))] == [BASE + 1, BASE + 2, BASE + 4]


async def test_failed_fsync_is_never_acknowledged(
    data_dir: Path, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 2))
    await store.wait_durable()

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    store.append("s1", SHARD, recs(3, 1))
    with pytest.raises(InternalFailure):
        await store.wait_durable()
    monkeypatch.undo()
    # After a failed fsync the kernel may have dropped the pages: no later ack either.
    with pytest.raises(InternalFailure):
        await store.wait_durable()
    with pytest.raises(InternalFailure):
        store.append("s1", SHARD, recs(4, 1))
    assert [r[0] for r in read_all(store)] == [BASE + 1, BASE + 2]


# -- the data directory --------------------------------------------------------------


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(DataDirError, match=r"not usable|not a directory"):
        DurableStorage(path)


def test_data_dir_is_locked_against_a_second_server(data_dir: Path, opened: list[Any]) -> None:
    open_store(data_dir, opened)
    with pytest.raises(DataDirError, match="in use"):
        DurableStorage(data_dir)


def test_cli_flags_and_unusable_data_dir_exit(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    config = config_from_args(
        parser.parse_args(["--data-dir", str(tmp_path), "--segment-bytes", "4096"])
    )
    assert (config.data_dir, config.segment_bytes) == (str(tmp_path), 4096)
    assert config_from_args(parser.parse_args([])).data_dir is None
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", "--data-dir", str(blocker / "sub")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "data dir" in lines[0]
    assert "not usable" in lines[0]


# -- the iterator secret --------------------------------------------------------------


def test_iterator_secret_is_made_once_owner_only_and_kept(
    tmp_path: Path, data_dir: Path, opened: list[Any]
) -> None:
    store = open_store(data_dir, opened)
    secret = store.iterator_secret
    assert len(secret) == durable.SECRET_BYTES
    path = data_dir / "iterator-secret"
    assert path.read_bytes() == secret
    assert path.stat().st_mode & 0o777 == 0o600
    assert not (data_dir / "iterator-secret.tmp").exists()
    assert reopen(store, opened).iterator_secret == secret
    assert open_store(tmp_path / "other", opened).iterator_secret != secret


def test_iterator_secret_ignores_a_temp_file_left_by_a_crash(
    data_dir: Path, opened: list[Any]
) -> None:
    data_dir.mkdir()
    (data_dir / "iterator-secret.tmp").write_bytes(b"half")
    secret = open_store(data_dir, opened).iterator_secret
    assert (data_dir / "iterator-secret").read_bytes() == secret
    assert not (data_dir / "iterator-secret.tmp").exists()


def test_corrupt_or_unreadable_iterator_secret_refuses_to_start(
    data_dir: Path, opened: list[Any]
) -> None:
    data_dir.mkdir()
    path = data_dir / "iterator-secret"
    path.write_bytes(b"short")
    with pytest.raises(DataDirError) as info:
        DurableStorage(data_dir)
    assert str(info.value) == (
        f"iterator secret {path} is corrupt (5 bytes, expected 32); delete it to make a "
        "new one (iterators handed out before are then refused)"
    )
    assert path.read_bytes() == b"short"  # left for the operator, not replaced
    path.unlink()
    path.mkdir()  # read_bytes() fails on a directory (chmod 000 would not stop root)
    with pytest.raises(DataDirError, match=r"^iterator secret .* is unreadable: "):
        DurableStorage(data_dir)
    path.rmdir()
    # The failed starts released the LOCK: the directory opens once the file is gone.
    assert len(open_store(data_dir, opened).iterator_secret) == 32


def test_corrupt_iterator_secret_is_one_line_from_the_command(tmp_path: Path) -> None:
    (tmp_path / "iterator-secret").write_bytes(b"x" * 33)
    done = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"python -m server: error: iterator secret {tmp_path / 'iterator-secret'} is "
        "corrupt (33 bytes, expected 32); delete it to make a new one (iterators handed "
        "out before are then refused)"
    ]


async def test_answers_like_memory_storage(data_dir: Path, opened: list[Any]) -> None:
    """Random appends, reads and trims give the same answers as MemoryStorage."""
    import random

    from server.storage.memory import MemoryStorage

    rng = random.Random(7)
    disk = await fresh(data_dir, opened, segment_bytes=700)
    memory = MemoryStorage()
    memory.save_stream(make_meta())
    n = 1
    for _ in range(300):
        op = rng.random()
        if op < 0.4:
            batch = [
                (BASE + n + i, 100.0 + (n + i) // 3, f"k{i}", rng.randbytes(rng.randrange(40)))
                for i in range(rng.randrange(1, 9))
            ]
            n += len(batch) + rng.randrange(3)
            disk.append("s1", SHARD, batch)
            memory.append("s1", SHARD, batch)
            await disk.wait_durable()
        elif op < 0.9:
            start = BASE + rng.randrange(n + 2)
            limit, max_bytes = rng.randrange(1, 30), rng.choice([0, 1, 50, 200])
            assert disk.read("s1", SHARD, start, limit, max_bytes) == memory.read(
                "s1", SHARD, start, limit, max_bytes
            )
            when = 100.0 + rng.randrange(n // 3 + 2)
            assert disk.sequence_number_at("s1", SHARD, when) == memory.sequence_number_at(
                "s1", SHARD, when
            )
        else:
            cutoff = 100.0 + rng.randrange(n // 3 + 1)
            assert disk.trim("s1", SHARD, cutoff) == memory.trim("s1", SHARD, cutoff)
        assert disk.oldest_sequence_number("s1", SHARD) == memory.oldest_sequence_number(
            "s1", SHARD
        )
        assert disk.last_sequence_number("s1", SHARD) == memory.last_sequence_number(
            "s1", SHARD
        )
    assert len(segments(data_dir)) > 3


async def test_out_of_order_or_unknown_appends_are_refused(
    data_dir: Path, opened: list[Any]
) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(5, 2))
    with pytest.raises(InternalFailure):
        store.append("s1", SHARD, recs(6, 1))
    with pytest.raises(InternalFailure):
        store.append("nope", SHARD, recs(9, 1))
    await store.wait_durable()
    assert [r[0] for r in read_all(reopen(store, opened))] == [BASE + 5, BASE + 6]


async def test_a_failed_metadata_replace_leaves_the_old_version(
    data_dir: Path, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await fresh(data_dir, opened)
    changed = make_meta()
    changed.retention_hours = 48
    changed.tags = {"new": "tags"}
    store.save_stream(changed)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(InternalFailure):
        await store.wait_durable()
    monkeypatch.undo()
    store.close()
    # The temp file was written and synced; the rename never happened: the old version.
    assert (data_dir / "streams" / "s-s1" / "meta.tmp").exists()
    (meta,) = open_store(data_dir, opened).load_streams()
    assert meta == make_meta()


async def test_a_cancelled_waiter_does_not_cancel_the_shared_pass(
    data_dir: Path, opened: list[Any]
) -> None:
    store = await fresh(data_dir, opened)
    store.append("s1", SHARD, recs(1, 1))
    first = asyncio.ensure_future(store.wait_durable())
    await asyncio.sleep(0)  # the pass has started
    store.append("s1", SHARD, recs(2, 1))
    second = asyncio.ensure_future(store.wait_durable())
    first.cancel()
    await second
    assert first.cancelled()
    assert [r[0] for r in read_all(store)] == [BASE + 1, BASE + 2]
