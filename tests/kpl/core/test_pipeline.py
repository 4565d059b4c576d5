"""ProducerCore driven by a fake clock and a fake PutRecords endpoint (no IO)."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aws_kinesis_agg.deaggregator import deaggregate_records as reference_deaggregate

from kpl.config import ProducerConfig
from kpl.consumer import deaggregate
from kpl.core.aggregator import Aggregator
from kpl.core.pipeline import (
    FIRST_MAP_WAIT,
    Completion,
    Delivered,
    Poll,
    ProducerCore,
    PutRecordsRequest,
    RecordResult,
    iter_completions,
)
from kpl.core.shard_map import ShardMap
from kpl.errors import (
    AccessDeniedException,
    InvalidPartitionKey,
    NetworkError,
    ProducerClosed,
    RecordFailed,
    RecordTooLarge,
    ValidationException,
)
from kpl.protocol.hashing import HASH_KEY_SPACE, MAX_HASH_KEY, hash_key_for

Outcome = RecordResult | RecordFailed
# (entry, index) -> error code or None; lets a test fail chosen entries.
Injector = Callable[[dict[str, Any], int], "str | None"]


def even_shards(n: int, first: int = 0) -> list[tuple[str, int, int]]:
    step = HASH_KEY_SPACE // n
    return [
        (f"shardId-{first + i:012d}", i * step, MAX_HASH_KEY if i == n - 1 else (i + 1) * step - 1)
        for i in range(n)
    ]


@dataclass
class Stored:
    shard_id: str
    sequence: str
    entry: dict[str, Any]


@dataclass
class Harness:
    """A core, a fake clock and a fake stream that stores what it accepts."""

    config: ProducerConfig = field(default_factory=ProducerConfig)
    shards: list[tuple[str, int, int]] = field(default_factory=lambda: even_shards(4))
    #: The map the core starts with (default: the true one; None: no map yet).
    core_map: list[tuple[str, int, int]] | str | None = "same"
    now: float = 0.0
    core: ProducerCore = field(init=False)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    stored: list[Stored] = field(default_factory=list)
    sent: list[PutRecordsRequest] = field(default_factory=list)
    unanswered: list[PutRecordsRequest] = field(default_factory=list)
    refreshes: int = 0
    _handles: int = 0

    def __post_init__(self) -> None:
        self.core = ProducerCore("stream", self.config, rng=random.Random(42))
        self.true_map = ShardMap(self.shards)
        if self.core_map == "same":
            self.core.set_shard_map(self.shards, self.now)
        elif isinstance(self.core_map, list):
            self.core.set_shard_map(self.core_map, self.now)

    def put(
        self, data: bytes = b"x" * 100, key: str = "k", explicit_hash_key: str | None = None
    ) -> int:
        self._handles += 1
        self.core.add(data, key, explicit_hash_key, self._handles, self.now)
        return self._handles

    def poll(self) -> Poll:
        poll = self.core.poll(self.now)
        assert poll.deadline is None or poll.deadline > self.now, "a poll must not spin"
        self._resolve(poll.completions)
        if poll.refresh_shard_map:
            self.refreshes += 1
        self.sent.extend(poll.requests)
        self.unanswered.extend(poll.requests)
        return poll

    def _resolve(self, completions: list[Completion | Delivered]) -> None:
        for handle, outcome in iter_completions(completions):
            assert isinstance(handle, int)
            assert handle not in self.outcomes, "one completion per record"
            self.outcomes[handle] = outcome

    def answer(
        self,
        request: PutRecordsRequest,
        inject: Injector | None = None,
        answering_map: ShardMap | None = None,
    ) -> None:
        """Answer like the service: place each entry by its hash key, store it."""
        self.unanswered.remove(request)
        shard_map = answering_map or self.true_map
        results = []
        for i, entry in enumerate(orjson.loads(request.body)["Records"]):
            code = inject(entry, i) if inject else None
            if code:
                results.append({"ErrorCode": code, "ErrorMessage": f"{code} injected"})
                continue
            hash_key = hash_key_for(entry["PartitionKey"], entry.get("ExplicitHashKey"))
            shard_id = shard_map.shard_id_for(hash_key)
            assert shard_id is not None
            sequence = str(len(self.stored) + 1)
            self.stored.append(Stored(shard_id, sequence, entry))
            results.append({"ShardId": shard_id, "SequenceNumber": sequence})
        self._resolve(self.core.on_response(request, {"Records": results}, self.now))

    def fail(self, request: PutRecordsRequest, error: BaseException) -> None:
        self.unanswered.remove(request)
        self._resolve(self.core.on_error(request, error, self.now))

    def run(
        self, inject: Injector | None = None, until: float = 60.0, latency: float = 0.01
    ) -> None:
        """Poll and answer everything until the core is empty (or ``until``)."""
        while self.core.buffered_records and self.now < until:
            poll = self.poll()
            pending = list(self.unanswered)
            if pending:
                self.now += latency
                for request in pending:
                    self.answer(request, inject)
                continue
            if self.core.in_flight:
                raise AssertionError("requests in flight that the harness never saw")
            assert poll.deadline is not None, "records buffered but no deadline"
            self.now = poll.deadline

    def user_records_stored(self) -> list[tuple[str, str, bytes, int]]:
        """(shard, partition key, data, sub-sequence) of everything the stream stored."""
        out = []
        for item in self.stored:
            data = base64.b64decode(item.entry["Data"])
            for record in deaggregate(
                data, item.entry["PartitionKey"], item.entry.get("ExplicitHashKey")
            ):
                out.append(
                    (item.shard_id, record.partition_key, record.data, record.sub_sequence_number)
                )
        return out


def keys(n: int) -> list[str]:
    return [f"user-{i}" for i in range(n)]


# --- delivery and aggregation ---------------------------------------------------------


def test_everything_is_delivered_aggregated_into_the_right_shards() -> None:
    h = Harness()
    handles = {h.put(f"payload {i}".encode(), f"user-{i % 97}"): i for i in range(3000)}
    h.run()
    assert len(h.outcomes) == 3000
    assert h.core.buffered_records == 0
    assert h.core.buffered_bytes == 0
    by_sequence: dict[str, list[int]] = {}
    for handle, i in handles.items():
        result = h.outcomes[handle]
        assert isinstance(result, RecordResult)
        assert result.shard_id == h.true_map.shard_id_for(hash_key_for(f"user-{i % 97}"))
        assert len(result.attempts) == 1
        assert result.attempts[0].success
        by_sequence.setdefault(result.sequence_number, []).append(result.sub_sequence_number)
    # Sub-sequence numbers are the positions inside each aggregated record.
    for subs in by_sequence.values():
        assert sorted(subs) == list(range(len(subs)))
    assert max(len(s) for s in by_sequence.values()) > 100
    # Every sub-record's hash key lies in the shard that stored it (the KCL rule).
    stored = h.user_records_stored()
    assert len(stored) == 3000
    for shard_id, key, _data, _sub in stored:
        assert h.true_map.shard_id_for(hash_key_for(key)) == shard_id
    assert sorted(d for _s, _k, d, _ in stored) == sorted(
        f"payload {i}".encode() for i in range(3000)
    )


def test_the_key_cache_is_bounded_and_never_changes_a_placement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("kpl.core.pipeline.KEY_CACHE_SIZE", 50)
    h = Harness()
    # 300 distinct keys (the cache empties itself five times), each put twice, plus
    # non-ASCII keys whose UTF-8 length differs from their length in characters.
    names = [f"user-{i}" for i in range(300)] + ["ключ-1", "ключ-2", "鍵"]
    handles = {h.put(b"v", key): key for key in names + names}
    assert len(h.core._key_cache) <= 50
    h.run()
    assert len(h.outcomes) == len(handles)
    for handle, key in handles.items():
        result = h.outcomes[handle]
        assert isinstance(result, RecordResult)
        assert result.shard_id == h.true_map.shard_id_for(hash_key_for(key))
    assert sorted(k for _s, k, _d, _ in h.user_records_stored()) == sorted(names + names)
    assert h.core.buffered_bytes == 0


def test_the_key_cache_pauses_while_keys_do_not_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kpl.core.pipeline.KEY_CACHE_SIZE", 50)
    h = Harness()
    for i in range(60):  # distinct: the cache fills after 50 records, all misses
        h.put(b"v", f"once-{i}")
    assert h.core._key_cache == {}  # paused for 200 records
    for i in range(200):
        h.put(b"v", f"again-{i % 10}")
    assert 0 < len(h.core._key_cache) <= 10  # back on after the pause
    for i in range(500):  # ten keys: always hits, never fills, never pauses
        h.put(b"v", f"again-{i % 10}")
    assert len(h.core._key_cache) == 10
    h.run()
    assert len(h.outcomes) == 760
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())


def test_cached_keys_follow_a_new_shard_map() -> None:
    """The key cache remembers each key's predicted shard; a new map replaces them all."""
    h = Harness(shards=even_shards(4))
    names = keys(200)
    for key in names:
        h.put(b"before", key)
    h.run()
    assert len(h.core._key_cache) == 200  # every key cached with a shard of the old map
    # A reshard into 3 shards with other ids and boundaries: no old prediction holds.
    h.shards = even_shards(3, first=10)
    h.true_map = ShardMap(h.shards)
    h.core.set_shard_map(h.shards, h.now)
    after = {h.put(b"after", key): key for key in names}
    # Cached again with the new map's shards, so these keys take the fast path again.
    current = {id(shard) for shard in h.core._shards}
    assert {id(entry[3]) for entry in h.core._key_cache.values()} <= current
    h.run()
    for handle, key in after.items():
        result = h.outcomes[handle]
        assert isinstance(result, RecordResult)
        assert result.shard_id == h.true_map.shard_id_for(hash_key_for(key))
    assert h.core.metrics()["UserRecordsPut"] == 400


