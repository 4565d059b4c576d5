"""UserRecords, the sequence a batch holds: records built on reading, equal to the
constructor's, in order, indexable and comparable like a list."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator

import pytest

from kpl.consumer.records import AggregateRun, UserRecord, UserRecords, built_user_record

SHARD = "shardId-000000000003"


def _records() -> UserRecords:
    return UserRecords(
        SHARD,
        [
            UserRecord("p", b"plain", None, "10", 0, False, SHARD, 1.5),
            AggregateRun("11", 2.5, ["a", "b", "c"], [b"0", b"1", b"2"], None, None),
            # Sub-records 0 and 2 were dropped (outside the shard): 1 and 3 are left.
            AggregateRun("12", 3.5, ["x", "y"], [b"x", b"y"], [1, 3], ["7", None]),
            UserRecord("q", b"last", "9", "13", 0, False, SHARD, 4.5),
        ],
    )


EXPECTED = [
    UserRecord("p", b"plain", None, "10", 0, False, SHARD, 1.5),
    UserRecord("a", b"0", None, "11", 0, True, SHARD, 2.5),
    UserRecord("b", b"1", None, "11", 1, True, SHARD, 2.5),
    UserRecord("c", b"2", None, "11", 2, True, SHARD, 2.5),
    UserRecord("x", b"x", "7", "12", 1, True, SHARD, 3.5),
    UserRecord("y", b"y", None, "12", 3, True, SHARD, 3.5),
    UserRecord("q", b"last", "9", "13", 0, False, SHARD, 4.5),
]


def test_iteration_builds_every_field_as_the_constructor_does() -> None:
    records = _records()
    built = list(records)
    assert len(records) == len(EXPECTED) == len(built)
    for got, want in zip(built, EXPECTED, strict=True):
        assert type(got) is UserRecord
        # Every field compared one by one: a field a builder forgot would raise here.
        for f in dataclasses.fields(UserRecord):
            assert getattr(got, f.name) == getattr(want, f.name), f.name
        assert got == want
        assert hash(got) == hash(want)
        assert repr(got) == repr(want)
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.data = b"changed"  # type: ignore[misc]


def test_indexing_slicing_and_comparing_like_a_list() -> None:
    records = _records()
    assert [records[i] for i in range(len(records))] == EXPECTED
    assert records[-1] == EXPECTED[-1]
    assert records[-3] == EXPECTED[-3]
    assert records[2:5] == EXPECTED[2:5]
    assert records[::-2] == EXPECTED[::-2]
    assert list(reversed(records)) == EXPECTED[::-1]
    assert records == EXPECTED
    assert EXPECTED == records  # noqa: SIM300 (the list on the left: the reflected ==)
    assert records == tuple(EXPECTED)
    assert records != EXPECTED[:-1]
    assert records != [*EXPECTED[:-1], EXPECTED[0]]
    assert records != "not records"
    assert EXPECTED[4] in records
    assert records.index(EXPECTED[5]) == 5
    for bad in (len(EXPECTED), -len(EXPECTED) - 1):
        with pytest.raises(IndexError):
            records[bad]
    with pytest.raises(TypeError):
        hash(records)
    assert repr(records).startswith("UserRecords([UserRecord(partition_key='p'")


def test_an_empty_answer_is_an_empty_sequence() -> None:
    records = UserRecords(SHARD, [])
    assert len(records) == 0
    assert not records
    assert list(records) == []
    assert records == []


@pytest.fixture
def default_gc() -> Iterator[None]:
    """The collector on, at CPython's default thresholds, for the test's length."""
    was_enabled, thresholds = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*thresholds)
    if not was_enabled:
        gc.disable()


@pytest.mark.usefixtures("default_gc")
def test_records_read_and_dropped_never_start_a_collection() -> None:
    # 50,000 records read one at a time: each dies before the next is made, so the
    # young generation's count of live allocations never reaches its threshold and
    # nothing is promoted towards the old generation.
    run = AggregateRun("1", None, ["k"] * 50_000, [b"d"] * 50_000, None, None)
    records = UserRecords(SHARD, [run])
    collections: list[int] = []

    def seen_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(seen_collection)
    try:
        seen = 0
        for record in records:
            seen += record.sub_sequence_number >= 0
    finally:
        gc.callbacks.remove(seen_collection)
    assert seen == 50_000
    assert collections == []
    # Kept in a list, the same records do start collections (what a list of all of
    # them would cost while it lived).
    gc.collect()
    gc.callbacks.append(seen_collection)
    try:
        kept = list(records)
    finally:
        gc.callbacks.remove(seen_collection)
    assert len(kept) == 50_000
    assert collections


def test_built_user_record_equals_the_constructor() -> None:
    args = ("k", b"d", "5", "77", 3, True, SHARD, 9.25)
    assert built_user_record(*args) == UserRecord(*args)
    assert type(built_user_record(*args)) is UserRecord
