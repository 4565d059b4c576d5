"""The Producer shell over a MockTransport to the server's sans-IO engine, on virtual time.

These tests drive the real ProducerCore; what they check is the shell: futures,
backpressure, flush, close, retries carried through, failure surfacing, the sender's
life cycle. They run on a virtual clock, so TTLs and timeouts are exact and take no
wall time. The same scenarios against the real server are in test_producer_e2e.py.
"""

from __future__ import annotations

import array
import asyncio
import base64
import gc
import random
from collections import defaultdict
from typing import Any

import pytest

from kpl.config import ProducerConfig
from kpl.core.results import RecordResult
from kpl.errors import (
    BufferFull,
    InvalidPartitionKey,
    ProducerClosed,
    RecordFailed,
    RecordTooLarge,
)
from kpl.producer import RECORD_OVERHEAD, Producer
from kpl.protocol.hashing import ExplicitHashKeyError, partition_key_hash
from kpl.runner import run
from kpl.transport import MockRequest, MockTransport
from tests.support import EngineKinesis, virtual_time

# Short waits keep the scenarios brief in virtual time. None is zero: a retry or refresh
# with no wait would be a busy loop, and on virtual time a busy loop stops the clock.
FAST = ProducerConfig(record_max_buffered_time=0.01, min_backoff=0.01, max_backoff=0.05,
                      shard_map_refresh_min_interval=0.05)


def fast(**changes: Any) -> ProducerConfig:
    from dataclasses import replace

    return replace(FAST, **changes)


async def put_many(producer: Producer, count: int, keys: int) -> list[
    tuple[str, bytes, asyncio.Future[RecordResult]]
]:
    out = []
    for i in range(count):
        key = f"key-{i % keys}"
        data = f"record-{i}".encode()
        out.append((key, data, await producer.put(data, partition_key=key)))
    return out


@virtual_time
async def test_all_records_delivered_and_decoded_by_reference() -> None:
    fake = EngineKinesis(shards=4)
    async with Producer("s", config=FAST, transport=fake.transport()) as producer:
        puts = await put_many(producer, 3000, keys=300)
        results = await asyncio.gather(*(f for _, _, f in puts))
    delivered = fake.delivered()
    assert sorted((d.partition_key, d.data) for d in delivered) == sorted(
        (k, d) for k, d, _ in puts
    )
    # Each future names exactly where the reference deaggregator found the record.
    where = {(d.partition_key, d.data): d for d in delivered}
    for (key, data, _), result in zip(puts, results, strict=True):
        found = where[(key, data)]
        assert (result.shard_id, result.sequence_number, result.sub_sequence_number) == (
            found.shard_id, found.sequence_number, found.sub_sequence_number)
        assert result.attempts
        assert result.attempts[-1].success
    # Aggregation happened, and every sub-record lies in the shard that stores it.
    assert len(fake.stored) < 3000
    ranges = {shard_id: (start, end) for shard_id, start, end in fake.shard_ranges()}
    for d in delivered:
        start, end = ranges[d.shard_id]
        assert start <= partition_key_hash(d.partition_key) <= end
    stats = producer.metrics()
    assert stats["UserRecordsReceived"] == 3000
    assert stats["UserRecordsPut"] == 3000
    assert producer.closed


@virtual_time
async def test_put_returns_before_delivery() -> None:
    gate = asyncio.Event()
    fake = EngineKinesis()

    async with Producer("s", config=FAST, transport=fake.transport(gate)) as producer:
        future = await producer.put(b"x", partition_key="k")
        assert not future.done()
        gate.set()
        result = await future
    assert result.shard_id.startswith("shardId-")


@virtual_time
async def test_entry_failures_are_retried_to_success() -> None:
    rng = random.Random(7)

    def fault(entry: dict[str, Any], call: int) -> str | None:
        if call < 6 and rng.random() < 0.5:
            return rng.choice(["ProvisionedThroughputExceededException", "InternalFailure"])
        return None

    fake = EngineKinesis(entry_fault=fault)
    async with Producer("s", config=fast(aggregation_enabled=False),
                        transport=fake.transport()) as producer:
        puts = await put_many(producer, 400, keys=40)
        results = await asyncio.gather(*(f for _, _, f in puts))
    assert sorted(d.data for d in fake.delivered()) == sorted(d for _, d, _ in puts)
    retried = [r for r in results if len(r.attempts) > 1]
    assert retried, "the fault should have forced retries"
    for r in retried:
        assert not r.attempts[0].success
        assert r.attempts[0].error_code in (
            "ProvisionedThroughputExceededException", "InternalFailure")
        assert r.attempts[-1].success
    assert producer.metrics()["RetriesPerRecord"] > 0


