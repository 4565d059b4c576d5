"""The server's public names, and StreamServer embedded on the test's own event loop."""

from __future__ import annotations

import dataclasses
import re

import aiohttp
import pytest

import server
from server import ServerConfig, StreamServer
from server.storage.memory import MemoryStorage
from tests.server.test_wire import AUTH


def test_public_names() -> None:
    assert server.__all__ == ["ServerConfig", "StreamServer"]
    assert dataclasses.is_dataclass(ServerConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerConfig().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"port": 70000}, "port must be 0-65535, got 70000"),
        ({"shard_limit": 0}, "shard_limit must be at least 1, got 0"),
        ({"state_delay_seconds": -1}, "state_delay_seconds must be >= 0, got -1"),
        ({"account_id": "12"}, "account_id must be 12 digits, got '12'"),
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ServerConfig(**bad)  # type: ignore[arg-type]


async def test_embedded_server_on_the_running_loop() -> None:
    storage = MemoryStorage()
    srv = StreamServer(ServerConfig(shard_limit=3), port=0, storage=storage)
    assert srv.config.shard_limit == 3
    with pytest.raises(RuntimeError):
        _ = srv.url
    async with srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        assert srv.port != 0
        with pytest.raises(RuntimeError):
            await srv.start()
        headers = {**AUTH, "X-Amz-Target": "Kinesis_20131202.CreateStream"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                srv.url, data=b'{"StreamName":"e","ShardCount":4}', headers=headers
            ) as resp:
                assert resp.status == 400
                assert (await resp.json(content_type=None))["__type"] == "LimitExceededException"
                assert resp.headers["x-amzn-RequestId"]
            async with session.post(
                srv.url, data=b'{"StreamName":"e","ShardCount":3}', headers=headers
            ) as resp:
                assert resp.status == 200
        assert [s.name for s in storage.load_streams()] == ["e"]
    await srv.stop()  # idempotent
