"""Durable reads and trims do their file work in worker threads, never on the event loop.

Each test blocks the worker's system call on a gate that only the test (running on the
loop) opens: if the loop were the one waiting on the disk, the gate could never open.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from server import ServerConfig, StreamServer
from server.storage.durable import DurableStorage
from server.storage.durable import storage as durable_storage
from tests.server.test_durable import BASE, SHARD, make_meta, recs, segments
from tests.server.test_wire import AUTH

#: Generous bound on a gate that the test opens itself; reached only if the code is wrong.
GATE_SECONDS = 30


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DurableStorage]:
    storage = DurableStorage(tmp_path / "data", segment_bytes=500)
    yield storage
    storage.close()


class Calls:
    """Wraps an ``os`` function: who called it, and a gate held shut for worker threads."""

    def __init__(self, real: Callable[..., Any], loop: asyncio.AbstractEventLoop) -> None:
        self.real = real
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.on_loop = 0
        self.in_workers = 0
        self.gate = threading.Event()
        self.gate.set()
        self.started: asyncio.Future[None] = loop.create_future()

    def hold(self) -> None:
        """Make worker calls wait until :meth:`release`; :attr:`started` says one waits."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == self.loop_thread:
            self.on_loop += 1
        else:
            self.in_workers += 1
            if not self.started.done():
                self.loop.call_soon_threadsafe(
                    lambda: self.started.done() or self.started.set_result(None)
                )
            if not self.gate.wait(GATE_SECONDS):
                raise AssertionError("the gate was never opened")
        return self.real(*args, **kwargs)


async def filled(store: DurableStorage, count: int = 100) -> list[Any]:
    store.save_stream(make_meta())
    records = recs(1, count)
    store.append("s1", SHARD, records)
    await store.wait_durable()
    return records