@virtual_time
async def test_whole_request_failures_are_retried() -> None:
    def fault(request: MockRequest, call: int) -> BaseException | None:
        return ConnectionResetError("injected reset") if call < 3 else None

    fake = EngineKinesis(request_fault=fault)
    async with Producer("s", config=FAST, transport=fake.transport()) as producer:
        puts = await put_many(producer, 50, keys=5)
        results = await asyncio.gather(*(f for _, _, f in puts))
    assert len(fake.delivered()) == 50
    assert any(a.error_code == "NetworkError" for r in results for a in r.attempts)


@virtual_time
async def test_unknown_stream_fails_at_once() -> None:
    fake = EngineKinesis(stream_name="s")
    config = fast(record_ttl=30.0)
    async with Producer("missing", config=config, transport=fake.transport()) as producer:
        future = await producer.put(b"x", partition_key="k")
        # Failed by the answer to its first send, long before the TTL (virtual time).
        async with asyncio.timeout(config.record_ttl / 10):
            with pytest.raises(RecordFailed) as caught:
                await future
    assert caught.value.code == "ResourceNotFoundException"
    assert fake.put_calls == 1  # not retried


@virtual_time
async def test_dead_endpoint_fails_every_record_within_ttl() -> None:
    def refuse(request: MockRequest) -> Any:
        raise ConnectionRefusedError("connection refused")

    config = fast(record_ttl=0.3)
    producer = Producer("s", config=config, transport=MockTransport(refuse))
    # Every record is failed at its TTL and close returns then (virtual time), never later.
    async with asyncio.timeout(config.record_ttl + config.max_backoff), producer:
        futures = [f for _, _, f in await put_many(producer, 20, keys=3)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, RecordFailed) for o in outcomes)
    failure = outcomes[0]
    assert isinstance(failure, RecordFailed)
    assert failure.attempts  # every attempt is carried
    assert any(a.error_code == "NetworkError" for a in failure.attempts) or (
        failure.code == "NetworkError")


@virtual_time
async def test_fail_if_throttled_fails_throttled_records_at_once() -> None:
    fake = EngineKinesis(entry_fault=lambda e, c: "ProvisionedThroughputExceededException")
    async with Producer("s", config=fast(fail_if_throttled=True),
                        transport=fake.transport()) as producer:
        future = await producer.put(b"x", partition_key="k")
        with pytest.raises(RecordFailed) as caught:
            await future
    assert caught.value.code == "ProvisionedThroughputExceededException"
    assert len(caught.value.attempts) == 1


@virtual_time
async def test_bad_input_raises_at_put_and_loses_nothing() -> None:
    fake = EngineKinesis()
    async with Producer("s", config=fast(max_record_size=1024, aggregation_max_size=1024),
                        transport=fake.transport()) as producer:
        good = await producer.put(b"before", partition_key="k")
        with pytest.raises(RecordTooLarge) as too_large:
            await producer.put(b"x" * 2000, partition_key="k")
        assert str(too_large.value) == (
            "record of 2001 bytes (data + partition key) exceeds max_record_size of 1024")
        with pytest.raises(InvalidPartitionKey) as empty:
            await producer.put(b"x", partition_key="")
        assert str(empty.value) == "partition key must be 1-256 characters, got 0"
        with pytest.raises(InvalidPartitionKey) as long_key:
            await producer.put(b"x", partition_key="k" * 257)
        assert str(long_key.value) == "partition key must be 1-256 characters, got 257"
        with pytest.raises(ExplicitHashKeyError) as bad_hash:
            await producer.put(b"x", partition_key="k", explicit_hash_key="-1")
        assert str(bad_hash.value) == (
            "explicit hash key must be a decimal integer without leading zeros, got '-1'")
        with pytest.raises(RecordTooLarge):
            producer.put_nowait(b"x" * 2000, partition_key="k")
        # Wrong types and keys without UTF-8 bytes: the library's own errors, also while
        # records are buffered (the budget check must not trip over them first).
        assert producer.buffered_records == 1
        wrong: list[tuple[Any, Any, Any, type[Exception], str]] = [
            (b"x", 5, None, InvalidPartitionKey, "partition key must be a str, got int"),
            (b"x", "\ud800", None, InvalidPartitionKey,
             "partition key is not valid Unicode text (surrogates not allowed at 0)"),
            (b"x", "k", 5, ExplicitHashKeyError,
             "explicit hash key must be a decimal str, got int"),
            (None, "k", None, TypeError, "data must be bytes, got NoneType"),
            ("text", "k", None, TypeError, "data must be bytes, got str"),
        ]
        for data, key, ehk, error, message in wrong:
            with pytest.raises(error) as caught:
                await producer.put(data, partition_key=key, explicit_hash_key=ehk)
            assert str(caught.value) == message
            with pytest.raises(error) as caught:
                producer.put_nowait(data, partition_key=key, explicit_hash_key=ehk)
            assert str(caught.value) == message
        after = await producer.put(b"after", partition_key="k")
        await asyncio.gather(good, after)
    assert sorted(d.data for d in fake.delivered()) == [b"after", b"before"]
    assert producer.metrics()["UserRecordsReceived"] == 2


