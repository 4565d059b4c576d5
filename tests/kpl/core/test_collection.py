"""ProducerCore: when requests leave (buffered time, flush, full requests) and their limits."""

from __future__ import annotations

import base64
import random

import orjson
import pytest

from kpl.config import ProducerConfig
from kpl.core.pipeline import RECORD_OVERHEAD, ProducerCore, RecordResult
from kpl.errors import RecordTooLarge
from kpl.protocol.limits import MIB
from tests.kpl.core.harness import Harness, even_shards


def test_nothing_leaves_before_the_buffered_time_then_everything_does() -> None:
    h = Harness()
    h.put()
    h.now = 0.05
    h.put(key="other")
    poll = h.poll()
    assert not poll.requests
    assert poll.deadline == pytest.approx(0.1)
    h.now = 0.1
    poll = h.poll()
    assert sum(r.user_record_count for r in poll.requests) == 2


def test_flush_sends_at_once() -> None:
    h = Harness()
    for i in range(10):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    poll = h.poll()
    assert sum(r.user_record_count for r in poll.requests) == 10


def test_idle_core_has_no_deadline() -> None:
    h = Harness()
    poll = h.poll()
    assert poll.deadline is None
    assert not poll.requests


def test_full_requests_leave_before_the_deadline() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(1200):
        h.put(key=f"k{i}")
    poll = h.poll()
    assert [r.record_count for r in poll.requests] == [500, 500]
    assert poll.deadline == pytest.approx(0.1)  # the remaining 200 wait for their time


def test_idle_polls_are_cheap_and_keep_the_deadline() -> None:
    h = Harness()
    h.put()
    first = h.poll()
    for step in range(5):
        h.now = 0.01 * (step + 1)
        again = h.poll()
        assert again.deadline == first.deadline == pytest.approx(0.1)
        assert not again.requests
    h.now = 0.1
    assert h.poll().requests


def test_collection_byte_limit() -> None:
    h = Harness(
        config=ProducerConfig(
            aggregation_enabled=False, collection_max_size=1_048_576, rate_limit=10_000
        )
    )
    for i in range(30):
        h.put(b"z" * 100_000, f"key{i}")
    h.core.flush(h.now)
    requests = h.poll().requests
    assert sum(r.record_count for r in requests) == 30
    for request in requests:
        assert request.byte_size <= 1_048_576
        body = orjson.loads(request.body)["Records"]
        assert (
            sum(len(base64.b64decode(e["Data"])) + len(e["PartitionKey"]) for e in body)
            == request.byte_size
        )
    assert len(requests) == 3  # 10 records of 100,005 bytes per MiB


def test_collection_max_count() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False, collection_max_count=7))
    for i in range(20):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    assert [r.record_count for r in h.poll().requests] == [7, 7, 6]


def test_in_flight_limit() -> None:
    h = Harness(
        config=ProducerConfig(aggregation_enabled=False, collection_max_count=10, max_connections=2)
    )
    for i in range(100):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    poll = h.poll()
    assert len(poll.requests) == 2
    assert h.core.in_flight == 2
    assert poll.deadline is None or poll.deadline > h.now
    assert not h.poll().requests
    h.answer(poll.requests[0])
    assert len(h.poll().requests) == 1
    h.run()
    assert len(h.outcomes) == 100


def test_rate_limit_per_shard() -> None:
    h = Harness(
        shards=even_shards(1), config=ProducerConfig(aggregation_enabled=False, rate_limit=100)
    )
    for i in range(2500):
        h.put(b"r", f"k{i}")
    h.core.flush(h.now)
    poll = h.poll()
    assert sum(r.record_count for r in poll.requests) == 1000  # one second's worth
    assert poll.deadline == pytest.approx(0.001)
    for request in poll.requests:
        h.answer(request)
    h.now = 0.5
    assert sum(r.record_count for r in h.poll().requests) == 500
    h.run()
    assert len(h.outcomes) == 2500
    assert h.now >= 1.5  # 2,500 records at 1,000/s after a full bucket of 1,000