MIB = 1024 * 1024


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


def test_aggregates_stay_below_the_record_limit_with_their_partition_key() -> None:
    """aggregation_max_size may equal max_record_size; the aggregate's data and its
    one-byte partition key together must still fit a record."""
    limit = 4096
    # Records that fill an aggregate of exactly `limit` bytes of data: 50-byte ones, then
    # one sized (by trial, the size accounting is exact) to land on the limit.
    trial = Aggregator(limit, 10_000)
    payloads: list[bytes] = []
    while trial.try_add("k", None, b"x" * 50):
        payloads.append(b"x" * 50)
    last = next(n for n in range(200, 0, -1) if trial.try_add("k", None, b"y" * n))
    payloads.append(b"y" * last)
    assert trial.size == limit
    config = ProducerConfig(max_record_size=limit, aggregation_max_size=limit,
                            collection_max_size=5 * MIB, max_buffered_bytes=MIB)
    h = Harness(shards=even_shards(1), config=config)
    for data in payloads:
        h.put(data, "k")
    h.run()
    assert len(h.outcomes) == len(payloads)
    sizes = [len(base64.b64decode(s.entry["Data"])) + len(s.entry["PartitionKey"])
             for s in h.stored]
    assert max(sizes) <= limit


def test_the_inlined_fast_path_builds_the_same_bytes_and_exact_sizes_as_aggregator() -> None:
    """add() inlines Aggregator.try_add's common case: same bytes, same exact size."""
    rng = random.Random(7)
    config = ProducerConfig(aggregation_max_size=1_000_000, record_max_buffered_time=10.0)
    h = Harness(config=config, shards=even_shards(1))
    reference = Aggregator(config.aggregation_max_size, config.aggregation_max_count)
    for i in range(2000):
        # Data lengths around the one/two-byte varint edges, 300+ distinct keys (indexes
        # past 127), keys repeated, non-ASCII keys, long keys.
        key = rng.choice([f"k{rng.randrange(400)}", f"ключ{rng.randrange(5)}", "x" * 200])
        data = rng.randbytes(rng.choice([0, 1, 120, 123, 124, 127, 128, 300, 1000]))
        h.put(data, key)
        assert reference.try_add(key, None, data)
        if i % 97 == 0:
            agg = h.core._shards[0].agg
            assert agg is not None
            assert agg.size == reference.size == len(agg.serialize())
    agg = h.core._shards[0].agg
    assert agg is not None
    assert agg.count == 2000
    assert agg.serialize() == reference.serialize()