@virtual_time
async def test_bytes_like_data_is_charged_and_delivered_by_its_bytes() -> None:
    fake = EngineKinesis()
    gate = asyncio.Event()
    wide = memoryview(array.array("I", [1, 2, 3, 4]))  # 4 items, 16 bytes
    # Room for b"plain" and a 4-byte record beside it, not for the 16 bytes of `wide`.
    budget = len(b"plain") + 1 + 2 * RECORD_OVERHEAD + 10 + 1
    config = fast(max_buffered_bytes=budget, max_record_size=64, aggregation_max_size=64)
    async with Producer("s", config=config, transport=fake.transport(gate)) as producer:
        first = await producer.put(b"plain", partition_key="k")
        with pytest.raises(BufferFull):
            producer.put_nowait(wide, partition_key="k")  # by its bytes, not its items
        second = producer.put_nowait(memoryview(b"view"), partition_key="k")
        assert producer.buffered_bytes == len(b"plain") + len(b"view") + 2
        gate.set()
        await asyncio.gather(first, second)
        futures = [
            await producer.put(bytearray(b"array"), partition_key="k"),
            await producer.put(wide, partition_key="k"),
        ]
        await asyncio.gather(*futures)
    assert sorted(d.data for d in fake.delivered()) == sorted(
        [b"plain", b"view", b"array", wide.tobytes()]
    )


@virtual_time
async def test_backpressure_put_nowait_and_put() -> None:
    gate = asyncio.Event()
    fake = EngineKinesis()

    config = fast(max_buffered_records=10)
    async with Producer("s", config=config, transport=fake.transport(gate)) as producer:
        futures = [producer.put_nowait(b"x%d" % i, partition_key=f"k{i}") for i in range(10)]
        with pytest.raises(BufferFull):
            producer.put_nowait(b"over", partition_key="k")
        blocked = asyncio.create_task(producer.put(b"waits", partition_key="k"))
        for _ in range(20):
            await asyncio.sleep(0)  # let the sender run: the buffer is still full
        assert not blocked.done()
        assert producer.buffered_records == 10
        gate.set()
        last = await blocked
        await asyncio.gather(*futures, last)
    assert len(fake.delivered()) == 11


@virtual_time
async def test_bad_input_raises_at_once_even_when_the_buffer_is_full() -> None:
    never = asyncio.Event()

    config = fast(max_buffered_records=1, max_record_size=1024, aggregation_max_size=1024,
                  record_ttl=0.2, request_timeout=0.1)
    async with Producer("s", config=config, transport=EngineKinesis().transport(never)) as producer:
        first = producer.put_nowait(b"fills the budget", partition_key="k")
        with pytest.raises(RecordTooLarge):
            await producer.put(b"x" * 2000, partition_key="k")
        with pytest.raises(InvalidPartitionKey):
            await producer.put(b"x", partition_key="")
        with pytest.raises(ValueError, match="hash key"):
            producer.put_nowait(b"x", partition_key="k", explicit_hash_key="01")
        with pytest.raises(BufferFull):
            producer.put_nowait(b"x", partition_key="k")
    with pytest.raises(RecordFailed):
        await first


@virtual_time
async def test_memory_stays_within_budget_under_a_stalled_endpoint() -> None:
    stall = asyncio.Event()

    fake = EngineKinesis()

    config = fast(max_buffered_bytes=64 * 1024, max_record_size=1024, aggregation_max_size=1024,
                  record_ttl=60)
    producer = Producer("s", config=config, transport=fake.transport(stall))
    async with producer:
        putter = asyncio.create_task(put_many(producer, 10_000, keys=100))
        peak = 0
        for _ in range(200):
            await asyncio.sleep(0)
            peak = max(peak, producer.buffered_bytes)
        assert not putter.done()  # blocked by the budget, not buffering without bound
        assert 0 < peak <= 64 * 1024
        putter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await putter
        stall.set()


