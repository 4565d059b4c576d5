"""ProducerCore: input validation, the buffer budget, metrics."""

from __future__ import annotations

import random
from typing import Any

import pytest

import kpl.producer
from kpl.config import ProducerConfig
from kpl.core.pipeline import RECORD_OVERHEAD, ProducerCore, RecordResult
from kpl.errors import InvalidPartitionKey, RecordTooLarge
from tests.kpl.core.harness import Harness, even_shards


def test_budget_counters_follow_records() -> None:
    h = Harness()
    h.put(b"12345", "abc")
    h.put(b"1", "é")
    assert h.core.buffered_records == 2
    assert h.core.buffered_bytes == 5 + 3 + 1 + 2
    h.run()
    assert (h.core.buffered_records, h.core.buffered_bytes) == (0, 0)


@pytest.mark.parametrize(
    ("data", "key", "ehk", "error", "message"),
    [
        (b"x", "", None, InvalidPartitionKey, "1-256 characters"),
        (b"x", "k" * 257, None, InvalidPartitionKey, "got 257"),
        (b"x", 42, None, InvalidPartitionKey, "must be a str"),
        (b"x" * (1024 * 1024), "k", None, RecordTooLarge, "exceeds max_record_size"),
        (b"x", "k", "01", ValueError, "explicit hash key"),
        (b"x", "k", "1\u0663", ValueError, "explicit hash key"),  # an Arabic-Indic digit
        (b"x", "k", str(2**128), ValueError, "at most 2\\*\\*128 - 1"),
        ("text", "k", None, TypeError, "data must be bytes"),
    ],
)
def test_bad_input_raises_at_once_and_keeps_nothing(
    data: Any, key: Any, ehk: str | None, error: type[Exception], message: str
) -> None:
    h = Harness()
    with pytest.raises(error, match=message):
        h.core.add(data, key, ehk, object(), 0.0)
    assert (h.core.buffered_records, h.core.buffered_bytes) == (0, 0)
    assert h.core.metrics()["UserRecordsReceived"] == 0


def test_a_str_subclass_is_a_partition_key_and_a_hash_key() -> None:
    class Key(str):
        def __str__(self) -> str:
            return "not the key"

    h = Harness(shards=even_shards(1), core_map="same")
    h.put(b"a", Key("user-1"))
    h.put(b"b", Key("user-1"), Key("5"))
    h.run()
    stored = sorted(h.user_records_stored(), key=lambda r: r[2])
    assert [(key, type(key), data) for _, key, data, _ in stored] == [
        ("user-1", str, b"a"), ("user-1", str, b"b")
    ]


_BAD_INPUT = (TypeError, ValueError, InvalidPartitionKey, RecordTooLarge)


@pytest.mark.parametrize(
    ("data", "key", "ehk"),
    [
        (None, "k", None),
        ("text", "k", None),
        (b"x", 42, None),
        (b"x", "", None),
        (b"x", "k" * 257, None),
        (b"x", "\ud800", None),
        (b"x", "k", 5),
        (b"x", "k", "01"),
        (b"x", "k", str(2**128)),
        (b"x", "\ud800", "01"),
        (b"x" * 2000, "k", None),
        (memoryview(b"x" * 2000), "k", "7"),
        (bytearray(1020), "kkkkk", None),
    ],
)
def test_validate_raises_what_add_raises(data: Any, key: Any, ehk: Any) -> None:
    """The shell checks a put with validate() before it waits for room: the same rules
    as add()'s inlined checks, in the same order, with the same messages."""
    core = ProducerCore("s", ProducerConfig(max_record_size=1024, aggregation_max_size=1024,
                                            max_buffered_bytes=4096), rng=random.Random(1))
    with pytest.raises(_BAD_INPUT) as from_add:
        core.add(data, key, ehk, object(), 0.0)
    with pytest.raises(_BAD_INPUT) as from_validate:
        core.validate(data, key, ehk)
    assert type(from_validate.value) is type(from_add.value)
    assert str(from_validate.value) == str(from_add.value)
    assert core.buffered_records == 0