def test_the_reference_deaggregator_reads_what_we_sent() -> None:
    h = Harness()
    for i in range(500):
        h.put(f"r{i}".encode(), f"k{i % 13}", str(i) if i % 50 == 0 else None)
    h.run()
    records = [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "sequenceNumber": s.sequence,
                "approximateArrivalTimestamp": 0,
                "partitionKey": s.entry["PartitionKey"],
                "data": s.entry["Data"],
            }
        }
        for s in h.stored
    ]
    theirs = reference_deaggregate(records)
    assert sorted(base64.b64decode(r["kinesis"]["data"]) for r in theirs) == sorted(
        f"r{i}".encode() for i in range(500)
    )


def test_aggregated_records_use_the_first_hash_key_and_a_placeholder_key() -> None:
    h = Harness(shards=even_shards(1))
    h.put(b"a", "first")
    h.put(b"b", "second")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    (entry,) = orjson.loads(request.body)["Records"]
    assert entry["PartitionKey"] == "a"
    assert entry["ExplicitHashKey"] == str(hash_key_for("first"))
    assert request.record_count == 1
    assert request.user_record_count == 2


def test_a_single_record_is_sent_plain() -> None:
    h = Harness()
    h.put(b"just me", "solo", "12345")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    assert orjson.loads(request.body) == {
        "StreamName": "stream",
        "Records": [
            {
                "Data": base64.b64encode(b"just me").decode(),
                "PartitionKey": "solo",
                "ExplicitHashKey": "12345",
            }
        ],
    }
    h.answer(request)
    (outcome,) = h.outcomes.values()
    assert isinstance(outcome, RecordResult)
    assert outcome.sub_sequence_number == 0


def test_aggregation_disabled_sends_every_record_plain() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(20):
        h.put(b"d", f"k{i}")
    h.run()
    assert len(h.stored) == 20
    assert all(not base64.b64decode(s.entry["Data"]).startswith(b"\xf3\x89") for s in h.stored)


def test_records_too_large_to_aggregate_go_plain() -> None:
    h = Harness(config=ProducerConfig(aggregation_max_size=1000))
    h.put(b"s" * 10, "k")
    h.put(b"L" * 5000, "k")
    h.put(b"t" * 10, "k")
    h.run()
    assert sorted(d for _s, _k, d, _ in h.user_records_stored()) == sorted(
        [b"s" * 10, b"L" * 5000, b"t" * 10]
    )
    assert any(s.entry["Data"] == base64.b64encode(b"L" * 5000).decode() for s in h.stored)


