"""Sequence numbers in the service's layout (version 2), the texts naming what a number
encodes, and a data directory written in the earlier layout still served."""

from __future__ import annotations

import random
import re
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.core.engine import Engine
from server.core.errors import InvalidArgumentException, KinesisError
from server.core.seqnum import INDEX_UNIT, arrival_part, parse_sequence_number, shard_base
from server.core.streams import EngineConfig, Shard
from server.storage.base import ShardMeta, StreamMeta
from server.storage.durable import DurableStorage
from server.storage.memory import MemoryStorage
from tests.server.wire_support import answer, error
from tests.support import FakeClock, ServerThread

ACCOUNT = "000000000000"
LAYOUT = re.compile(
    r"2(?P<created>[0-9a-f]{9})(?P<low>[0-9a-f])(?P<index>[0-9a-f]{16})00"
    r"(?P<arrival>[0-9a-f]{9})(?P<shard>[0-9a-f]{8})2"
)


def fields(number: str) -> dict[str, int]:
    assert len(number) == 56
    match = LAYOUT.fullmatch(f"{int(number):x}")
    assert match is not None, f"{int(number):x}"
    return {k: int(v, 16) for k, v in match.groupdict().items()}


#: The server's clock in this module: every number encodes these seconds.
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    clock = FakeClock(NOW + 0.5)
    with ServerThread(state_delay_seconds=0.0, limits="off", metrics=False, clock=clock) as thread:
        yield thread.url


def b64(data: bytes) -> str:
    return b64encode(data).decode()


def test_numbers_in_the_service_layout(url: str) -> None:
    assert answer(url, "CreateStream", {"StreamName": "laid", "ShardCount": 2}) == (200, None)
    status, listed = answer(url, "ListShards", {"StreamName": "laid"})
    assert status == 200
    starts = {}
    for shard in listed["Shards"]:
        starting = fields(shard["SequenceNumberRange"]["StartingSequenceNumber"])
        index = int(shard["ShardId"][8:])
        assert (starting["shard"], starting["low"], starting["index"]) == (index, index, 0)
        assert starting["created"] == starting["arrival"] == NOW
        starts[shard["ShardId"]] = starting["created"]
    seen: dict[str, list[int]] = {}
    for i in range(20):
        status, put = answer(url, "PutRecord", {
            "StreamName": "laid", "Data": b64(b"x"), "PartitionKey": f"k{i}"
        })
        assert status == 200
        seen.setdefault(put["ShardId"], []).append(int(put["SequenceNumber"]))
    status, many = answer(url, "PutRecords", {"StreamName": "laid", "Records": [
        {"Data": b64(b"y"), "PartitionKey": f"m{i}"} for i in range(20)
    ]}, cbor=True)
    assert status == 200
    for entry in many["Records"]:
        seen[entry["ShardId"]].append(int(entry["SequenceNumber"]))
    for shard_id, numbers in seen.items():
        assert numbers == sorted(set(numbers))  # strictly increasing within the shard
        for position, number in enumerate(numbers, 1):
            got = fields(str(number))
            assert got["shard"] == int(shard_id[8:])
            assert got["low"] == int(shard_id[8:]) & 0xF
            assert got["created"] == starts[shard_id]
            assert got["index"] == position  # the starting number is index 0
            assert got["arrival"] == NOW


def test_a_number_of_another_shard_names_it(url: str) -> None:
    assert answer(url, "CreateStream", {"StreamName": "two", "ShardCount": 2}) == (200, None)
    status, put = answer(url, "PutRecord", {
        "StreamName": "two", "Data": b64(b"x"), "PartitionKey": "k",
        "ExplicitHashKey": "0",
    })
    assert put["ShardId"] == "shardId-000000000000"
    number = put["SequenceNumber"]
    for kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        assert answer(url, "GetShardIterator", {
            "StreamName": "two", "ShardId": "shardId-000000000001", "ShardIteratorType": kind,
            "StartingSequenceNumber": number,
        }) == error(
            "InvalidArgumentException",
            "Invalid StartingSequenceNumber. It encodes shardId-000000000000, while it was "
            "used in a call to a shard with shardId-000000000001",
        )
    garbled = str(int(number) + 1)
    assert answer(url, "GetShardIterator", {
        "StreamName": "two", "ShardId": "shardId-000000000000",
        "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": garbled,
    }) == error(
        "InvalidArgumentException",
        f"StartingSequenceNumber {garbled} used in GetShardIterator on shard "
        f"shardId-000000000000 in stream two under account {ACCOUNT} is invalid.",
    )
    status, got = answer(url, "GetShardIterator", {
        "StreamName": "two", "ShardId": "shardId-000000000000",
        "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": number,
    })
    assert status == 200
    status, read = answer(url, "GetRecords", {"ShardIterator": got["ShardIterator"]})
    assert [r["SequenceNumber"] for r in read["Records"]] == [number]


def handle(engine: Engine, action: str, now: float, **body: Any) -> Any:
    return engine.handle(action, body, now).body


def refusal(engine: Engine, action: str, now: float, **body: Any) -> KinesisError:
    with pytest.raises(KinesisError) as info:
        engine.handle(action, body, now)
    return info.value


