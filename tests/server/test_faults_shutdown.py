"""Injected latency never holds up a server shutdown."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

import server.web.runner as runner_module
from server import StreamServer
from server.core.faults import Faults, InjectedFault


async def test_stop_cuts_injected_latency_short(monkeypatch: pytest.MonkeyPatch) -> None:
    arrived = asyncio.Event()

    class Observed(Faults):
        def request_fault(self, action: str, rng: random.Random) -> InjectedFault | None:
            arrived.set()
            return super().request_fault(action, rng)

    monkeypatch.setattr(runner_module, "Faults", Observed)
    server = StreamServer(port=0, require_auth=False, latency_ms=(30_000.0, 30_000.0))
    await server.start()
    async with aiohttp.ClientSession() as session:

        async def list_streams() -> int:
            async with session.post(
                server.url,
                data=b"{}",
                headers={
                    "X-Amz-Target": "Kinesis_20131202.ListStreams",
                    "Content-Type": "application/x-amz-json-1.1",
                },
            ) as response:
                await response.read()
                return response.status

        request = asyncio.create_task(list_streams())
        await asyncio.wait_for(arrived.wait(), 10)
        # The stop must not wait out the 30 s of injected latency.
        await asyncio.wait_for(server.stop(), 10)
        assert await asyncio.wait_for(request, 10) == 200