@virtual_time
async def test_flush_waits_for_what_was_put_before_it() -> None:
    gate = asyncio.Event()
    fake = EngineKinesis()

    config = fast(record_max_buffered_time=60.0, record_ttl=120.0)  # only flush() sends these
    async with Producer("s", config=config, transport=fake.transport(gate)) as producer:
        before = [f for _, _, f in await put_many(producer, 5, keys=5)]
        flushing = asyncio.create_task(producer.flush())
        after = await producer.put(b"later", partition_key="k")
        for _ in range(10):
            await asyncio.sleep(0)
        assert not flushing.done()
        gate.set()
        await flushing
        assert all(f.done() for f in before)
        await producer.flush()
        assert after.done()
    assert len(fake.delivered()) == 6


@virtual_time
async def test_overlapping_flushes_each_wait_for_their_own_records() -> None:
    fake = EngineKinesis()
    holds = {b"A": asyncio.Event(), b"B": asyncio.Event(), b"C": asyncio.Event()}

    async def handler(request: MockRequest) -> Any:
        if request.action == "PutRecords":
            for entry in request.json()["Records"]:
                await holds[base64.b64decode(entry["Data"])].wait()
        return fake.handle(request)

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    config = fast(record_max_buffered_time=60.0, record_ttl=120.0, aggregation_enabled=False)
    async with Producer("s", config=config, transport=MockTransport(handler)) as producer:
        a = await producer.put(b"A", partition_key="a")
        flush_a = asyncio.create_task(producer.flush())
        await settle()
        b = await producer.put(b"B", partition_key="b")
        flush_b = asyncio.create_task(producer.flush())
        await settle()
        c = await producer.put(b"C", partition_key="c")
        flush_c = asyncio.create_task(producer.flush())
        await settle()
        holds[b"B"].set()
        await b
        await settle()
        assert not flush_a.done()  # A is still in flight
        assert not flush_b.done()  # so is A, put before it
        holds[b"A"].set()
        await flush_b
        assert flush_a.done()
        assert a.done()
        assert not flush_c.done()
        holds[b"C"].set()
        await flush_c
        assert c.done()


@virtual_time
async def test_flush_with_nothing_pending_returns() -> None:
    fake = EngineKinesis()
    async with Producer("s", config=FAST, transport=fake.transport()) as producer:
        async with asyncio.timeout(5):
            await producer.flush()
        assert (producer.buffered_records, fake.put_calls) == (0, 0)
        assert producer.metrics()["UserRecordsPut"] == 0


@virtual_time
async def test_close_cannot_hang_on_a_silent_endpoint() -> None:
    never = asyncio.Event()

    async def silent(request: MockRequest) -> Any:
        await never.wait()

    config = fast(record_ttl=0.2, request_timeout=0.2)
    producer = Producer("s", config=config, transport=MockTransport(silent))
    future = await producer.put(b"x", partition_key="k")
    # The record's TTL bounds the close (virtual time), whatever the endpoint does.
    async with asyncio.timeout(config.record_ttl + config.request_timeout):
        await producer.close()
    assert future.done()
    with pytest.raises(RecordFailed):
        future.result()
    with pytest.raises(ProducerClosed):
        await producer.put(b"y", partition_key="k")


@virtual_time
async def test_sender_crash_fails_pending_and_later_calls() -> None:
    fake = EngineKinesis()
    gate = asyncio.Event()

    producer = Producer("s", config=FAST, transport=fake.transport(gate))
    future = await producer.put(b"x", partition_key="k")
    boom = RuntimeError("core bug")

    def broken_poll(now: float) -> Any:
        raise boom

    producer._core.poll = broken_poll  # type: ignore[method-assign]
    producer._sender.wake()
    with pytest.raises(RecordFailed):
        await future
    with pytest.raises(ProducerClosed) as caught:
        await producer.put(b"y", partition_key="k")
    assert caught.value.__cause__ is boom
    with pytest.raises(ProducerClosed):
        await producer.flush()
    await producer.close()


@virtual_time
async def test_unclosed_producer_warns() -> None:
    producer = Producer("s", config=FAST, transport=EngineKinesis().transport())
    producer.start()
    task = producer._task
    assert task is not None
    task.cancel()
    await asyncio.wait({task})
    del producer, task
    with pytest.warns(ResourceWarning, match="unclosed"):
        gc.collect()