def test_a_number_of_an_earlier_stream_of_the_same_name() -> None:
    engine = Engine(EngineConfig(state_delay_seconds=0.0), MemoryStorage(), random.Random(3))
    now = 1_750_000_000.0
    handle(engine, "CreateStream", now, StreamName="s", ShardCount=1)
    now += 1
    old = handle(engine, "PutRecord", now, StreamName="s", Data=b64(b"a"), PartitionKey="k")
    handle(engine, "DeleteStream", now, StreamName="s")
    now += 5
    handle(engine, "CreateStream", now, StreamName="s", ShardCount=1)
    now += 1
    err = refusal(engine, "GetShardIterator", now, StreamName="s", ShardId="shardId-0",
                  ShardIteratorType="AT_SEQUENCE_NUMBER",
                  StartingSequenceNumber=old["SequenceNumber"])
    assert isinstance(err, InvalidArgumentException)
    assert err.message == (
        f"StartingSequenceNumber {old['SequenceNumber']} used in GetShardIterator on shard "
        f"shardId-000000000000 in stream s under account {ACCOUNT} is invalid because it did "
        "not come from this stream."
    )
    # SequenceNumberForOrdering from the earlier stream numbers nothing differently.
    new = handle(engine, "PutRecord", now, StreamName="s", Data=b64(b"b"), PartitionKey="k",
                 SequenceNumberForOrdering=old["SequenceNumber"])
    parsed = parse_sequence_number(int(new["SequenceNumber"]))
    assert parsed is not None
    assert (parsed.version, parsed.counter) == (2, 1)


def v1_number(shard_index: int, epoch: int, counter: int) -> int:
    """A number in the server's earlier decimal layout."""
    return ((49 * 10**10 + shard_index) * 10**10 + epoch) * 10**34 + counter


async def test_a_data_dir_in_the_earlier_layout_is_served(tmp_path: Path) -> None:
    epoch = 1_700_000_000
    meta = StreamMeta(
        name="old", arn=f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/old", status="ACTIVE",
        status_since=epoch, created_at=float(epoch), mode="PROVISIONED", retention_hours=24,
        max_record_size_kib=1024, tags={}, stream_id="abcdefghijklmnopqrst-abc",
    )
    meta.shards.append(ShardMeta(
        shard_id="shardId-000000000000", starting_hash_key=0, ending_hash_key=2**128 - 1,
        starting_sequence_number=v1_number(0, epoch, 0), created_at=float(epoch),
    ))
    meta.next_shard_index = 1
    old_numbers = [v1_number(0, epoch, n) for n in (1, 2, 3)]
    store = DurableStorage(tmp_path / "data")
    try:
        store.save_stream(meta)
        store.append("old", "shardId-000000000000",
                     [(n, epoch + 60.0, "k", b"old") for n in old_numbers])
        await store.wait_durable()
    finally:
        store.close()

    store = DurableStorage(tmp_path / "data")
    try:
        now = epoch + 3600.0
        engine = Engine(EngineConfig(state_delay_seconds=0.0), store, random.Random(1))
        put = handle(engine, "PutRecord", now, StreamName="old", Data=b64(b"new"),
                     PartitionKey="k")
        new_number = int(put["SequenceNumber"])
        assert new_number > old_numbers[-1]
        assert parse_sequence_number(new_number) is not None
        await store.wait_durable()
        # Every record, old and new, in order from the shard's (old) starting number.
        it = handle(engine, "GetShardIterator", now, StreamName="old", ShardId="0",
                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = handle(engine, "GetRecords", now, ShardIterator=it)["Records"]
        assert [int(r["SequenceNumber"]) for r in records] == [*old_numbers, new_number]
        # Numbers of either layout still name positions in the shard.
        for number, following in ((old_numbers[1], old_numbers[2]), (new_number, None)):
            it = handle(engine, "GetShardIterator", now, StreamName="old", ShardId="0",
                        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                        StartingSequenceNumber=str(number))["ShardIterator"]
            after = handle(engine, "GetRecords", now, ShardIterator=it)["Records"]
            assert [int(r["SequenceNumber"]) for r in after][:1] == (
                [following] if following else []
            )
        described = handle(engine, "ListShards", now, StreamName="old")["Shards"][0]
        assert described["SequenceNumberRange"]["StartingSequenceNumber"] == str(
            v1_number(0, epoch, 0)
        )
        # A split closes the old shard at its last number and opens layout-2 children.
        handle(engine, "SplitShard", now, StreamName="old", ShardToSplit="0",
               NewStartingHashKey=str(2**127))
        shards = handle(engine, "ListShards", now, StreamName="old")["Shards"]
        assert shards[0]["SequenceNumberRange"]["EndingSequenceNumber"] == str(new_number)
        assert shards[1]["SequenceNumberRange"]["StartingSequenceNumber"] == str(
            shard_base(1, int(now))
        )
    finally:
        store.close()


def test_a_position_between_numbers_is_named_by_a_number_of_the_shard() -> None:
    meta = ShardMeta(
        shard_id="shardId-000000000017", starting_hash_key=0, ending_hash_key=2**128 - 1,
        starting_sequence_number=shard_base(17, 1_750_000_000), created_at=1_750_000_000.0,
    )
    shard = Shard(meta)
    assert shard.floor(shard.base) == shard.base
    first = shard.next_seq + arrival_part(1_750_000_009.5)
    assert shard.floor(first) == first
    for position in (first + 1, shard.next_seq + INDEX_UNIT - 1, shard.next_seq - 1):
        named = shard.floor(position)
        parsed = parse_sequence_number(named)
        assert parsed is not None, position
        assert shard.owns(parsed)
        assert parsed.shard_index == 17
        assert named <= position
