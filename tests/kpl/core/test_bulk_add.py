"""ProducerCore.add_many(): the same outcome as add() for each record in turn."""

from __future__ import annotations

import random

import pytest

from kpl.config import ProducerConfig
from kpl.core.pipeline import RecordResult
from kpl.protocol.hashing import hash_key_for
from tests.kpl.core.harness import Harness, even_shards


def workload(seed: int, n: int, key_count: int) -> list[tuple[bytes, str]]:
    """Records of mixed sizes (one- and two-byte varints, a few past the fast path's
    data limit) over repeating keys, some of them non-ASCII."""
    rng = random.Random(seed)
    names = [f"user-{i}" for i in range(key_count)] + ["ключ", "鍵-7"]
    out = []
    for i in range(n):
        size = rng.choice((1, 20, 100, 127, 128, 300, 5000, 17_000))
        out.append((b"%06d" % i + bytes(size), rng.choice(names)))
    return out


def feed(h: Harness, records: list[tuple[bytes, str]], bulk: bool, chunk: int) -> None:
    """Put ``records`` one by one, or in bulk ``chunk`` at a time; handles 1, 2, ..."""
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        if bulk:
            h.core.add_many([d for d, _ in part], [k for _, k in part], start + 1, h.now)
        else:
            for offset, (data, key) in enumerate(part):
                h.core.add(data, key, None, start + 1 + offset, h.now)
        h.now += 0.001


def held(h: Harness) -> list[object]:
    """What the core holds per shard, column by column: open aggregates and queues."""
    out: list[object] = []
    for shard in h.core._all_shards():
        agg = shard.agg
        if agg is not None:
            out.append((shard.shard_id, list(agg.items), list(agg.arrivals), list(agg.seqs),
                        agg.user_bytes, agg.size, agg.serialize(), shard.agg_deadline))
        for krecord in shard.queue:
            out.append((shard.shard_id, list(krecord.handles), list(krecord.arrivals),
                        list(krecord.seqs), krecord.user_bytes, krecord.entry, krecord.deadline))
    out.append(sorted((r[4], r[6]) for r in h.core._held))
    return out


def drained(h: Harness) -> list[bytes]:
    """Every request body the core sends once everything is flushed."""
    h.core.flush(h.now)
    bodies = []
    while h.core.buffered_records:
        poll = h.poll()
        for request in poll.requests:
            bodies.append(request.body)
            h.answer(request)
        h.now += 0.001
    return bodies


@pytest.mark.parametrize(
    ("config", "core_map", "chunk"),
    [
        (ProducerConfig(), "same", 1000),
        (ProducerConfig(), "same", 7),
        (ProducerConfig(aggregation_max_size=4096), "same", 300),  # aggregates fill often
        (ProducerConfig(aggregation_max_count=5), "same", 100),
        (ProducerConfig(aggregation_enabled=False), "same", 100),
        (ProducerConfig(), None, 100),  # no map yet: held, then sent plain
        # A map with a hole: some keys are predicted for no shard (unrouted).
        (ProducerConfig(), even_shards(4)[:3], 250),
    ],
)
def test_bulk_and_one_by_one_send_the_same_bytes_and_results(
    config: ProducerConfig, core_map: object, chunk: int
) -> None:
    records = workload(seed=chunk, n=1500, key_count=40)
    one, bulk = Harness(config=config, core_map=core_map), Harness(config=config,
                                                                   core_map=core_map)
    feed(one, records, bulk=False, chunk=chunk)
    feed(bulk, records, bulk=True, chunk=chunk)
    assert bulk.core.buffered_records == one.core.buffered_records == len(records)
    assert bulk.core.buffered_bytes == one.core.buffered_bytes
    assert bulk.core.metrics() == one.core.metrics()
    assert held(bulk) == held(one)
    assert drained(bulk) == drained(one)
    assert bulk.outcomes == one.outcomes
    assert len(bulk.outcomes) == len(records)
    assert bulk.core.buffered_records == bulk.core.buffered_bytes == 0


def test_a_key_table_past_the_precomputed_index_fields_is_the_same_too() -> None:
    # Over 2**14 distinct keys in one aggregate: key indexes need three-byte varints.
    config = ProducerConfig(aggregation_max_size=1_000_000)
    records = [(b"v", f"key-{i}") for i in range(20_000)]
    one, bulk = Harness(config=config, shards=even_shards(1)), Harness(
        config=config, shards=even_shards(1))
    feed(one, records, bulk=False, chunk=5000)
    feed(bulk, records, bulk=True, chunk=5000)
    assert held(bulk) == held(one)
    assert max(len(agg[1]) for agg in held(bulk)[:-1]) > 2**14  # type: ignore[index]
    assert drained(bulk) == drained(one)
    assert bulk.outcomes == one.outcomes


def test_bulk_records_land_where_their_keys_belong_with_their_sizes_given() -> None:
    h = Harness()
    records = [(b"%05d" % i, f"k{i % 13}") for i in range(2000)]
    sizes = [len(d) + len(k) for d, k in records]
    h.core.add_many([d for d, _ in records], [k for _, k in records], 1, h.now, sizes)
    assert h.core.buffered_bytes == sum(sizes)
    h.run()
    assert len(h.outcomes) == 2000
    for handle, (_data, key) in enumerate(records, 1):
        outcome = h.outcomes[handle]
        assert isinstance(outcome, RecordResult)
        assert outcome.shard_id == h.true_map.shard_id_for(hash_key_for(key))
    stored = sorted(d for _s, _k, d, _sub in h.user_records_stored())
    assert stored == sorted(d for d, _ in records)


def test_an_empty_bulk_add_changes_nothing() -> None:
    h = Harness()
    h.core.add_many([], [], 1, h.now)
    assert h.core.buffered_records == 0
    assert h.core.metrics()["UserRecordsReceived"] == 0
