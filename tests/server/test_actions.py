"""The action registry: one entry per modelled action, read by every part of the server."""

from __future__ import annotations

import random
import re
from operator import attrgetter
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.config import ServerConfig
from server.core.actions import ACTIONS, BY_TARGET, STREAM, ControlRate, EventCategory
from server.core.calls import NO_CONTEXT, Reply, RequestContext, Result
from server.core.engine import Engine, EngineConfig
from server.core.errors import UnknownOperationException
from server.core.throughput import CONTROL_RATES, Throughput
from server.storage.memory import MemoryStorage
from server.web.app import TARGETS, make_app
from tests.server.test_wire import AUTH

T0 = 1_800_000_000.0
DATA_ACTIONS = {"PutRecord", "PutRecords", "GetRecords", "GetShardIterator", "SubscribeToShard"}


def engine() -> Engine:
    return Engine(EngineConfig(state_delay_seconds=0.0), MemoryStorage(), random.Random(3))


def test_every_modelled_action_has_one_entry() -> None:
    model = botocore.session.get_session().get_service_model("kinesis")
    assert set(ACTIONS) == set(model.operation_names)
    assert set(TARGETS) == {f"Kinesis_20131202.{name}" for name in model.operation_names}
    for target, name in TARGETS.items():
        assert BY_TARGET[target] is ACTIONS[name]
        assert ACTIONS[name].target == target


def test_every_target_the_engine_answers_has_a_handler_and_a_shape() -> None:
    eng = engine()
    answered = {name for name, action in ACTIONS.items() if action.implemented}
    assert eng.actions == answered
    assert len(answered) == 33
    for name in answered:
        action = ACTIONS[name]
        assert action.handler is not None
        assert action.input is not None
        assert callable(attrgetter(action.handler)(eng))
    assert not ACTIONS["CreateChannel"].implemented
    assert ACTIONS["CreateChannel"].input is None


@pytest.mark.parametrize(
    ("name", "durable", "read_only", "rate", "category"),
    [
        ("PutRecords", True, False, None, EventCategory.DATA),
        ("GetRecords", False, True, None, EventCategory.DATA),
        ("GetShardIterator", False, True, ControlRate(5, STREAM), EventCategory.DATA),
        ("CreateStream", True, False, ControlRate(5), EventCategory.MANAGEMENT),
        ("ListShards", False, True, ControlRate(1000, STREAM), EventCategory.MANAGEMENT),
        ("IncreaseStreamRetentionPeriod", True, False, None, EventCategory.MANAGEMENT),
        ("DescribeLimits", False, True, ControlRate(1), EventCategory.MANAGEMENT),
        ("SubscribeToShard", False, True, ControlRate(1, STREAM), EventCategory.DATA),
        ("RegisterStreamConsumer", True, False, ControlRate(5), EventCategory.MANAGEMENT),
        ("DescribeStreamConsumer", False, True, ControlRate(20, STREAM), EventCategory.MANAGEMENT),
    ],
)
def test_entry_fields(
    name: str, durable: bool, read_only: bool, rate: ControlRate | None, category: str
) -> None:
    action = ACTIONS[name]
    assert (action.durable, action.read_only, action.control_rate) == (durable, read_only, rate)
    assert action.category == category
    assert action.iam_action == f"kinesis:{name}"
    assert action.control_plane is (category == "Management")


def test_data_events_are_the_record_calls() -> None:
    assert {n for n, a in ACTIONS.items() if a.category is EventCategory.DATA} == DATA_ACTIONS
    assert {str(c) for c in EventCategory} == {"Data", "Management"}


def test_durable_means_a_change_for_every_answered_action() -> None:
    for action in ACTIONS.values():
        if action.implemented:
            assert action.durable is not action.read_only, action.name


def test_throughput_reads_its_control_rates_from_the_registry() -> None:
    assert {
        name: action.control_rate
        for name, action in ACTIONS.items()
        if action.control_rate is not None
    } == CONTROL_RATES