def test_validate_accepts_what_add_takes() -> None:
    core = ProducerCore("s", ProducerConfig(), rng=random.Random(1))
    accepted: list[tuple[Any, str, str | None]] = [
        (b"x", "k", None), (bytearray(3), "k" * 256, "0"), (memoryview(b"ab"), "ключ", "7"),
    ]
    for data, key, ehk in accepted:
        core.validate(data, key, ehk)
        core.add(data, key, ehk, object(), 0.0)
    assert core.buffered_records == 3


def test_has_room_charges_every_record_its_size_and_the_overhead() -> None:
    def core_with(records: int, budget: int) -> ProducerCore:
        config = ProducerConfig(max_buffered_records=records, max_buffered_bytes=budget,
                                max_record_size=100, aggregation_max_size=100)
        return ProducerCore("s", config, rng=random.Random(1))

    core = core_with(100, 2 * RECORD_OVERHEAD + 100)
    assert core.has_room(10**9)  # an empty buffer takes any record
    core.add(b"x" * 40, "k", None, 1, 0.0)  # 41 bytes held
    # Records of 41 and 59 bytes and their two overheads fill the budget exactly.
    assert core.has_room(59)
    assert not core.has_room(60)
    # Records let in but not added yet are charged like held ones (size and overhead).
    assert not core.has_room(0, admitted=1, admitted_bytes=20)
    roomy = core_with(100, 3 * RECORD_OVERHEAD + 100)
    roomy.add(b"x" * 40, "k", None, 1, 0.0)
    assert roomy.has_room(39, admitted=1, admitted_bytes=20)
    assert not roomy.has_room(40, admitted=1, admitted_bytes=20)
    # The record budget: with one of two held, one more fits, then none.
    counted = core_with(2, 10**6)
    counted.add(b"y", "k", None, 1, 0.0)
    assert counted.has_room(0)
    assert not counted.has_room(0, admitted=1, admitted_bytes=0)
    assert RECORD_OVERHEAD == kpl.producer.RECORD_OVERHEAD


def test_add_checking_room_buffers_only_what_has_room_and_still_validates() -> None:
    config = ProducerConfig(max_buffered_records=3, max_buffered_bytes=2 * RECORD_OVERHEAD + 100,
                            max_record_size=100, aggregation_max_size=100)
    core = ProducerCore("s", config, rng=random.Random(1))
    # An empty buffer takes a record; then the bytes budget decides, as has_room() does
    # (charged the key's UTF-8 bytes: "é" is two).
    assert core.add(b"x" * 40, "k", None, 1, 0.0, True) is True
    assert core.add(b"x" * 58, "é", None, 2, 0.0, True) is False
    assert (core.buffered_records, core.buffered_bytes) == (1, 41)
    assert core.metrics()["UserRecordsReceived"] == 1
    # Bad input raises even when the buffer is full, and nothing is kept.
    with pytest.raises(InvalidPartitionKey):
        core.add(b"x" * 58, "", None, 3, 0.0, True)
    with pytest.raises(RecordTooLarge):
        core.add(b"x" * 100, "k", None, 3, 0.0, True)
    assert core.add(b"x" * 57, "é", None, 3, 0.0, True) is True  # fills the bytes exactly
    # The record budget: two records fit, a third does not; add() without the
    # check buffers regardless (the shell's admitted waiters).
    roomy = ProducerCore("s", ProducerConfig(max_buffered_records=2), rng=random.Random(1))
    assert roomy.add(b"a", "k", None, 1, 0.0, True) is True
    assert roomy.add(b"b", "k", None, 2, 0.0, True) is True
    assert roomy.add(b"c", "k", None, 3, 0.0, True) is False
    assert roomy.add(b"c", "k", None, 3, 0.0) is True
    assert roomy.buffered_records == 3


