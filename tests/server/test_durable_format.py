"""The durable storage's on-disk formats: one frame encoder, one decoder, metadata."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import msgpack
import pytest

from server.storage.base import ShardMeta, StoredRecord, StreamMeta
from server.storage.durable import (
    DurableStorage,
    decode_meta,
    encode_frame,
    encode_meta,
    frame_at,
    scan_segment,
)

BIG = 10**50
RECORDS: list[StoredRecord] = [
    (BIG + 1, 1.5, "key", b"data"),
    (BIG + 2, 2.5, "k\u00e9y", b""),
]
#: The frame of RECORDS as the format defines it; a change here breaks every data dir.
GOLDEN = bytes.fromhex(
    "4b525a000000594bd9789294c418000000446c3b15f9926687d2c40534fdb564000000000001cb3ff8"
    "000000000000a36b6579c4046461746194c418000000446c3b15f9926687d2c40534fdb564000000"
    "000002cb4004000000000000a46bc3a979c400"
)


def test_frame_bytes_are_the_documented_layout() -> None:
    frame = encode_frame(RECORDS)
    assert frame == GOLDEN
    assert frame[:2] == b"KR"
    length = int.from_bytes(frame[2:6], "little")
    assert length == len(frame) - 10
    assert int.from_bytes(frame[6:10], "little") == zlib.crc32(frame[10:])


@pytest.mark.parametrize(
    "records",
    [
        RECORDS,
        [(0, 0.0, "", b"")],
        [(10**56 - 1, 1_800_000_000.123456, "p" * 256, bytes(range(256)) * 4)],
        [(BIG + n, 100.0 + n / 7, f"k{n}", bytes([n]) * n) for n in range(1, 200)],
    ],
)
def test_frame_round_trip(records: list[StoredRecord]) -> None:
    frame = encode_frame(records)
    assert frame_at(frame, 0) == (records, len(frame))
    # At an offset inside a larger buffer, as reads and recovery find frames.
    buf = b"xx" + frame + b"yy"
    assert frame_at(buf, 2) == (records, 2 + len(frame))
    assert frame_at(memoryview(buf), 2) == (records, 2 + len(frame))


def test_frame_decoder_refuses_damage_and_order() -> None:
    frame = encode_frame(RECORDS)
    assert frame_at(frame[:-1], 0) is None  # torn
    assert frame_at(b"KQ" + frame[2:], 0) is None  # magic
    flipped = bytearray(frame)
    flipped[-3] ^= 0x01
    assert frame_at(bytes(flipped), 0) is None  # CRC
    assert frame_at(frame, 0, after_seq=BIG + 1) is None  # not above the previous frame
    assert frame_at(frame, 0, after_seq=BIG) is not None


def test_scan_walks_frames_and_steps_over_damage() -> None:
    first = encode_frame(RECORDS[:1])
    second = encode_frame(RECORDS[1:])
    scan = scan_segment(first + b"garbage" + second + second[:5], -1)
    assert scan.records == RECORDS
    assert scan.skipped == [(len(first), len(first) + 7)]
    assert scan.good_end == len(first) + 7 + len(second)


async def test_the_storage_writes_exactly_the_encoders_frames(tmp_path: Path) -> None:
    store = DurableStorage(tmp_path / "data")
    try:
        meta = StreamMeta(
            name="s1", arn="arn", status="ACTIVE", status_since=1.0, created_at=1.0,
            mode="PROVISIONED", retention_hours=24, max_record_size_kib=1024,
            shards=[ShardMeta("shardId-000000000000", 0, 2**128 - 1, BIG, 1.0)],
        )
        store.save_stream(meta)
        store.append("s1", "shardId-000000000000", RECORDS[:1])
        store.append("s1", "shardId-000000000000", RECORDS[1:])
        await asyncio.wait_for(store.wait_durable(), 30)
    finally:
        store.close()
    (segment,) = (tmp_path / "data" / "streams" / "s-s1" / "shardId-000000000000").glob("*.seg")
    assert segment.read_bytes() == encode_frame(RECORDS[:1]) + encode_frame(RECORDS[1:])


def test_metadata_round_trip_with_big_numbers_and_unknown_keys() -> None:
    meta = StreamMeta(
        name="s1", arn="arn", status="ACTIVE", status_since=1.5, created_at=1.0,
        mode="ON_DEMAND", retention_hours=48, max_record_size_kib=1024,
        shards=[
            ShardMeta("shardId-000000000000", 0, 2**128 - 1, 10**55, 1.0,
                      ending_sequence_number=10**55 + 9, closed_at=2.0),
        ],
        next_shard_index=1, tags={"a": "b"}, stream_id="x" * 24,
    )
    assert decode_meta(encode_meta(meta)) == meta
    doc = msgpack.unpackb(encode_meta(meta), raw=False, strict_map_key=False)
    doc["stream"]["from_a_newer_version"] = 1
    newer = msgpack.packb(doc, use_bin_type=True)
    assert decode_meta(newer) == meta