def test_before_the_first_map_records_are_held_then_aggregated() -> None:
    h = Harness(core_map=None)
    poll = h.poll()
    assert poll.refresh_shard_map
    for i in range(50):
        h.put(b"x" * 10, f"k{i}")
    h.now = 0.5  # well past record_max_buffered_time, within FIRST_MAP_WAIT
    poll = h.poll()
    assert not poll.requests  # held: neither aggregated nor sent plain
    assert poll.deadline == FIRST_MAP_WAIT  # wakes at the end of the wait at the latest
    h.core.set_shard_map(h.shards, h.now)
    h.run()
    assert len(h.outcomes) == 50
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    # One aggregated Kinesis record per shard, never one per user record.
    assert len(h.stored) == len(h.shards)
    assert all(s.entry["PartitionKey"] == "a" for s in h.stored)
    assert h.refreshes == 1


def test_without_a_map_records_go_plain_after_the_wait() -> None:
    h = Harness(core_map=None)
    h.poll()  # asks for the map, which never comes
    for i in range(3):
        h.put(b"x", f"k{i}")
    h.now = FIRST_MAP_WAIT - 0.01
    assert not h.poll().requests
    h.now = FIRST_MAP_WAIT
    poll = h.poll()
    (request,) = poll.requests
    assert request.record_count == 3  # plain: the service places each one itself


def test_a_failed_first_map_sends_held_records_plain_at_once() -> None:
    h = Harness(core_map=None)
    h.poll()
    for i in range(3):
        h.put(b"x", f"k{i}")
    h.now = 0.2
    assert not h.poll().requests
    h.core.on_shard_map_error(NetworkError("refused"), h.now)
    poll = h.poll()
    (request,) = poll.requests
    assert request.record_count == 3
    h.answer(request)
    assert len(h.outcomes) == 3
    # Later records, still without a map, are not held either (only by the buffered time).
    h.put(b"y", "k9")
    h.now += 0.1
    assert h.poll().requests


# --- timing: buffered time, flush, deadlines -------------------------------------------


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


# --- collection limits, in-flight limit, rate limits ---------------------------------------


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


# --- retries ------------------------------------------------------------------------------


def test_only_failed_entries_are_retried() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(10):
        h.put(f"{i}".encode(), f"k{i}")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(
        request,
        inject=lambda _e, i: "ProvisionedThroughputExceededException" if i in (2, 7) else None,
    )
    assert len(h.outcomes) == 8
    assert h.core.buffered_records == 2
    h.run()
    assert len(h.stored) == 10  # nothing sent twice
    retried = [o for o in h.outcomes.values() if len(o.attempts) == 2]
    assert len(retried) == 2
    for outcome in retried:
        assert isinstance(outcome, RecordResult)
        first, second = outcome.attempts
        assert first.error_code == "ProvisionedThroughputExceededException"
        assert not first.success
        assert second.success
    assert h.core.metrics()["ErrorsByCode.ProvisionedThroughputExceededException"] == 2
    assert h.core.metrics()["RetriesPerRecord"] == pytest.approx(0.2)


def test_retry_waits_for_backoff() -> None:
    h = Harness(
        config=ProducerConfig(
            aggregation_enabled=False, min_backoff=1.0, max_backoff=1.0, jitter="decorrelated"
        )
    )
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request, inject=lambda _e, _i: "InternalFailure")
    while not (poll := h.poll()).requests:
        assert poll.deadline is not None
        assert poll.deadline <= 1.0 + 1e-9
        h.now = poll.deadline
    assert h.now == pytest.approx(1.0)


def test_whole_request_failure_retries_every_entry() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(5):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.fail(request, NetworkError("connection refused"))
    assert not h.outcomes
    h.run()
    assert len(h.outcomes) == 5
    assert all(o.attempts[0].error_code == "NetworkError" for o in h.outcomes.values())


def test_non_retryable_errors_fail_at_once_each_with_its_own_exception() -> None:
    h = Harness()
    for i in range(5):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    requests = h.poll().requests
    for request in requests:
        h.fail(request, ValidationException("1 validation error detected"))
    failures = list(h.outcomes.values())
    assert len(failures) == 5
    assert len({id(f) for f in failures}) == 5
    for failure in failures:
        assert isinstance(failure, RecordFailed)
        assert failure.code == "ValidationException"
        assert isinstance(failure.cause, ValidationException)
        assert [a.error_code for a in failure.attempts] == ["ValidationException"]
    assert h.core.buffered_records == 0


def test_fail_if_throttled() -> None:
    h = Harness(config=ProducerConfig(fail_if_throttled=True))
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request, inject=lambda _e, _i: "ProvisionedThroughputExceededException")
    (failure,) = h.outcomes.values()
    assert isinstance(failure, RecordFailed)
    assert failure.code == "ProvisionedThroughputExceededException"


def test_malformed_response_is_retried() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h._resolve(h.core.on_response(request, {"Records": []}, h.now))
    assert not h.outcomes
    h.run()
    (outcome,) = h.outcomes.values()
    assert isinstance(outcome, RecordResult)
    assert outcome.attempts[0].error_code == "MalformedResponse"


