"""MemoryStorage against the storage protocol's documented contract."""

from __future__ import annotations

from server.storage.base import ShardMeta, Storage, StreamMeta
from server.storage.memory import MemoryStorage


def _filled(n: int = 10) -> MemoryStorage:
    storage = MemoryStorage()
    records = [(100 + i, 1000.0 + i, f"k{i}", b"x" * i) for i in range(n)]
    storage.append("s", "shardId-000000000000", records)
    return storage


def test_implements_protocol() -> None:
    assert isinstance(MemoryStorage(), Storage)


def test_read_by_sequence_number_limit_and_bytes() -> None:
    storage = _filled()
    got = storage.read("s", "shardId-000000000000", 103, 3, 10_000)
    assert [r[0] for r in got] == [103, 104, 105]
    # between two numbers: starts at the next one
    assert storage.read("s", "shardId-000000000000", 0, 1, 10_000)[0][0] == 100
    assert storage.read("s", "shardId-000000000000", 110, 5, 10_000) == []
    # bytes: k3+xxx=5, k4+xxxx=6 -> 11 > 10 stops after the first; at least one always
    assert [r[0] for r in storage.read("s", "shardId-000000000000", 103, 5, 10)] == [103]
    assert [r[0] for r in storage.read("s", "shardId-000000000000", 109, 5, 1)] == [109]
    assert storage.read("s", "nope", 0, 5, 10) == []


def test_timestamps_oldest_last_and_trim() -> None:
    storage = _filled()
    shard = "shardId-000000000000"
    assert storage.sequence_number_at("s", shard, 1004.5) == 105
    assert storage.sequence_number_at("s", shard, 0) == 100
    assert storage.sequence_number_at("s", shard, 2000) is None
    assert storage.oldest_sequence_number("s", shard) == 100
    assert storage.trim("s", shard, 1003.0) == 3
    assert storage.oldest_sequence_number("s", shard) == 103
    assert storage.read("s", shard, 0, 1, 100)[0][0] == 103
    assert storage.trim("s", shard, 1100.0) == 7
    assert storage.oldest_sequence_number("s", shard) is None
    assert storage.last_sequence_number("s", shard) == 109
    storage.append("s", shard, [(200, 2000.0, "k", b"")])
    assert storage.read("s", shard, 0, 10, 100) == [(200, 2000.0, "k", b"")]


def test_metadata_is_copied_on_save_and_load() -> None:
    storage = MemoryStorage()
    meta = StreamMeta("s", "arn", "ACTIVE", 0.0, 0.0, "PROVISIONED", 24, 1024,
                      [ShardMeta("shardId-000000000000", 0, 5, 0, 0.0)], 1)
    storage.save_stream(meta)
    meta.tags["a"] = "b"
    (loaded,) = storage.load_streams()
    assert loaded.tags == {}
    assert loaded.shards[0].is_open
    assert loaded.shards[0].index == 0
    storage.append("s", "shardId-000000000000", [(1, 1.0, "k", b"")])
    storage.delete_stream("s")
    assert storage.load_streams() == []
    assert storage.last_sequence_number("s", "shardId-000000000000") is None