async def test_read_ahead_preads_in_a_worker_and_the_read_uses_its_bytes(
    store: DurableStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = await filled(store)
    assert len(segments(store.data_dir)) > 1
    pread = Calls(os.pread, asyncio.get_running_loop())
    monkeypatch.setattr(os, "pread", pread)
    pread.hold()
    ahead = asyncio.ensure_future(store.read_ahead("s1", SHARD, BASE + 5, 30, 0))
    await asyncio.wait_for(pread.started, GATE_SECONDS)  # the loop runs meanwhile
    assert not ahead.done()
    pread.release()
    await ahead
    assert store.read("s1", SHARD, BASE + 5, 30, 0) == records[4:34]
    assert pread.on_loop == 0
    assert pread.in_workers >= 2  # the read spans segments: one pread each


async def test_a_read_not_covered_by_its_read_ahead_reads_for_itself(
    store: DurableStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = await filled(store, 3)
    pread = Calls(os.pread, asyncio.get_running_loop())
    monkeypatch.setattr(os, "pread", pread)
    await store.read_ahead("s1", SHARD, 0, 100, 0)
    more = recs(4, 2)
    store.append("s1", SHARD, more)  # becomes readable after the read-ahead
    await store.wait_durable()
    assert store.read("s1", SHARD, 0, 100, 0) == records + more
    assert pread.on_loop == 1
    # Nothing left over: the next read without a read-ahead reads for itself too.
    assert store.read("s1", SHARD, 0, 100, 0) == records + more
    assert pread.on_loop == 2


async def test_read_ahead_of_nothing_reads_nothing(
    store: DurableStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(store, 3)
    pread = Calls(os.pread, asyncio.get_running_loop())
    monkeypatch.setattr(os, "pread", pread)
    await store.read_ahead("nope", SHARD, 0, 100, 0)
    await store.read_ahead("s1", "shardId-000000000009", 0, 100, 0)
    await store.read_ahead("s1", SHARD, BASE + 4, 100, 0)  # caught up
    assert pread.on_loop == pread.in_workers == 0


async def test_trim_unlinks_in_a_worker_and_wait_durable_waits_for_it(
    store: DurableStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(store)
    before = segments(store.data_dir)
    unlink = Calls(os.unlink, asyncio.get_running_loop())
    monkeypatch.setattr(os, "unlink", unlink)
    unlink.hold()
    assert store.trim("s1", SHARD, 150.0) == 50  # returns with the deletion held
    await asyncio.wait_for(unlink.started, GATE_SECONDS)
    assert segments(store.data_dir) == before
    durable = asyncio.ensure_future(store.wait_durable())
    unlink.release()
    await durable
    after = segments(store.data_dir)
    assert before[0] not in after
    assert len(after) < len(before)
    assert unlink.on_loop == 0
    assert unlink.in_workers == len(before) - len(after)


async def test_get_records_over_http_never_preads_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = DurableStorage(tmp_path / "data", segment_bytes=500)
    srv = StreamServer(
        ServerConfig(shard_limit=3, state_delay_seconds=0), port=0, storage=storage
    )
    pread = Calls(os.pread, asyncio.get_running_loop())
    monkeypatch.setattr(os, "pread", pread)

    async def call(session: aiohttp.ClientSession, action: str, body: dict[str, Any]) -> Any:
        headers = {**AUTH, "X-Amz-Target": f"Kinesis_20131202.{action}"}
        async with session.post(srv.url, data=orjson.dumps(body), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json(content_type=None)

    try:
        async with srv, aiohttp.ClientSession() as session:
            await call(session, "CreateStream", {"StreamName": "h", "ShardCount": 1})
            entries = [{"Data": "AAAA" * 10, "PartitionKey": f"p{n}"} for n in range(40)]
            await call(session, "PutRecords", {"StreamName": "h", "Records": entries})
            shard = (await call(session, "ListShards", {"StreamName": "h"}))["Shards"][0]
            iterator = (
                await call(
                    session,
                    "GetShardIterator",
                    {
                        "StreamName": "h",
                        "ShardId": shard["ShardId"],
                        "ShardIteratorType": "TRIM_HORIZON",
                    },
                )
            )["ShardIterator"]
            got = await call(session, "GetRecords", {"ShardIterator": iterator, "Limit": 25})
            assert [r["PartitionKey"] for r in got["Records"]] == [f"p{n}" for n in range(25)]
            rest = await call(session, "GetRecords", {"ShardIterator": got["NextShardIterator"]})
            assert [r["PartitionKey"] for r in rest["Records"]] == [
                f"p{n}" for n in range(25, 40)
            ]
    finally:
        storage.close()
    assert pread.in_workers >= 2
    assert pread.on_loop == 0


async def test_a_late_deletion_never_touches_a_stream_made_again_under_the_same_name(
    store: DurableStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(store)
    unlink = Calls(os.unlink, asyncio.get_running_loop())
    monkeypatch.setattr(os, "unlink", unlink)
    unlink.hold()
    store.trim("s1", SHARD, 150.0)  # the deletion of segments 1, 2 ... waits at the gate
    await asyncio.wait_for(unlink.started, GATE_SECONDS)
    store.delete_stream("s1")
    store.save_stream(make_meta())
    again = recs(1, 100, arrival=500.0)
    store.append("s1", SHARD, again)  # new files under the same names as the old ones
    names = [p.name for p in segments(store.data_dir)]
    unlink.release()
    await store.wait_durable()
    assert [p.name for p in segments(store.data_dir)] == names
    assert store.read("s1", SHARD, 0, 1000, 0) == again


async def test_read_ahead_bytes_left_untaken_are_bounded(
    store: DurableStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = await filled(store)
    monkeypatch.setattr(durable_storage, "_READ_AHEAD_CAP", 1)  # room for one buffer only
    pread = Calls(os.pread, asyncio.get_running_loop())
    monkeypatch.setattr(os, "pread", pread)
    await store.read_ahead("s1", SHARD, BASE + 1, 1, 0)  # a request that never read
    await store.read_ahead("s1", SHARD, BASE + 90, 1, 0)  # pushes the first one out
    assert store.read("s1", SHARD, BASE + 90, 1, 0) == records[89:90]
    assert pread.on_loop == 0
    assert store.read("s1", SHARD, BASE + 1, 1, 0) == records[:1]
    assert pread.on_loop == 1