def test_a_dead_endpoint_fails_every_record_within_the_ttl() -> None:
    h = Harness(config=ProducerConfig(record_ttl=5.0))
    for i in range(300):
        h.put(key=f"k{i}")
    while h.core.buffered_records:
        poll = h.poll()
        for request in poll.requests:
            h.fail(request, NetworkError("connection refused"))
        if not poll.requests:
            assert poll.deadline is not None
            h.now = poll.deadline
    assert h.now <= 5.0 + 0.5  # the TTL, plus at most one sweep interval
    assert len(h.outcomes) == 300
    for failure in h.outcomes.values():
        assert isinstance(failure, RecordFailed)
        assert failure.code == "Expired"
        assert failure.message == "not delivered within record_ttl of 5.0s"
        assert failure.attempts
        assert all(a.error_code == "NetworkError" for a in failure.attempts)
    assert h.core.metrics()["UserRecordExpired"] == 300


def test_records_stuck_behind_a_hung_request_expire() -> None:
    h = Harness(
        config=ProducerConfig(
            record_ttl=2.0, max_connections=1, aggregation_enabled=False, collection_max_count=1
        )
    )
    h.put(key="a")
    h.put(key="b")
    h.core.flush(h.now)
    (hung,) = h.poll().requests
    h.now = 2.5
    h.poll()
    assert [h.outcomes[2].code] == ["Expired"]  # type: ignore[union-attr]
    h.fail(hung, NetworkError("timeout"))
    assert h.outcomes[1].code == "Expired"  # type: ignore[union-attr]
    assert h.core.buffered_records == 0


# --- shard map: misprediction and refresh ------------------------------------------------


def test_reshard_while_in_flight_keeps_what_fits_and_reroutes_the_rest() -> None:
    # Aggregated for one shard; the map changes (split) before the answer comes back.
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old)
    names = keys(200)
    for key in names:
        h.put(key.encode(), key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.core.set_shard_map(new, h.now)
    h.answer(request)
    answering = h.true_map.shard_id_for(hash_key_for(names[0]))  # the first key's EHK
    fits = {k for k in names if h.true_map.shard_id_for(hash_key_for(k)) == answering}
    assert 0 < len(fits) < 200
    assert {names[handle - 1] for handle in h.outcomes} == fits
    assert all(isinstance(o, RecordResult) and o.shard_id == answering for o in h.outcomes.values())
    assert h.core.metrics()["ShardMapMispredictions"] == 1
    h.run()
    assert len(h.outcomes) == 200
    for handle, outcome in h.outcomes.items():
        assert isinstance(outcome, RecordResult)
        assert outcome.shard_id == h.true_map.shard_id_for(hash_key_for(names[handle - 1]))
        if names[handle - 1] not in fits:
            assert [a.error_code for a in outcome.attempts] == ["Mispredicted", None]
    # The first (mispredicted) aggregate holds strays a reader drops; the resends do not.
    first, *resent = h.stored
    assert first.shard_id == answering
    h.stored = resent
    for shard_id, key, _data, _sub in h.user_records_stored():
        assert h.true_map.shard_id_for(hash_key_for(key)) == shard_id


def test_misprediction_to_an_unknown_shard_waits_for_the_map_one_refresh() -> None:
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old)
    names = keys(50)
    for key in names:
        h.put(key.encode(), key)
    h.core.flush(h.now)
    for request in h.poll().requests:
        h.answer(request)
    # shardId-1/2 are unknown to the core's map: nothing can be confirmed yet.
    assert not h.outcomes
    # New records travel plain while the map is stale (the service places them).
    for i in range(30):
        h.put(b"new", f"fresh{i}")
    h.now = 0.5
    poll = h.poll()
    assert not poll.refresh_shard_map  # at most one refresh per interval
    assert [r.record_count for r in poll.requests] == [30]
    h.answer(poll.requests[0])
    h.now = 1.0
    assert h.poll().refresh_shard_map
    for _ in range(5):
        assert not h.poll().refresh_shard_map  # outstanding: no storm
    h.core.set_shard_map(new, h.now)
    h.run()
    assert len(h.outcomes) == 80
    assert h.refreshes == 1
    assert len(h.stored) == 2 + 30  # the aggregate, the 30 plain ones, and the rest
    for handle, outcome in h.outcomes.items():
        assert isinstance(outcome, RecordResult)
        if handle <= 50:
            assert outcome.shard_id == h.true_map.shard_id_for(hash_key_for(names[handle - 1]))


def test_failed_refresh_resends_unconfirmed_records() -> None:
    h = Harness(shards=even_shards(2, first=1), core_map=even_shards(1))
    for key in keys(20):
        h.put(key.encode(), key)
    h.core.flush(h.now)
    for request in h.poll().requests:
        h.answer(request)
    h.now = 1.0
    assert h.poll().refresh_shard_map
    h.core.on_shard_map_error(NetworkError("ListShards failed"), h.now)
    h.run()
    assert len(h.outcomes) == 20
    assert len(h.stored) >= 2  # possibly duplicated, never lost
    h.now = 1.5
    assert not h.poll().refresh_shard_map
    h.now = 2.0
    assert h.poll().refresh_shard_map