@pytest.mark.parametrize(
    ("config", "stream_kib", "record", "request_size"),
    [
        # Defaults follow the stream: its record size, 10 MiB requests for large records.
        ({}, 1024, MIB, 5 * MIB),
        ({}, 10240, 10 * MIB, 10 * MIB),
        ({}, 2048, 2 * MIB, 10 * MIB),
        # Values set in the config stay, never above what the stream accepts.
        ({"max_record_size": 512 * 1024}, 10240, 512 * 1024, 10 * MIB),
        ({"collection_max_size": 10 * MIB}, 1024, MIB, 5 * MIB),
        ({"collection_max_size": 2 * MIB}, 10240, 10 * MIB, 10 * MIB),  # holds one record
        ({"collection_max_size": 3 * MIB, "max_record_size": 900 * 1024}, 4096, 900 * 1024,
         3 * MIB),
    ],
)
def test_stream_limits_and_config(
    config: dict[str, int], stream_kib: int, record: int, request_size: int
) -> None:
    core = ProducerCore("s", ProducerConfig(**config), rng=random.Random(1))
    core.set_stream_limits(stream_kib * 1024)
    assert core.max_record_size == record
    assert core.collection_max_size == request_size


def test_a_record_the_stream_allows_is_taken_and_requests_keep_to_its_limit() -> None:
    h = Harness(shards=even_shards(1), config=ProducerConfig(rate_limit=100_000.0))
    with pytest.raises(RecordTooLarge):
        h.put(b"x" * (2 * MIB), "big")  # 1 MiB until the stream says otherwise
    h.core.set_stream_limits(10 * MIB)
    for i in range(6):
        h.put(b"x" * (3 * MIB), f"big-{i}")
    h.run()
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    assert len(h.outcomes) == 6
    assert max(r.byte_size for r in h.sent) <= 10 * MIB
    assert len(h.sent) >= 2


def test_large_record_streams_collect_up_to_10_mib() -> None:
    mib = 1024 * 1024
    h = Harness(
        shards=even_shards(1),
        config=ProducerConfig(
            max_record_size=10 * mib,
            collection_max_size=10 * mib,
            aggregation_max_size=1 * mib,
            rate_limit=10_000,
        ),
    )
    for i in range(7):
        h.put(bytes(3 * mib), f"big{i}")
    h.core.flush(h.now)
    requests = h.poll().requests
    assert [r.record_count for r in requests] == [3, 3, 1]
    assert all(r.byte_size <= 10 * mib for r in requests)


def test_stream_arn_is_used_when_given() -> None:
    core = ProducerCore("", ProducerConfig(), rng=random.Random(1), stream_arn="arn:x")
    core.set_shard_map(even_shards(1), 0.0)
    core.add(b"x", "k", None, 1, 0.0)
    core.flush(0.0)
    (request,) = core.poll(0.0).requests
    assert orjson.loads(request.body)["StreamARN"] == "arn:x"


def test_queued_records_leave_early_once_the_budget_is_over_half_used() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False, max_buffered_records=1000))
    for i in range(400):
        h.put(key=f"k{i}")
    assert not h.poll().requests  # not full, not due, budget under half used
    for i in range(200):
        h.put(key=f"k{i}")
    poll = h.poll()
    assert sum(r.record_count for r in poll.requests) == 600
    h.run()
    assert len(h.outcomes) == 600
    assert all(type(o) is RecordResult for o in h.outcomes.values())


def test_the_byte_budget_over_half_used_sends_early_too() -> None:
    # Each record is charged its 101 bytes and RECORD_OVERHEAD against max_buffered_bytes.
    config = ProducerConfig(aggregation_enabled=False, max_buffered_bytes=MIB)
    h = Harness(config=config)
    charge = 101 + RECORD_OVERHEAD
    under = (MIB // 2) // charge
    for i in range(under):
        h.put(key=f"k{i % 10}")
    assert not h.poll().requests
    h.put(key="k")
    h.put(key="k")
    assert sum(r.record_count for r in h.poll().requests) == under + 2


def test_a_put_waiting_for_room_sends_what_is_queued() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(10):
        h.put(key=f"k{i}")
    poll = h.poll()
    assert not poll.requests
    assert poll.deadline == pytest.approx(0.1)
    h.now = 0.01
    h.core.room_wanted()
    assert sum(r.record_count for r in h.poll().requests) == 10


def test_a_put_waiting_for_room_does_not_seal_open_aggregates_early() -> None:
    h = Harness()
    for i in range(10):
        h.put(key=f"k{i}")
    assert not h.poll().requests
    h.now = 0.01
    h.core.room_wanted()
    poll = h.poll()
    assert not poll.requests  # still filling: they leave at their buffered-time deadline
    assert poll.deadline == pytest.approx(0.1)
    h.now = 0.1
    assert sum(r.user_record_count for r in h.poll().requests) == 10