@pytest.mark.parametrize("seed", range(5))
def test_add_checking_room_answers_what_has_room_answers(seed: int) -> None:
    rng = random.Random(seed)
    config = ProducerConfig(max_buffered_records=rng.choice([40, 400]),
                            max_buffered_bytes=20 * RECORD_OVERHEAD + 2_000,
                            max_record_size=100, aggregation_max_size=100)
    core = ProducerCore("s", config, rng=random.Random(1))
    answers = []
    for handle in range(300):
        data = b"x" * rng.choice([0, 1, 50, 99])
        draw = rng.random()
        if draw < 0.04:
            core.add(data, "k", None, handle, 0.0)  # let in regardless (an admitted waiter)
            continue
        if draw < 0.08:
            # A put_many() call the shell let in: records added in bulk.
            core.add_many([data] * 5, ["k"] * 5, 1_000 + 5 * handle, 0.0)
            continue
        expected = core.has_room(len(data) + 1)
        before = (core.buffered_records, core.buffered_bytes)
        assert core.add(data, "k", None, handle, 0.0, True) is expected
        if not expected:
            assert (core.buffered_records, core.buffered_bytes) == before
        answers.append(expected)
    assert set(answers) == {True, False}  # both answers came up


def test_add_checking_room_counts_again_once_the_stream_takes_larger_records() -> None:
    mib = 1024 * 1024
    core = ProducerCore("s", ProducerConfig(max_buffered_bytes=4 * mib), rng=random.Random(1))
    assert core.add(b"a", "k", None, 1, 0.0, True)
    assert core.add(b"b", "k", None, 2, 0.0, True)  # room for three more 1 MiB records
    core.set_stream_limits(10 * mib)
    big = b"x" * (4 * mib - 100)
    assert not core.has_room(len(big) + 1)
    assert core.add(big, "k", None, 3, 0.0, True) is False
    assert core.buffered_records == 2


def test_a_256_character_key_and_bytearray_data_are_fine() -> None:
    h = Harness()
    h.core.add(bytearray(b"ok"), "k" * 256, None, 1, 0.0)
    h.run()
    assert isinstance(h.outcomes[1], RecordResult)


def test_a_stream_is_required() -> None:
    with pytest.raises(ValueError, match="stream"):
        ProducerCore("", ProducerConfig(), rng=random.Random(1))


def test_metrics_use_the_kpl_names() -> None:
    h = Harness()
    for i in range(1000):
        h.put(key=f"k{i % 10}")
    h.run()
    metrics = h.core.metrics()
    assert metrics["UserRecordsReceived"] == metrics["UserRecordsPut"] == 1000
    assert metrics["UserRecordsDataPut"] == 1000 * (100 + 2)
    assert metrics["KinesisRecordsPut"] == len(h.stored)
    assert metrics["UserRecordsPerKinesisRecord"] == pytest.approx(1000 / len(h.stored))
    assert metrics["UserRecordsPending"] == 0
    assert metrics["AllErrors"] == 0
    assert metrics["RetriesPerRecord"] == 0
    assert 0 < metrics["BufferingTime"] <= 100.0  # milliseconds
    assert metrics["RequestTime"] == pytest.approx(10.0)
    assert metrics["KinesisRecordsPerPutRecordsRequest"] == pytest.approx(
        len(h.stored) / len(h.sent))


def test_buffering_time_is_each_records_own_wait() -> None:
    """BufferingTime averages each user record's wait from put() to its first send,
    not the wait of the oldest record in its aggregate."""
    h = Harness(shards=even_shards(1))
    h.put(key="a")  # at 0.00
    h.now = 0.05
    h.put(key="b")
    h.now = 0.08
    h.core.flush(h.now)
    (request,) = h.poll().requests
    assert request.user_record_count == 2
    assert h.core.metrics()["BufferingTime"] == pytest.approx((80 + 30) / 2)