def test_new_map_reroutes_buffered_records() -> None:
    h = Harness(shards=even_shards(4))
    for key in keys(100):
        h.put(key.encode(), key)
    h.core.set_shard_map(even_shards(4, first=4), h.now)  # a reshard replaced every shard
    h.true_map = ShardMap(even_shards(4, first=4))
    h.run()
    assert len(h.outcomes) == 100
    assert {
        o.shard_id
        for o in h.outcomes.values()  # type: ignore[union-attr]
    } <= {s[0] for s in even_shards(4, first=4)}


# --- preserve_order ----------------------------------------------------------------------


def test_preserve_order_holds_everything_from_a_misprediction_until_the_new_map() -> None:
    """A split the core learns of from an answer: the sub-records sent again must not be
    overtaken by newer records of their keys, so nothing leaves until the new map."""
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old, config=ProducerConfig(preserve_order=True))
    names = keys(30)
    sent_order: dict[str, list[bytes]] = {k: [] for k in names}

    def put(tag: str, count: int) -> None:
        for i in range(count):
            key = names[i % len(names)]
            data = f"{tag}{i:04d}".encode()
            sent_order[key].append(data)
            h.put(data, key)

    put("a", 300)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request)  # lands on a shard the core's map does not know
    assert not h.outcomes
    put("b", 300)  # newer records of the same keys, while the map is stale
    h.core.flush(h.now)
    while not h.refreshes:  # the refresh is due after shard_map_refresh_min_interval
        poll = h.poll()
        assert poll.requests == []  # held: nothing may overtake the records sent again
        assert poll.deadline is not None
        h.now = poll.deadline
    assert h.now >= 1.0
    h.core.set_shard_map(new, h.now)
    h.run()
    assert len(h.outcomes) == 600
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    # What a consumer keeps (sub-records in the shard that owns their hash key), per key,
    # in the order the stream stored them: exactly the put() order.
    assert _first_copies(h.user_records_stored(), h.true_map) == sent_order


def test_preserve_order_survives_a_failed_and_a_stale_listshards_after_a_misprediction() -> None:
    """ListShards first fails, then answers with the map from before the split (it can lag
    behind the service): order holds through both, and the new map then settles it."""
    old = even_shards(1)
    new = even_shards(2, first=1)
    h = Harness(shards=new, core_map=old, config=ProducerConfig(preserve_order=True))
    names = keys(10)
    sent_order: dict[str, list[bytes]] = {k: [] for k in names}

    def put(tag: str, count: int) -> None:
        for i in range(count):
            key = names[i % len(names)]
            data = f"{tag}{i:04d}".encode()
            sent_order[key].append(data)
            h.put(data, key)

    put("a", 100)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request)  # lands on a shard unknown to the map: held
    put("b", 100)  # queued behind, on the old shard
    h.core.on_shard_map_error(NetworkError("ListShards failed"), h.now)
    h.now += 0.5
    assert h.poll().requests == []  # still held: sending now could reorder
    h.core.set_shard_map(old, h.now)  # a stale answer: the same map as before
    # Everything goes again in put() order; the resend lands on an unknown shard again.
    refreshes = h.refreshes
    while h.refreshes == refreshes:
        poll = h.poll()
        for request in list(h.unanswered):
            h.answer(request)
        if not poll.requests and poll.deadline is not None:
            h.now = poll.deadline
    h.core.set_shard_map(new, h.now)
    h.run()
    assert len(h.outcomes) == 200
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    assert _first_copies(h.user_records_stored(), h.true_map) == sent_order
    # The stale map did not know the shard that answered, so nothing was sent twice.
    kept = [(k, d) for s_, k, d, _ in h.user_records_stored()
            if h.true_map.shard_id_for(hash_key_for(k)) == s_]
    assert len(kept) == len(set(kept)) == 200


def _first_copies(
    stored: list[tuple[str, str, bytes, int]], true_map: ShardMap
) -> dict[str, list[bytes]]:
    """Per key, what a consumer reads (sub-records in the shard owning their hash key),
    each record at its first copy (a record sent again after a misprediction may be
    stored twice: at least once, never out of order)."""
    read: dict[str, list[bytes]] = {}
    for shard_id, key, data, _sub in stored:
        if true_map.shard_id_for(hash_key_for(key)) == shard_id:
            seen = read.setdefault(key, [])
            if data not in seen:
                seen.append(data)
    return read