@virtual_time
async def test_preserve_order_keeps_per_key_order_under_failures() -> None:
    rng = random.Random(3)

    def fault(entry: dict[str, Any], call: int) -> str | None:
        return "InternalFailure" if rng.random() < 0.3 else None

    fake = EngineKinesis(entry_fault=fault)
    config = fast(preserve_order=True, aggregation_enabled=False)
    async with Producer("s", config=config, transport=fake.transport()) as producer:
        puts = await put_many(producer, 600, keys=6)
        await asyncio.gather(*(f for _, _, f in puts))
    arrived: dict[str, list[bytes]] = defaultdict(list)
    for d in fake.delivered():  # stored in arrival order
        arrived[d.partition_key].append(d.data)
    expected: dict[str, list[bytes]] = defaultdict(list)
    for key, data, _ in puts:
        expected[key].append(data)
    assert arrived == expected


@virtual_time
async def test_reshard_under_load_is_followed() -> None:
    fake = EngineKinesis(shards=2)
    async with Producer("s", config=FAST, transport=fake.transport()) as producer:
        first = await put_many(producer, 500, keys=100)
        await asyncio.gather(*(f for _, _, f in first))
        # Split both shards behind the producer's back: its map is now stale.
        parents = {shard_id for shard_id, _, _ in fake.shard_ranges()}
        fake.split_every_shard()
        second = await put_many(producer, 500, keys=100)
        results = await asyncio.gather(*(f for _, _, f in second))
    ranges = {shard_id: (start, end) for shard_id, start, end in fake.shard_ranges()}
    children = set(ranges) - parents
    assert len(children) == 4

    def holds(shard_id: str, key: str) -> bool:
        start, end = ranges[shard_id]
        return start <= partition_key_hash(key) <= end

    # Every future names a shard that owns the record's hash key ...
    for (key, _, _), result in zip(second, results, strict=True):
        assert result.shard_id in children
        assert holds(result.shard_id, key)
    # ... and every record is stored where a consumer keeps it (a copy that landed in a
    # wrong child shard through the stale map is dropped by consumers and was re-sent).
    kept = {(d.partition_key, d.data)
            for d in fake.delivered() if holds(d.shard_id, d.partition_key)}
    assert {(k, v) for k, v, _ in first + second} <= kept
    stats = producer.metrics()
    assert stats["ShardMapMispredictions"] > 0
    assert fake.list_shards_calls <= 3  # the first map and one refresh, not a storm


def test_run_uses_uvloop_when_installed() -> None:
    import uvloop

    async def main() -> type:
        return type(asyncio.get_running_loop())

    assert run(main()) is uvloop.Loop


@virtual_time
async def test_futures_cancelled_by_their_owner_do_not_disturb_the_others() -> None:
    """Bulk completion skips a cancelled future, plain and during a flush drain."""
    fake = EngineKinesis(shards=2)
    async with Producer("s", config=FAST, transport=fake.transport()) as producer:
        first = [await producer.put(b"a%d" % i, partition_key=f"k{i % 7}") for i in range(200)]
        flushing = asyncio.ensure_future(producer.flush())
        await asyncio.sleep(0)  # the flush starts its epoch and waits
        assert not flushing.done()
        # Put while the flush drains: these records' handles carry their epoch.
        second = [await producer.put(b"b%d" % i, partition_key=f"k{i % 7}") for i in range(200)]
        assert producer._outstanding  # the second batch is tracked by its epoch
        for future in first[::3] + second[::3]:
            future.cancel()
        await flushing
        await producer.flush()
        assert producer.buffered_records == 0
        # No flush draining (the bulk path): runs of cancelled futures among the others.
        third = [await producer.put(b"c%d" % i, partition_key=f"k{i % 7}") for i in range(200)]
        assert not producer._outstanding
        for i, future in enumerate(third):
            if i % 5 in (1, 2):
                future.cancel()
        await producer.flush()
    everything = first + second + third
    kept = [f for f in everything if not f.cancelled()]
    assert len(kept) == 600 - 67 - 67 - 80
    assert all(isinstance(f.result(), RecordResult) for f in kept)
    assert producer.metrics()["UserRecordsPut"] == 600  # sent all the same
    # Skipping a cancelled future keeps the others' results in step: each kept future's
    # (sequence number, sub-sequence number) is where its own data was stored.
    stored = {(d.sequence_number, d.sub_sequence_number): d.data for d in fake.delivered()}
    put_data = [b"%s%d" % (p, i) for p in (b"a", b"b", b"c") for i in range(200)]
    for future, data in zip(everything, put_data, strict=True):
        if not future.cancelled():
            result = future.result()
            assert stored[result.sequence_number, result.sub_sequence_number] == data
