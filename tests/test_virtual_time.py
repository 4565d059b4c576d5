"""The virtual-time loop the shell tests run on: its clock moves only when every task
waits for a timer, straight to the earliest one, and real wake-ups still arrive."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import virtual_time


@virtual_time
async def test_the_clock_jumps_to_each_timer_in_order() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    fired: list[tuple[str, float]] = []
    loop.call_later(3600.0, lambda: fired.append(("hour", loop.time() - start)))
    loop.call_later(1.0, lambda: fired.append(("second", loop.time() - start)))
    await asyncio.sleep(7200.0)
    assert fired == [("second", 1.0), ("hour", 3600.0)]
    assert loop.time() - start == 7200.0


@virtual_time
async def test_the_clock_stands_still_while_work_is_ready() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = asyncio.create_task(asyncio.sleep(10.0))
    for _ in range(1000):
        await asyncio.sleep(0)
    assert loop.time() == start
    assert not pending.done()
    await pending
    assert loop.time() == start + 10.0


@virtual_time
async def test_timeouts_expire_at_their_deadline() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5.0):
            await asyncio.Event().wait()
    assert loop.time() == start + 5.0


@virtual_time
async def test_a_worker_threads_result_still_wakes_the_loop() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.to_thread(sum, [1, 2, 3]) == 6
    assert loop.time() == start