def test_preserve_order_puts_records_sent_again_back_among_newer_ones() -> None:
    """An aggregate lands on another shard of the (stale) map while newer records of its
    keys already wait in its shard's queue, and the next ListShards still answers the
    stale map: the records sent again must go before the newer ones all the same."""
    half, quarter = HASH_KEY_SPACE // 2, HASH_KEY_SPACE // 4
    stale = [("shardId-a", 0, half - 1), ("shardId-b", half, MAX_HASH_KEY)]
    true = [("shardId-a", 0, quarter - 1), ("shardId-b", quarter, MAX_HASH_KEY)]
    h = Harness(shards=true, core_map=stale, config=ProducerConfig(preserve_order=True))
    # Keys predicted for shardId-a; the first truly in shardId-b, so the aggregate (placed
    # by its first record's hash key) lands there.
    moved = [k for k in keys(400) if quarter <= hash_key_for(k) < half][:6]
    stayed = [k for k in keys(400) if hash_key_for(k) < quarter][:6]
    names = moved + stayed
    sent_order: dict[str, list[bytes]] = {k: [] for k in names}

    def put(tag: str, count: int) -> None:
        for i in range(count):
            key = names[i % len(names)]
            data = f"{tag}{i:04d}".encode()
            sent_order[key].append(data)
            h.put(data, key)

    put("a", 60)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    put("b", 60)  # newer records of the same keys, queued while "a" is in flight
    h.core.flush(h.now)
    h.answer(request)  # on shardId-b: every sub-record is sent again
    assert h.poll().requests == []  # held until a map
    h.core.set_shard_map(stale, h.now)  # ListShards lags: the same map again
    while h.core.buffered_records:
        poll = h.poll()
        for request in list(h.unanswered):
            h.answer(request)
        if h.refreshes:
            h.core.set_shard_map(true, h.now)  # the service's map at last
            h.refreshes = 0
        elif not poll.requests and poll.deadline is not None:
            h.now = poll.deadline
    assert len(h.outcomes) == 120
    assert all(isinstance(o, RecordResult) for o in h.outcomes.values())
    assert _first_copies(h.user_records_stored(), h.true_map) == sent_order


def test_preserve_order_without_listshards_fails_with_its_reason() -> None:
    """preserve_order sends nothing without a shard map: a ListShards refusal that waiting
    will not fix fails the waiting records at once, with that reason; a passing failure
    lets them wait, and if they expire their message says what was missing."""
    config = ProducerConfig(preserve_order=True, record_ttl=2.0)
    h = Harness(core_map=None, config=config)
    handles = [h.put(b"v%d" % i, f"k{i}") for i in range(5)]
    assert h.poll().refresh_shard_map
    h.core.on_shard_map_error(NetworkError("connection reset"), h.now)
    assert not h.poll().completions  # a network error may pass: they wait
    h.now += 1.0
    assert h.poll().refresh_shard_map
    denied = AccessDeniedException("User is not authorized to perform kinesis:ListShards")
    h.core.on_shard_map_error(denied, h.now)
    h.poll()
    assert set(h.outcomes) == set(handles)
    for handle in handles:
        outcome = h.outcomes[handle]
        assert isinstance(outcome, RecordFailed)
        assert outcome.code == "AccessDeniedException"
        assert "ListShards failed, and preserve_order needs the shard map" in outcome.message
        assert "not authorized" in outcome.message
    assert h.core.buffered_records == 0
    # Later records wait for the next ListShards; a passing error lets them expire.
    late = h.put(b"late", "k-late")
    h.now += 1.0
    h.poll()
    h.core.on_shard_map_error(NetworkError("connection reset"), h.now)
    h.now += 2.5
    h.poll()
    expired = h.outcomes[late]
    assert isinstance(expired, RecordFailed)
    assert expired.code == "Expired"
    assert "no shard map: ListShards failed: " in expired.message
    assert "connection reset" in expired.message


def test_preserve_order_one_request_per_shard_and_order_under_failures() -> None:
    h = Harness(
        shards=even_shards(3), config=ProducerConfig(preserve_order=True, aggregation_max_size=2000)
    )
    rng = random.Random(3)
    names = keys(12)
    expected: dict[str, list[bytes]] = {k: [] for k in names}
    for i in range(1500):
        key = rng.choice(names)
        data = f"{key}:{i}".encode()
        expected[key].append(data)
        h.put(data, key)
        if i % 100 == 0:
            h.now += 0.03
            poll = h.poll()
            shards_used = [
                h.true_map.shard_id_for(hash_key_for(e["PartitionKey"], e.get("ExplicitHashKey")))
                for r in poll.requests
                for e in orjson.loads(r.body)["Records"]
            ]
            assert len(shards_used) == len(set(shards_used))  # one record, one request
            for request in poll.requests:
                h.answer(
                    request, inject=lambda _e, _i: "InternalFailure" if rng.random() < 0.3 else None
                )

    def flaky(_entry: dict[str, Any], _index: int) -> str | None:
        return "ProvisionedThroughputExceededException" if rng.random() < 0.3 else None

    h.run(inject=flaky)
    assert len(h.outcomes) == 1500
    got: dict[str, list[bytes]] = {k: [] for k in names}
    for _shard, key, data, _sub in h.user_records_stored():
        got[key].append(data)
    assert got == expected


def test_preserve_order_holds_a_shard_while_its_request_is_in_flight() -> None:
    h = Harness(
        shards=even_shards(1), config=ProducerConfig(preserve_order=True, aggregation_enabled=False)
    )
    for i in range(5):
        h.put(f"{i}".encode(), "same")
    h.core.flush(h.now)
    poll = h.poll()
    assert [r.record_count for r in poll.requests] == [1]
    assert not h.poll().requests
    h.answer(poll.requests[0], inject=lambda _e, _i: "InternalFailure")
    h.run()
    assert [d for _s, _k, d, _ in h.user_records_stored()] == [b"0", b"1", b"2", b"3", b"4"]


