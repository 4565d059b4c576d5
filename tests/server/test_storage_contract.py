"""The storage protocol's contract, run against every implementation.

What the engine relies on (``server/storage/base.py``): reads by sequence number and by
arrival time, limits on count and bytes, trimming that never drops a newer record, a
high-water mark that survives trimming, and metadata that round-trips as a whole. A
durable implementation shows appended records once ``wait_durable`` has returned, so the
tests await it after every append.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.storage.base import ShardMeta, Storage, StoredRecord, StreamMeta
from server.storage.memory import MemoryStorage

SHARD = "shardId-000000000000"


class Opener:
    """Makes the storage under test, and "restarts" it: what load_streams sees at start-up."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.current: Storage | None = None

    def open(self) -> Storage:
        if self.kind == "memory":
            if self.current is None:
                self.current = MemoryStorage()
            return self.current  # memory cannot restart: the same object stands in
        from server.storage.durable import DurableStorage

        if self.current is not None:
            self.current.close()
        self.current = DurableStorage(self.path)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


@pytest.fixture(params=["memory", "durable"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    made = Opener(request.param, tmp_path / "data")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def storage(opener: Opener) -> Storage:
    return opener.open()


def _records(n: int, first_seq: int = 100, first_arrival: float = 1000.0) -> list[StoredRecord]:
    return [(first_seq + i, first_arrival + i, f"k{i}", b"x" * i) for i in range(n)]


def _meta(name: str = "s") -> StreamMeta:
    shard = ShardMeta(SHARD, 0, 2**128 - 1, 0, 1.0)
    return StreamMeta(name, f"arn:{name}", "ACTIVE", 1.0, 1.0, "PROVISIONED", 24, 1024, [shard], 1)


async def test_implements_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)


async def test_reads_by_sequence_number_with_count_and_byte_limits(storage: Storage) -> None:
    storage.save_stream(_meta())
    storage.append("s", SHARD, _records(6))
    storage.append("s", SHARD, _records(4, first_seq=106, first_arrival=1006.0))
    await storage.wait_durable()
    assert [r[0] for r in storage.read("s", SHARD, 0, 100, 1 << 20)] == list(range(100, 110))
    assert [r[0] for r in storage.read("s", SHARD, 103, 3, 1 << 20)] == [103, 104, 105]
    # a number between records starts at the next one; past the end, nothing
    assert storage.read("s", SHARD, 0, 1, 1 << 20)[0] == (100, 1000.0, "k0", b"")
    assert storage.read("s", SHARD, 110, 5, 1 << 20) == []
    # bytes count data + key: k3+xxx = 5, k4+xxxx = 6 -> stop before going over 10
    assert [r[0] for r in storage.read("s", SHARD, 103, 5, 10)] == [103]
    # always at least one record, even one larger than max_bytes
    assert [r[0] for r in storage.read("s", SHARD, 109, 5, 1)] == [109]
    assert storage.read("s", "shardId-000000000009", 0, 5, 10) == []


async def test_arrival_search_trim_and_high_water(storage: Storage) -> None:
    storage.save_stream(_meta())
    storage.append("s", SHARD, _records(10))
    await storage.wait_durable()
    assert storage.sequence_number_at("s", SHARD, 1004.5) == 105
    assert storage.sequence_number_at("s", SHARD, 0.0) == 100
    assert storage.sequence_number_at("s", SHARD, 5000.0) is None
    assert storage.oldest_sequence_number("s", SHARD) == 100
    dropped = storage.trim("s", SHARD, 1003.0)
    assert 0 <= dropped <= 3
    kept = storage.read("s", SHARD, 0, 100, 1 << 20)
    # never a newer record dropped; what is reported dropped is really gone
    assert [r[0] for r in kept][-7:] == list(range(103, 110))
    assert len(kept) == 10 - dropped
    oldest = storage.oldest_sequence_number("s", SHARD)
    assert oldest == kept[0][0]
    storage.trim("s", SHARD, 2000.0)
    assert storage.last_sequence_number("s", SHARD) == 109
    storage.append("s", SHARD, [(200, 2000.0, "k", b"new")])
    await storage.wait_durable()
    assert storage.read("s", SHARD, 110, 10, 1 << 20) == [(200, 2000.0, "k", b"new")]
    assert storage.last_sequence_number("s", SHARD) == 200


async def test_metadata_round_trips_and_delete_forgets(opener: Opener) -> None:
    storage = opener.open()
    meta = _meta("m")
    meta.tags["team"] = "data"
    storage.save_stream(meta)
    meta.tags["later"] = "unsaved"  # only a save_stream persists a change
    storage.save_stream(_meta("other"))
    storage.append("m", SHARD, _records(2))
    await storage.wait_durable()
    storage = opener.open()
    loaded = {s.name: s for s in storage.load_streams()}
    assert set(loaded) == {"m", "other"}
    assert loaded["m"].tags == {"team": "data"}
    assert loaded["m"].shards[0].shard_id == SHARD
    assert loaded["m"].shards[0].is_open
    storage.delete_stream("m")
    await storage.wait_durable()
    storage = opener.open()
    assert [s.name for s in storage.load_streams()] == ["other"]
    assert storage.last_sequence_number("m", SHARD) is None
    assert storage.read("m", SHARD, 0, 10, 1 << 20) == []
