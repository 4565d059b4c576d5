"""The sans-IO reading core: pacing on a fake clock, positions, skips and range filters."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from hashlib import md5
from pathlib import Path
from typing import Any

import pytest

from kpl.consumer.core.lineage import ShardInfo
from kpl.consumer.core.reading import (
    CBOR_FROM_RECORD_SIZE,
    PROBE_RECORDS,
    ReadPacer,
    ShardCursor,
    StartingPosition,
    starting_position,
)
from kpl.consumer.records import UserRecord
from kpl.protocol.aggregation import MAGIC, SubRecord, encode
from kpl.protocol.hashing import MAX_HASH_KEY, partition_key_hash
from kpl.protocol.limits import MIB

HALF = 2**127


def _pacer(idle: float = 1.0) -> ReadPacer:
    return ReadPacer(idle_time_between_reads=idle, rng=random.Random(7))


# ------------------------------------------------------------------ pacing


def test_behind_reads_again_at_once_within_five_calls_a_second() -> None:
    pacer = _pacer()
    assert pacer.delay(0.0) == 0.0
    pacer.on_call(0.0)
    # The answer came 50 ms later, still behind: the next call waits only for the spacing.
    assert pacer.on_answer(0.05, byte_count=1000, millis_behind_latest=5000) == pytest.approx(0.2)
    pacer.on_call(0.2)
    # A slow answer (300 ms) means the spacing has passed: read at once.
    assert pacer.on_answer(0.5, byte_count=1000, millis_behind_latest=1) == pytest.approx(0.5)
    assert pacer.delay(0.5) == 0.0


def test_caught_up_waits_the_idle_time() -> None:
    pacer = _pacer(idle=0.7)
    pacer.on_call(10.0)
    assert pacer.on_answer(10.01, byte_count=0, millis_behind_latest=0) == pytest.approx(10.71)
    assert pacer.delay(10.5) == pytest.approx(0.21)


def test_a_large_answer_waits_for_the_byte_budget() -> None:
    pacer = _pacer()
    pacer.on_call(0.0)
    # 10 MiB at once: 2 MiB came from the bucket, 8 MiB of debt at 2 MiB/s is 4 s.
    assert pacer.on_answer(0.0, byte_count=10 * MIB, millis_behind_latest=99) == pytest.approx(4.0)
    pacer.on_call(4.0)
    # The bucket refilled to zero only; 1 MiB more costs half a second.
    assert pacer.on_answer(4.0, byte_count=MIB, millis_behind_latest=99) == pytest.approx(4.5)


def test_two_mib_a_second_is_sustained_without_waiting_beyond_the_spacing() -> None:
    pacer = _pacer()
    now = 0.0
    for _ in range(50):
        pacer.on_call(now)
        now = pacer.on_answer(now, byte_count=400 * 1024, millis_behind_latest=1)
    # 5 calls a second of 400 KiB each is 2000 KiB/s, under 2 MiB/s: only the spacing.
    assert now == pytest.approx(50 * 0.2)


def test_throttles_back_off_exponentially_and_an_answer_resets() -> None:
    pacer = ReadPacer(
        idle_time_between_reads=1.0, backoff_base=0.25, backoff_max=2.0, rng=random.Random(1)
    )
    waits = []
    now = 0.0
    for _ in range(6):
        pacer.on_call(now)
        nxt = pacer.on_throttled(now)
        waits.append(nxt - now)
        now = nxt
    ceilings = [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert max(0.2, ceiling / 2) <= wait <= ceiling
    pacer.on_call(now)
    pacer.on_answer(now, byte_count=0, millis_behind_latest=1)
    pacer.on_call(now + 1)
    first = pacer.on_failure(now + 1) - (now + 1)
    assert 0.2 <= first <= 0.25


def test_negative_idle_time_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_time"):
        ReadPacer(idle_time_between_reads=-1)


# ------------------------------------------------------------------ positions


@pytest.mark.parametrize(
    ("checkpoint", "sub", "expected"),
    [
        ("TRIM_HORIZON", 0, StartingPosition("TRIM_HORIZON")),
        ("LATEST", 0, StartingPosition("LATEST")),
        ("AT_TIMESTAMP", 0, StartingPosition("AT_TIMESTAMP", timestamp=12.5)),
        ("4950", 3, StartingPosition("AT_SEQUENCE_NUMBER", "4950", skip_through=3)),
        ("4950", 0, StartingPosition("AT_SEQUENCE_NUMBER", "4950", skip_through=0)),
        ("SHARD_END", 0, None),
    ],
)
def test_starting_position_from_a_checkpoint(
    checkpoint: str, sub: int, expected: StartingPosition | None
) -> None:
    assert starting_position(checkpoint, sub, timestamp=12.5) == expected


def test_bad_checkpoints_are_refused() -> None:
    with pytest.raises(ValueError, match="not a checkpoint"):
        starting_position("bogus")
    with pytest.raises(ValueError, match="timestamp"):
        starting_position("AT_TIMESTAMP")


# ------------------------------------------------------------------ delivery


def _plain(seq: int, key: str, data: bytes, arrival: float = 100.0) -> dict[str, Any]:
    return {
        "SequenceNumber": str(seq),
        "PartitionKey": key,
        "Data": data,
        "ApproximateArrivalTimestamp": arrival,
    }


def _aggregate(seq: int, keys: list[str]) -> dict[str, Any]:
    data = encode(keys, [], [SubRecord(i, None, k.encode()) for i, k in enumerate(keys)])
    return _plain(seq, "a", data)


def _whole(shard_id: str = "shardId-000000000000") -> ShardInfo:
    return ShardInfo(shard_id)


def test_plain_and_aggregated_records_become_tagged_user_records() -> None:
    cursor = ShardCursor(_whole(), StartingPosition("TRIM_HORIZON"))
    out = cursor.take([_plain(1, "k", b"one", 99.5), _aggregate(2, ["x", "y"])])
    assert [
        (r.partition_key, r.data, r.sequence_number, r.sub_sequence_number, r.aggregated)
        for r in out
    ] == [
        ("k", b"one", "1", 0, False),
        ("x", b"x", "2", 0, True),
        ("y", b"y", "2", 1, True),
    ]
    assert {r.shard_id for r in out} == {"shardId-000000000000"}
    # Built as the dataclass builds them: equal and hashed alike.
    expected = UserRecord("x", b"x", None, "2", 0, True, "shardId-000000000000", 100.0)
    assert out[1] == expected
    assert hash(out[1]) == hash(expected)
    assert out[0] == UserRecord("k", b"one", None, "1", 0, False, "shardId-000000000000", 99.5)
    assert type(out[0]) is UserRecord
    with pytest.raises(dataclasses.FrozenInstanceError):
        out[0].data = b"changed"  # type: ignore[misc]
    assert out[0].approximate_arrival_timestamp == 99.5
    assert cursor.last_sequence_number == "2"
    assert cursor.position == StartingPosition("AFTER_SEQUENCE_NUMBER", "2")


def test_restart_skips_the_checkpointed_sub_records_only() -> None:
    keys = [f"k{i}" for i in range(5)]
    start = starting_position("7", 2)
    assert start is not None
    cursor = ShardCursor(_whole(), start)
    assert cursor.position == start  # nothing received yet: the checkpoint's position
    out = cursor.take([_aggregate(7, keys), _aggregate(8, keys)])
    assert [(r.sequence_number, r.sub_sequence_number) for r in out] == [
        ("7", 3),
        ("7", 4),
        *(("8", i) for i in range(5)),
    ]


def test_restart_after_a_plain_record_skips_it() -> None:
    start = starting_position("7", 0)
    assert start is not None
    cursor = ShardCursor(_whole(), start)
    assert [
        r.sequence_number for r in cursor.take([_plain(7, "k", b"a"), _plain(9, "k", b"b")])
    ] == ["9"]


def test_the_skip_applies_only_to_the_checkpointed_record() -> None:
    # The checkpointed record was trimmed: the first record is a later one, delivered whole.
    start = starting_position("7", 3)
    assert start is not None
    cursor = ShardCursor(_whole(), start)
    out = cursor.take([_aggregate(11, ["a", "b"])])
    assert [r.sub_sequence_number for r in out] == [0, 1]
    out = cursor.take([_aggregate(7, ["a", "b"])])  # never skipped after the first record
    assert [r.sub_sequence_number for r in out] == [0, 1]


def test_sub_records_outside_the_shard_are_dropped_keeping_their_index() -> None:
    keys = [f"key-{i}" for i in range(40)]
    low = ShardInfo("shardId-000000000001", ("shardId-000000000000",), 0, HALF - 1)
    cursor = ShardCursor(low, StartingPosition("TRIM_HORIZON"))
    out = cursor.take([_aggregate(3, keys)])
    expected = [(k, i) for i, k in enumerate(keys) if partition_key_hash(k) < HALF]
    assert 0 < len(expected) < len(keys)
    assert [(r.partition_key, r.sub_sequence_number) for r in out] == expected


def test_an_explicit_hash_key_decides_the_range() -> None:
    data = encode(
        ["p", "q"], [str(MAX_HASH_KEY), "5"], [SubRecord(0, 0, b"high"), SubRecord(1, 1, b"low")]
    )
    low = ShardInfo("s", (), 0, HALF - 1)
    out = ShardCursor(low, StartingPosition("TRIM_HORIZON")).take([_plain(1, "p", data)])
    assert [r.data for r in out] == [b"low"]
    assert out[0].explicit_hash_key == "5"


def test_plain_records_are_never_filtered() -> None:
    # The service placed a plain record by its hash key: it belongs where it was read.
    low = ShardInfo("s", (), 0, 10)
    out = ShardCursor(low, StartingPosition("TRIM_HORIZON")).take([_plain(1, "zz", b"d")])
    assert [r.data for r in out] == [b"d"]


def test_data_that_only_looks_aggregated_is_a_plain_record() -> None:
    good = encode(["a"], [], [SubRecord(0, None, b"x")])
    bad_checksum = good[:-1] + bytes([good[-1] ^ 1])
    bad_index = encode(["a"], [], [SubRecord(3, None, b"x")])
    cursor = ShardCursor(_whole(), StartingPosition("TRIM_HORIZON"))
    out = cursor.take([_plain(1, "p", bad_checksum), _plain(2, "q", bad_index)])
    assert [(r.partition_key, r.data, r.aggregated) for r in out] == [
        ("p", bad_checksum, False),
        ("q", bad_index, False),
    ]


def test_a_sub_record_with_an_invalid_explicit_hash_key_is_dropped() -> None:
    data = encode(["p"], ["not-a-number"], [SubRecord(0, 0, b"bad"), SubRecord(0, None, b"ok")])
    shard = ShardInfo("s", (), 0, MAX_HASH_KEY - 1)  # not the whole space: ranges are checked
    out = ShardCursor(shard, StartingPosition("TRIM_HORIZON")).take([_plain(1, "p", data)])
    assert [r.data for r in out] == ([b"ok"] if partition_key_hash("p") < MAX_HASH_KEY else [])


def test_the_range_check_gives_the_same_answer_for_repeated_keys() -> None:
    keys = [f"key-{i % 7}" for i in range(30)]
    low = ShardInfo("s", (), 0, HALF - 1)
    cursor = ShardCursor(low, StartingPosition("TRIM_HORIZON"))
    first = cursor.take([_aggregate(1, keys)])
    again = cursor.take([_aggregate(2, keys)])
    assert [r.partition_key for r in first] == [r.partition_key for r in again]
    assert [r.partition_key for r in first] == [k for k in keys if partition_key_hash(k) < HALF]


# ------------------------------------------------------------------ KPL vectors, malformed data

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors" / "kpl_aggregated_records.json").read_text()
)["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
@pytest.mark.parametrize("shard", ["whole", "low", "high"])
def test_kpl_vectors_through_the_cursor(vector: dict[str, Any], shard: str) -> None:
    data = base64.b64decode(vector["data"])
    low, high = {"whole": (0, MAX_HASH_KEY), "low": (0, HALF - 1), "high": (HALF, MAX_HASH_KEY)}[
        shard
    ]
    cursor = ShardCursor(ShardInfo("s", (), low, high), StartingPosition("TRIM_HORIZON"))
    out = cursor.take([_plain(5, vector["kinesis_partition_key"], data, 7.0)])
    if vector["name"].startswith("magic_but_bad_checksum"):
        # Plain data by the format's rule, never filtered, and not counted as malformed.
        assert out == [
            UserRecord(vector["kinesis_partition_key"], data, None, "5", 0, False, "s", 7.0)
        ]
        assert cursor.malformed_aggregates == 0
        return
    expected = [
        UserRecord(
            e["partition_key"],
            base64.b64decode(e["data"]),
            e["explicit_hash_key"],
            "5",
            e["sub_sequence_number"],
            True,
            "s",
            7.0,
        )
        for e in vector["user_records"]
        if low
        <= (
            int(e["explicit_hash_key"])
            if e["explicit_hash_key"] is not None
            else partition_key_hash(e["partition_key"])
        )
        <= high
    ]
    assert out == expected
    assert list(out) == expected
    assert [out[i] for i in range(len(out))] == expected


def _framed(body: bytes) -> bytes:
    return MAGIC + body + md5(body).digest()


# Bodies with a valid checksum that are not a well-formed AggregatedRecord.
_BAD_BODIES = {
    "does-not-parse": b"\xff\xff",
    "key-not-utf8": b"\x0a\x02\xff\xfe" + b"\x1a\x04\x08\x00\x1a\x00",
    "key-index-outside-table": b"\x0a\x01k" + b"\x1a\x04\x08\x05\x1a\x00",
    "explicit-index-outside-table": b"\x0a\x01k\x12\x015" + b"\x1a\x06\x08\x00\x10\x03\x1a\x00",
}


@pytest.mark.parametrize("body", _BAD_BODIES.values(), ids=_BAD_BODIES.keys())
@pytest.mark.parametrize("whole", [True, False])
def test_a_malformed_aggregate_is_delivered_whole_and_the_rest_of_the_answer_too(
    body: bytes, whole: bool
) -> None:
    shard = _whole("s") if whole else ShardInfo("s", (), 0, MAX_HASH_KEY - 1)
    cursor = ShardCursor(shard, StartingPosition("TRIM_HORIZON"))
    bad = _framed(body)
    keys = ["a", "b", "c"]
    out = cursor.take([_aggregate(1, keys), _plain(2, "odd", bad), _aggregate(3, keys)])
    in_shard = [k for k in keys if whole or partition_key_hash(k) <= MAX_HASH_KEY - 1]
    assert [(r.sequence_number, r.partition_key, r.data, r.aggregated) for r in out] == [
        *(("1", k, k.encode(), True) for k in in_shard),
        ("2", "odd", bad, False),
        *(("3", k, k.encode(), True) for k in in_shard),
    ]
    assert cursor.malformed_aggregates == 1
    assert cursor.last_sequence_number == "3"


def test_an_index_outside_its_table_counts_even_in_a_skipped_sub_record() -> None:
    # A restart at (7, 1) skips sub-records 0 and 1, yet sub-record 0's bad index still
    # makes record 7 plain data, as it was when first read; a plain record at the
    # checkpoint was processed, so nothing of it is delivered again.
    body = b"\x0a\x01k" + b"\x1a\x04\x08\x04\x1a\x00" + b"\x1a\x05\x08\x00\x1a\x01x"
    start = starting_position("7", 1)
    assert start is not None
    cursor = ShardCursor(_whole(), start)
    out = cursor.take([_plain(7, "p", _framed(body))])
    assert out == []  # a plain record at the checkpoint was processed: skipped
    assert cursor.malformed_aggregates == 1


def test_the_wire_format_follows_the_size_of_the_last_answers_records() -> None:
    cursor = ShardCursor(_whole(), StartingPosition("TRIM_HORIZON"))
    # Until records were seen: CBOR (large records are where it matters), a short answer.
    assert cursor.wants_cbor
    assert cursor.limit(10_000) == PROBE_RECORDS
    assert cursor.limit(10) == 10
    cursor.take([])  # an empty answer says nothing about the records
    assert cursor.wants_cbor
    assert cursor.limit(10_000) == PROBE_RECORDS
    cursor.take([_plain(1, "k", b"x" * 100), _plain(2, "k", b"x" * 100)])
    assert not cursor.wants_cbor
    assert cursor.limit(10_000) == 10_000
    cursor.take([])
    assert not cursor.wants_cbor
    assert cursor.limit(10_000) == 10_000
    cursor.take([_plain(3, "k", b"x" * (CBOR_FROM_RECORD_SIZE - 1))])
    assert not cursor.wants_cbor
    cursor.take([_plain(4, "k", b"x" * 10), _plain(5, "k", b"x" * (2 * CBOR_FROM_RECORD_SIZE))])
    assert cursor.wants_cbor
    cursor.take([_aggregate(6, [f"k{i}" for i in range(200)])])  # ~1.4 KB of aggregate
    assert cursor.wants_cbor