# --- budgets, bad input, shutdown, metrics -----------------------------------------------


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


def test_a_256_character_key_and_bytearray_data_are_fine() -> None:
    h = Harness()
    h.core.add(bytearray(b"ok"), "k" * 256, None, 1, 0.0)
    h.run()
    assert isinstance(h.outcomes[1], RecordResult)


def test_fail_all_fails_buffered_and_in_flight_records() -> None:
    h = Harness()
    for i in range(10):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    requests = h.poll().requests
    for i in range(5):
        h.put(key=f"later{i}")
    h._resolve(h.core.fail_all(ProducerClosed("producer closed"), h.now))
    assert len(h.outcomes) == 15
    assert all(
        isinstance(o, RecordFailed) and o.code == "ProducerClosed" for o in h.outcomes.values()
    )
    assert (h.core.buffered_records, h.core.in_flight) == (0, 0)
    for request in requests:
        assert h.core.on_response(request, {"Records": []}, h.now) == []


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


def test_stream_arn_is_used_when_given() -> None:
    core = ProducerCore("", ProducerConfig(), rng=random.Random(1), stream_arn="arn:x")
    core.set_shard_map(even_shards(1), 0.0)
    core.add(b"x", "k", None, 1, 0.0)
    core.flush(0.0)
    (request,) = core.poll(0.0).requests
    assert orjson.loads(request.body)["StreamARN"] == "arn:x"


def test_a_stream_is_required() -> None:
    with pytest.raises(ValueError, match="stream"):
        ProducerCore("", ProducerConfig(), rng=random.Random(1))


# --- more edges ---------------------------------------------------------------------------


def test_partly_expired_aggregate_is_rebuilt_with_the_live_records() -> None:
    h = Harness(
        shards=even_shards(1),
        config=ProducerConfig(record_ttl=2.0, max_connections=1, record_max_buffered_time=0.1),
    )
    h.put(b"blocker", "k0")
    h.core.flush(h.now)
    (hung,) = h.poll().requests  # the only slot stays busy
    h.now = 0.5
    old = [h.put(b"old", f"old{i}") for i in range(3)]
    h.now = 1.5
    young = [h.put(b"young", f"young{i}") for i in range(3)]
    h.core.flush(h.now)
    h.now = 2.6  # the old ones are past their TTL; the young ones are not
    h.poll()
    assert all(getattr(h.outcomes.get(x), "code", None) == "Expired" for x in old)
    assert not any(x in h.outcomes for x in young)
    h.answer(hung)
    h.run()
    assert all(isinstance(h.outcomes[x], RecordResult) for x in young)
    young_stored = [d for _s, _k, d, _ in h.user_records_stored() if d == b"young"]
    assert len(young_stored) == 3
    assert h.core.buffered_records == 0


def test_preserve_order_retry_after_refresh_goes_first() -> None:
    h = Harness(
        shards=even_shards(1),
        config=ProducerConfig(preserve_order=True, aggregation_enabled=False),
    )
    for i in range(4):
        h.put(f"{i}".encode(), "same")
    h.core.flush(h.now)
    (first,) = h.poll().requests
    h.answer(first, inject=lambda _e, _i: "ResourceInUseException")
    h.run()
    assert [d for _s, _k, d, _ in h.user_records_stored()] == [b"0", b"1", b"2", b"3"]
    assert h.outcomes[1].attempts[0].error_code == "ResourceInUseException"


def test_a_bug_in_the_shell_fails_records_with_its_name() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.fail(request, RuntimeError("oops"))
    (failure,) = h.outcomes.values()
    assert isinstance(failure, RecordFailed)
    assert failure.code == "RuntimeError"
    assert isinstance(failure.cause, RuntimeError)


def test_a_gap_in_the_map_sends_plain() -> None:
    # A map with a hole (mid-reshard): records in the hole are not aggregated.
    half = HASH_KEY_SPACE // 2
    h = Harness(shards=even_shards(1), core_map=[("shardId-000000000000", 0, half - 1)])
    keys_in_hole = [k for k in keys(40) if hash_key_for(k) >= half][:5]
    for key in keys_in_hole:
        h.put(b"hole", key)
    h.core.flush(h.now)
    (request,) = h.poll().requests
    assert request.record_count == len(keys_in_hole)


def test_entry_without_shard_id_is_retried() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h._resolve(h.core.on_response(request, {"Records": [{"SequenceNumber": "1"}]}, h.now))
    h.unanswered.remove(request)
    assert not h.outcomes
    h.run()
    (outcome,) = h.outcomes.values()
    assert isinstance(outcome, RecordResult)


def test_answers_to_unknown_requests_are_ignored() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request)
    assert h.core.on_response(request, {"Records": []}, h.now) == []
    assert h.core.on_error(request, NetworkError("late"), h.now) == []


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
