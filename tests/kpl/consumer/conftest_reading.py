"""Fixtures of the reading side's tests: a real stream server on port 0 and streams on it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kpl.client import KinesisClient
from kpl.consumer.leases.memory import MemoryLeaseStore
from kpl.protocol.aggregation import SubRecord, encode
from server import StreamServer

_names = itertools.count()


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    """A fresh in-memory stream server for one test."""
    async with StreamServer(port=0, state_delay_seconds=0.0) as server:
        yield server.url


@pytest.fixture
def lease_url() -> Iterator[str]:
    """A memory lease table of its own for one test, kept for the whole test (a memory
    table lives while a store of its name is open)."""
    name = f"reading-{next(_names)}"
    keeper = MemoryLeaseStore(name)
    yield f"memory://{name}"
    del keeper


async def make_stream(url: str, name: str, shards: int) -> KinesisClient:
    """Create ``name`` with ``shards`` shards and wait until it is active."""
    client = KinesisClient(url, region="us-east-1", max_attempts=20, backoff=0.01)
    await client.create_stream(name, shards)
    async with asyncio.timeout(10):
        await client.wait_for_active(name, interval=0.01)
    return client


def aggregate(keys: list[str], datas: list[bytes]) -> bytes:
    """A KPL aggregated record of one sub-record per key."""
    table = sorted(set(keys))
    return encode(
        table, [], [SubRecord(table.index(k), None, d) for k, d in zip(keys, datas, strict=True)]
    )


async def put_aggregate(
    client: KinesisClient, stream: str, keys: list[str], datas: list[bytes], hash_key: int
) -> dict[str, Any]:
    """Put one aggregated record at ``hash_key`` (as the KPL does)."""
    return await client.put_record(stream, aggregate(keys, datas), "agg", str(hash_key))