def test_engine_throttles_exactly_the_management_calls() -> None:
    """Every control-plane call asks the gate; the record calls never go through it."""
    asked: list[str] = []

    class Recording(Throughput):
        def admit_control(self, action: str, stream_name: str | None, now: float) -> bool:
            asked.append(action)
            return super().admit_control(action, stream_name, now)

    eng = Engine(
        EngineConfig(state_delay_seconds=0.0),
        MemoryStorage(),
        random.Random(3),
        throughput=Recording(),
    )
    eng.handle("CreateStream", {"StreamName": "s", "ShardCount": 1}, T0)
    eng.handle("IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 48}, T0)
    eng.handle("PutRecord", {"StreamName": "s", "Data": "eA==", "PartitionKey": "k"}, T0)
    entries = [{"Data": "", "PartitionKey": "k"}]
    eng.handle("PutRecords", {"StreamName": "s", "Records": entries}, T0)
    eng.handle(
        "GetShardIterator",
        {"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "LATEST"},
        T0,
    )
    # GetShardIterator's rate is applied per shard, under its own name and key.
    assert asked == ["CreateStream", "IncreaseStreamRetentionPeriod", "GetShardIterator"]


def test_handle_answers_a_reply_and_accepts_a_context() -> None:
    eng = engine()
    created = eng.handle("CreateStream", {"StreamName": "s", "ShardCount": 1}, T0)
    assert created == Reply(None)
    context = RequestContext("req-1", None, "127.0.0.1", "test/1.0")
    listed = eng.handle("ListStreams", {}, T0, context=context)
    assert isinstance(listed, Reply)
    assert listed.body is not None
    assert listed.body["StreamNames"] == ["s"]
    assert RequestContext() == NO_CONTEXT
    with pytest.raises(UnknownOperationException):
        eng.handle("CreateChannel", {}, T0, context=context)


async def _client(eng: Engine, config: ServerConfig) -> TestClient[Any, Any]:
    app = make_app(eng, config, lambda: T0)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_app_dispatches_from_the_registry_and_passes_the_context() -> None:
    eng = engine()
    seen: list[tuple[str, RequestContext]] = []
    handle = eng.handle

    def spy(action: str, body: Any, now: float, *, context: RequestContext = NO_CONTEXT) -> Result:
        seen.append((action, context))
        return handle(action, body, now, context=context)

    eng.handle = spy  # type: ignore[method-assign]
    durable_waits = 0
    wait_durable = eng.storage.wait_durable

    async def counting_wait() -> None:
        nonlocal durable_waits
        durable_waits += 1
        await wait_durable()

    eng.storage.wait_durable = counting_wait  # type: ignore[method-assign]
    client = await _client(eng, ServerConfig())
    try:
        headers = {**AUTH, "User-Agent": "registry-test/1.0"}
        create = {**headers, "X-Amz-Target": ACTIONS["CreateStream"].target}
        async with client.post("/", data=b'{"StreamName":"s","ShardCount":1}', headers=create) as r:
            assert r.status == 200
            request_id = r.headers["x-amzn-RequestId"]
        assert durable_waits == 1  # CreateStream is durable
        describe = {**headers, "X-Amz-Target": ACTIONS["DescribeLimits"].target}
        async with client.post("/", data=b"{}", headers=describe) as r:
            assert r.status == 200
        assert durable_waits == 1  # DescribeLimits is not
        # Modelled but not answered: the service's unknown-operation answer.
        subscribe = {**headers, "X-Amz-Target": ACTIONS["CreateChannel"].target}
        async with client.post("/", data=b"{}", headers=subscribe) as r:
            assert r.status == 400
            assert await r.json(content_type=None) == {"__type": "UnknownOperationException"}
    finally:
        await client.close()
    assert [action for action, _ in seen] == ["CreateStream", "DescribeLimits"]
    context = seen[0][1]
    assert context.request_id == request_id
    assert context.user_agent == "registry-test/1.0"
    assert context.source_address == "127.0.0.1"
    assert context.principal is None
    assert seen[1][1].request_id not in ("", request_id)



def test_the_readme_lists_exactly_the_targets_not_answered() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    paragraph = readme.split("**Not answered**", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"\b[A-Z][A-Za-z]+[a-z]\b", paragraph)) - {"UnknownOperationException"}
    assert listed == {name for name, action in ACTIONS.items() if not action.implemented}
