"""Enhanced fan-out against the real stream server: registration, renewed subscriptions,
shared shards and hand-over, a deregistered consumer, a lost lease, damaged streams.

The end-to-end tests of ``test_consumer_e2e.py`` (delivery, sub-record resume, split and
merge lineage, graceful hand-over) run in both retrieval modes; these cover what only
fan-out has.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from kpl.client import KinesisClient, _subscription_events
from kpl.consumer import Batch, Consumer, ConsumerConfig, LeaseLost, UserRecord
from kpl.consumer.fanout import FanOutRetrieval
from kpl.consumer.leases.memory import MemoryLeaseStore
from kpl.errors import MalformedResponse, ResourceNotFoundException
from kpl.protocol.eventstream import encode_event, encode_exception
from kpl.protocol.hashing import partition_key_hash
from kpl.transport import MockTransport
from server import StreamServer
from server.core.subscription import LIFETIME_SECONDS
from tests.kpl.consumer.conftest_reading import (  # noqa: F401  (fixtures)
    lease_url,
    make_stream,
    put_aggregate,
    server_url,
)

FAST = {
    "failover_time": 1.0,
    "idle_time_between_reads": 0.02,
    "initial_position": "TRIM_HORIZON",
    "retrieval": "fanout",
}


def _config(worker: str, **overrides: object) -> ConsumerConfig:
    return ConsumerConfig(worker_id=worker, **{**FAST, **overrides})  # type: ignore[arg-type]


async def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until ``condition`` holds, at most ``seconds``: for states the consumer exposes
    only as numbers (leases held, subscriptions open), with no event to await."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def _collect(consumer: Consumer, count: int) -> list[UserRecord]:
    got: list[UserRecord] = []
    with anyio.fail_after(20):
        async for batch in consumer:
            got.extend(batch.records)
            await batch.checkpoint()
            if len(got) >= count:
                break
    return got


# --------------------------------------------------------------------------- registration


async def test_workers_racing_to_register_share_one_consumer() -> None:
    # Consumers take a while to become ACTIVE here, as they do on the service.
    async with StreamServer(port=0, state_delay_seconds=0.2) as server:
        setup = await make_stream(server.url, "race", 1)
        clients = [KinesisClient(server.url, region="us-east-1") for _ in range(5)]
        arns: list[str] = []
        try:
            retrievals = [
                FanOutRetrieval(c, "race", _config(f"w{i}"), "billing")
                for i, c in enumerate(clients)
            ]

            async def register(retrieval: FanOutRetrieval) -> None:
                arns.append(await retrieval.register())

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for retrieval in retrievals:
                        tg.start_soon(register, retrieval)
            stream_arn = (await setup.describe_stream_summary("race"))["StreamARN"]
            listed = await setup.call("ListStreamConsumers", {"StreamARN": stream_arn})
        finally:
            for c in clients:
                await c.close()
            await setup.close()
    assert len(set(arns)) == 1
    assert [(c["ConsumerName"], c["ConsumerStatus"]) for c in listed["Consumers"]] == [
        ("billing", "ACTIVE")
    ]
    assert listed["Consumers"][0]["ConsumerARN"] == arns[0]


async def test_an_existing_consumer_is_used_and_named_after_the_application(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
) -> None:
    client = await make_stream(server_url, "known", 1)
    try:
        stream_arn = (await client.describe_stream_summary("known"))["StreamARN"]
        existing = await client.register_stream_consumer(stream_arn, "billing")
        async with Consumer(
            "known", application="billing", endpoint_url=server_url, leases=lease_url,
            config=_config("w1"),
        ) as consumer:
            assert consumer.metrics()["retrieval"]["consumer_arn"] == existing["ConsumerARN"]
        named = _config("w1", consumer_name="billing-v2")
        async with Consumer(
            "known", application="billing", endpoint_url=server_url, leases=lease_url,
            config=named,
        ) as consumer:
            arn = consumer.metrics()["retrieval"]["consumer_arn"]
        described = await client.describe_stream_consumer(consumer_arn=arn)
    finally:
        await client.close()
    assert described["ConsumerName"] == "billing-v2"


def test_names_the_service_would_refuse_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="'billing app' is not a stream consumer name"):
        Consumer("s", application="billing app", config=_config("w1"))
    with pytest.raises(ValueError, match="is not a stream consumer name"):
        ConsumerConfig(retrieval="fanout", consumer_name="x" * 129)
    with pytest.raises(ValueError, match="retrieval must be 'polling' or 'fanout'"):
        ConsumerConfig(retrieval="push")  # type: ignore[arg-type]
    # Polling needs no consumer name.
    Consumer("s", application="billing app", config=_config("w1", retrieval="polling"))


async def test_a_client_that_cannot_stream_fails_at_start(lease_url: str) -> None:  # noqa: F811
    client = KinesisClient(transport=MockTransport(lambda request: {"Shards": []}))
    consumer = Consumer("s", application="app", leases=lease_url, client=client,
                        config=_config("w1"))  # fmt: skip
    with pytest.raises(TypeError, match="needs a transport that streams"):
        async with consumer:
            pass
    await client.close()


async def test_a_stream_that_does_not_exist_fails_at_start(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
) -> None:
    with pytest.raises(ResourceNotFoundException):
        async with Consumer(
            "nowhere", application="app", endpoint_url=server_url, leases=lease_url,
            config=_config("w1"),
        ):
            pass


# --------------------------------------------------------------------------- subscriptions


async def test_an_ended_subscription_is_renewed_from_its_continuation(lease_url: str) -> None:  # noqa: F811
    # The server's clock is injected: moving it past a subscription's lifetime ends the
    # subscription at the next record, with no five-minute wait.
    offset = [0.0]
    async with StreamServer(
        port=0, state_delay_seconds=0.0, clock=lambda: time.time() + offset[0]
    ) as server:
        client = await make_stream(server.url, "renew", 1)
        try:
            for i in range(3):
                await client.put_record("renew", f"before-{i}".encode(), "k")
            async with Consumer(
                "renew", application="app", endpoint_url=server.url, leases=lease_url,
                config=_config("w1"),
            ) as consumer:
                first = await _collect(consumer, 3)
                assert consumer.metrics()["retrieval"]["subscriptions"] == 1
                offset[0] += LIFETIME_SECONDS + 1
                for i in range(3):
                    await client.put_record("renew", f"after-{i}".encode(), "k")
                second = await _collect(consumer, 3)
                retrieval = consumer.metrics()["retrieval"]
        finally:
            await client.close()
    assert [r.data for r in first] == [f"before-{i}".encode() for i in range(3)]
    assert [r.data for r in second] == [f"after-{i}".encode() for i in range(3)]
    assert retrieval["subscriptions"] == 2
    assert retrieval["failures"] == 0


async def test_a_shard_another_subscription_holds_is_retried_until_taken_over(
    lease_url: str,  # noqa: F811
) -> None:
    # As right after a hand-over: the previous holder's subscription is still live, and
    # the service refuses a new one (ResourceInUseException) until it is 5 s old.
    offset = [0.0]
    async with StreamServer(
        port=0, state_delay_seconds=0.0, clock=lambda: time.time() + offset[0]
    ) as server:
        client = await make_stream(server.url, "held", 1)
        try:
            await client.put_record("held", b"r0", "k")
            stream_arn = (await client.describe_stream_summary("held"))["StreamARN"]
            arn = (await client.register_stream_consumer(stream_arn, "app"))["ConsumerARN"]
            async with (
                client.subscribe_to_shard(
                    arn, "shardId-000000000000", {"Type": "LATEST"}
                ) as _previous,
                Consumer(
                    "held", application="app", endpoint_url=server.url, leases=lease_url,
                    config=_config("w1"),
                ) as consumer,
            ):
                delivered: list[UserRecord] = []

                async def read() -> None:
                    delivered.extend(await _collect(consumer, 1))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    await _eventually(lambda: consumer.metrics()["retrieval"]["failures"] >= 2)
                    assert not delivered
                    offset[0] += 5  # the holder's subscription is now old enough to take over
        finally:
            await client.close()
    assert [r.data for r in delivered] == [b"r0"]


@pytest.mark.parametrize("retrieval", ["polling", "fanout"])
async def test_a_fresh_lease_starts_at_the_initial_timestamp(
    lease_url: str,  # noqa: F811
    retrieval: str,
) -> None:
    # The server's clock jumps between two groups of records, so a time between them
    # is exact.
    offset = [0.0]
    async with StreamServer(
        port=0, state_delay_seconds=0.0, clock=lambda: time.time() + offset[0]
    ) as server:
        client = await make_stream(server.url, "when", 1)
        try:
            for i in range(3):
                await client.put_record("when", f"old-{i}".encode(), "k")
            between = time.time() + offset[0] + 5
            offset[0] += 10
            for i in range(3):
                await client.put_record("when", f"new-{i}".encode(), "k")
            config = _config(
                "w1", initial_position="AT_TIMESTAMP", initial_timestamp=between,
                retrieval=retrieval,
            )
            async with Consumer(
                "when", application="app", endpoint_url=server.url, leases=lease_url,
                config=config,
            ) as consumer:
                got = await _collect(consumer, 3)
        finally:
            await client.close()
    assert [r.data for r in got] == [f"new-{i}".encode() for i in range(3)]


@pytest.mark.parametrize("retrieval", ["polling", "fanout"])
async def test_sub_records_outside_the_shard_read_are_dropped(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
    retrieval: str,
) -> None:
    client = await make_stream(server_url, "ranges", 2)
    keys = [f"sub-{i}" for i in range(8)]
    low = [k for k in keys if partition_key_hash(k) < 2**127]
    assert 0 < len(low) < len(keys)
    try:
        # Aggregated against an outdated map: every sub-record sent to the first shard.
        await put_aggregate(client, "ranges", keys, [k.encode() for k in keys], 0)
        await client.put_record("ranges", b"marker", "m", "0")
        async with Consumer(
            "ranges", application="app", endpoint_url=server_url, leases=lease_url,
            config=_config("w1", retrieval=retrieval),
        ) as consumer:
            got = await _collect(consumer, len(low) + 1)
    finally:
        await client.close()
    assert [r.data for r in got] == [k.encode() for k in low] + [b"marker"]
    assert [r.sub_sequence_number for r in got[:-1]] == [keys.index(k) for k in low]


async def test_a_deregistered_consumer_is_registered_again_and_nothing_is_lost(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
) -> None:
    client = await make_stream(server_url, "dereg", 2)
    try:
        for i in range(10):
            await client.put_record("dereg", f"r{i}".encode(), f"key-{i}")
        async with Consumer(
            "dereg", application="app", endpoint_url=server_url, leases=lease_url,
            config=_config("w1"),
        ) as consumer:
            first = await _collect(consumer, 10)
            old = consumer.metrics()["retrieval"]["consumer_arn"]
            # Both live subscriptions get a ResourceNotFoundException event.
            await client.deregister_stream_consumer(consumer_arn=old)
            for i in range(10, 20):
                await client.put_record("dereg", f"r{i}".encode(), f"key-{i}")
            second = await _collect(consumer, 10)
            retrieval = consumer.metrics()["retrieval"]
        stream_arn = (await client.describe_stream_summary("dereg"))["StreamARN"]
        again = await client.describe_stream_consumer(stream_arn=stream_arn, consumer_name="app")
    finally:
        await client.close()
    delivered = Counter(r.data for r in first + second)
    assert delivered == Counter(f"r{i}".encode() for i in range(20))
    # Registered again (its ARN names the second it was created in, so it may repeat).
    assert again["ConsumerStatus"] == "ACTIVE"
    assert retrieval["consumer_arn"] == again["ConsumerARN"]
    assert retrieval["failures"] >= 2


async def test_two_workers_share_the_shards_and_one_leaving_hands_them_over(
    server_url: str,  # noqa: F811
    lease_url: str,  # noqa: F811
) -> None:
    client = await make_stream(server_url, "shared", 4)
    shards_by_worker: dict[str, set[str]] = defaultdict(set)
    got: list[UserRecord] = []
    phase = [0]
    enough = [anyio.Event(), anyio.Event()]

    def handler(worker: str) -> Callable[[Batch], object]:
        async def handle(batch: Batch) -> None:
            shards_by_worker[f"{worker}:{phase[0]}"].add(batch.shard_id)
            got.extend(batch.records)
            if len({r.data for r in got}) >= 40 * (phase[0] + 1):
                enough[phase[0]].set()

        return handle

    args = {"application": "app", "endpoint_url": server_url, "leases": lease_url}
    try:
        for i in range(40):
            await client.put_record("shared", f"a{i}".encode(), f"key-{i}")
        async with anyio.create_task_group() as tg:
            two = Consumer("shared", config=_config("w2"), **args)  # type: ignore[arg-type]
            await two.__aenter__()
            try:
                async with Consumer("shared", config=_config("w1"), **args) as one:  # type: ignore[arg-type]
                    tg.start_soon(one.run, handler("w1"))
                    tg.start_soon(two.run, handler("w2"))
                    # The two balance to two shards each before the first one leaves.
                    await _eventually(
                        lambda: one.metrics()["leases"]["held"] == 2
                        and two.metrics()["leases"]["held"] == 2,
                        20,
                    )
                    with anyio.fail_after(20):
                        await enough[0].wait()
                    one.shutdown()
                phase[0] = 1
                # w1 released its leases on leaving: w2 takes them and subscribes again
                # (refused while w1's subscriptions still hold the shards, then granted).
                for i in range(40):
                    await client.put_record("shared", f"b{i}".encode(), f"key-{i}")
                with anyio.fail_after(30):
                    await enough[1].wait()
                two.shutdown()
            finally:
                await two.aclose()
    finally:
        await client.close()
    assert {r.data for r in got} == {f"{p}{i}".encode() for p in "ab" for i in range(40)}
    assert len(shards_by_worker["w2:1"]) == 4
    # First deliveries are in stream order per shard.
    positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    seen: set[bytes] = set()
    for r in got:
        if r.data not in seen:
            seen.add(r.data)
            assert r.shard_id is not None
            assert r.sequence_number is not None
            positions[r.shard_id].append((int(r.sequence_number), r.sub_sequence_number))
    assert all(p == sorted(p) for p in positions.values())


async def test_a_lost_lease_closes_its_subscription_at_once(server_url: str) -> None:  # noqa: F811
    client = await make_stream(server_url, "fence", 2)
    store = MemoryLeaseStore()
    config = _config("me", failover_time=60.0)
    try:
        await client.put_record("fence", b"first", "k", "0")
        async with Consumer(
            "fence", application="a", endpoint_url=server_url, leases=store, config=config
        ) as consumer:
            with anyio.fail_after(20):
                batch = await consumer.__anext__()
            assert batch.shard_id == "shardId-000000000000"
            await _eventually(lambda: consumer.metrics()["retrieval"]["open"] == 2)
            lease = await store.get_lease("shardId-000000000000")
            assert lease is not None
            assert await store.replace_lease(lease.next(lease_owner="thief"), lease.lease_counter)
            with pytest.raises(LeaseLost):
                await batch.checkpoint()
            # Long before the 60 s failover time, and with no record to read.
            await _eventually(lambda: consumer.metrics()["retrieval"]["open"] == 1, 5)
            await client.put_record("fence", b"lost", "k", "0")
            await client.put_record("fence", b"kept", "k", str(2**127 + 1))
            with anyio.fail_after(20):
                nxt = await consumer.__anext__()
            assert [r.data for r in nxt.records] == [b"kept"]
    finally:
        await client.close()
        await store.close()


# --------------------------------------------------------------------------- the wire


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _events(*parts: bytes) -> list[dict[str, object]]:
    return [e async for e in _subscription_events(_chunks(*parts))]


INITIAL = encode_event("initial-response", b"{}", "application/json")


async def test_events_are_decoded_with_their_data() -> None:
    event = encode_event(
        "SubscribeToShardEvent",
        b'{"Records":[{"Data":"aGk=","PartitionKey":"k","SequenceNumber":"1"}],'
        b'"ContinuationSequenceNumber":"1","MillisBehindLatest":0}',
        "application/json",
    )
    (only,) = await _events(INITIAL[:5], INITIAL[5:] + event[:20], event[20:])
    assert only["Records"] == [{"Data": b"hi", "PartitionKey": "k", "SequenceNumber": "1"}]


async def test_a_damaged_frame_is_a_malformed_response_naming_the_checksum() -> None:
    event = bytearray(encode_event("SubscribeToShardEvent", b'{"Records":[]}', "application/json"))
    event[-5] ^= 0xFF
    with pytest.raises(MalformedResponse, match=r"message checksum mismatch"):
        await _events(INITIAL, bytes(event))


async def test_an_exception_event_raises_its_error() -> None:
    gone = encode_exception(
        "ResourceNotFoundException", b'{"message":"Consumer x not found."}', "application/json"
    )
    with pytest.raises(ResourceNotFoundException, match="Consumer x not found"):
        await _events(INITIAL, gone)


async def test_a_stream_must_start_with_the_initial_response_and_end_on_a_message() -> None:
    event = encode_event("SubscribeToShardEvent", b"{}", "application/json")
    with pytest.raises(MalformedResponse, match="not initial-response"):
        await _events(event)
    with pytest.raises(MalformedResponse, match="ended inside a message"):
        await _events(INITIAL, event[:10])
