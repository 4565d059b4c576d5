"""A request validated ahead (``Engine.validate``, as the web layer does off the loop for
large bodies) is answered exactly as the same body given to ``Engine.handle``."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from server.core.calls import Reply, Validated
from server.core.engine import Engine, EngineConfig
from server.core.errors import KinesisError
from server.core.validation import validate
from server.storage.memory import MemoryStorage

T0 = 1_800_000_000.0


def engine() -> Engine:
    eng = Engine(EngineConfig(state_delay_seconds=0.0), MemoryStorage(), random.Random(5))
    eng.handle("CreateStream", {"StreamName": "s", "ShardCount": 2}, T0)
    return eng


def outcome(eng: Engine, action: str, body: Any, *, ahead: bool) -> tuple[str, Any]:
    try:
        request = eng.validate(action, body) if ahead else body
        result = eng.handle(action, request, T0 + 1)
    except KinesisError as error:
        return error.code, error.message
    assert isinstance(result, Reply)
    return "ok", result.body


RECORDS = [{"Data": base64.b64encode(b"r%d" % i).decode(), "PartitionKey": f"k{i}"}
           for i in range(20)]
BODIES = [
    ("PutRecords", {"StreamName": "s", "Records": RECORDS}),
    ("PutRecords", {"StreamName": "s", "Records": [*RECORDS, {"Data": 5, "PartitionKey": "k"}]}),
    ("PutRecords", {"StreamName": "s", "Records": [{"Data": "aGk=", "PartitionKey": ""}] * 3}),
    ("PutRecords", {"StreamName": "absent", "Records": RECORDS}),
    ("PutRecords", {"StreamName": "s", "Records": [{}] * 6000}),
    ("PutRecord", {"StreamName": "s", "Data": "aGk=", "PartitionKey": "k", "Extra": [1]}),
    ("AddTagsToStream", {"StreamName": "s", "Tags": {"a": "1", "b": "2"}}),
    ("AddTagsToStream", {"StreamName": "s", "Tags": {f"k{i}": "v" for i in range(3000)}}),
    ("ListShards", {"StreamName": "s", "MaxResults": 0}),
    ("DescribeStreamSummary", {"StreamName": "s"}),
]


@pytest.mark.parametrize(("action", "body"), BODIES)
def test_validated_ahead_is_answered_as_validated_in_turn(action: str, body: Any) -> None:
    inline = outcome(engine(), action, body, ahead=False)
    ahead = outcome(engine(), action, body, ahead=True)
    assert ahead == inline


def test_a_validated_request_is_not_validated_again() -> None:
    eng = engine()
    checked = eng.validate("PutRecord", {"StreamName": "s", "Data": "aGk=", "PartitionKey": "k"})
    assert checked == Validated("PutRecord", {"StreamName": "s", "Data": b"hi",
                                              "PartitionKey": "k"})
    answer = eng.handle("PutRecord", checked, T0 + 1)
    assert isinstance(answer, Reply)
    assert answer.body is not None
    assert answer.body["ShardId"].startswith("shardId-")


def test_a_map_far_over_its_limit_is_reported_by_its_size_alone() -> None:
    body = {"StreamName": "s", "Tags": {f"k{i}": ("v" if i else 7) for i in range(2001)}}
    with pytest.raises(KinesisError) as caught:
        validate("AddTagsToStream", body)
    assert caught.value.code == "ValidationException"
    message = caught.value.message
    assert message.startswith("1 validation error detected: Value '{k0=7, k1=v, k2=v, ")
    assert message.endswith(
        "' at 'tags' failed to satisfy constraint: Member must have length less than or "
        "equal to 200"
    )
    assert len(message) < 1024
    # Within ten times its limit, every value is still converted and checked.
    del body["Tags"]["k2000"]
    with pytest.raises(KinesisError) as caught:
        validate("AddTagsToStream", body)
    assert caught.value.code == "SerializationException"
