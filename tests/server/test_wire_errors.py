"""Error bodies and texts on the wire: type errors per target type, InvalidArgumentException
texts, and the checks that need no lookup coming before "not found"."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from server.core.errors import SerializationException
from server.core.shapes import Shape, structure
from server.core.validation import validate_shape
from tests.server.wire_support import answer, error
from tests.support import ServerThread

NUMBER = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber"
ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with ServerThread(state_delay_seconds=0.0, limits="off", metrics=False) as thread:
        yield thread.url


def serialization(message: str) -> tuple[int, dict[str, str]]:
    return 400, {"__type": "SerializationException", "Message": message}


def place(path: str, value: Any) -> dict[str, Any]:
    """A body with ``value`` at a dotted member path (``0`` is a list's first element)."""
    body: dict[str, Any] = {}
    node: Any = body
    pieces = path.split(".")
    for piece, following in pairwise(pieces):
        child: Any = [] if following == "0" else {}
        if isinstance(node, list):
            node.append(child)
        else:
            node[piece] = child
        node = child
    if isinstance(node, list):
        node.append(value)
    else:
        node[pieces[-1]] = value
    return body


START_OF_LIST = "Start of list found where not expected"
START_OF_MAP = "Start of structure or map found where not expected."
TYPE_TABLE: dict[str, list[tuple[Any, str]]] = {
    "String": [
        (True, "class java.lang.Boolean can not be converted to an String"),
        (23, f"{NUMBER} can not be converted to an String"),
        (-2147483648, f"{NUMBER} can not be converted to an String"),
        (34.56, f"{NUMBER} can not be converted to an String"),
        ([], START_OF_LIST),
        ({}, START_OF_MAP),
    ],
    "Integer": [
        ("23", "class java.lang.String can not be converted to an Integer"),
        (True, "class java.lang.Boolean can not be converted to an Integer"),
        ([], START_OF_LIST),
        ({}, START_OF_MAP),
    ],
    "Boolean": [
        ("23", "'23' can not be converted to an Boolean"),
        ("yes", "'YES' can not be converted to an Boolean"),
        (23, f"{NUMBER} can not be converted to an Boolean"),
        ([], START_OF_LIST),
        ({}, START_OF_MAP),
    ],
    "Blob": [
        (True, "class java.lang.Boolean can not be converted to a Blob"),
        (23, f"{NUMBER} can not be converted to a Blob"),
        (34.56, f"{NUMBER} can not be converted to a Blob"),
        ([], START_OF_LIST),
        ({}, START_OF_MAP),
        ("23456", "'23456' can not be converted to a Blob: Base64 encoded length is expected a "
                  "multiple of 4 bytes but found: 5"),
        ("=+/=", "'=+/=' can not be converted to a Blob: Invalid Base64 character: '='"),
        ("+/+=", "'+/+=' can not be converted to a Blob: Invalid last non-pad Base64 character "
                 "dectected"),
    ],
    "Timestamp": [
        ("now", "class java.lang.String can not be converted to a Timestamp"),
        (True, "class java.lang.Boolean can not be converted to a Timestamp"),
        ([], START_OF_LIST),
        ({}, START_OF_MAP),
    ],
    "List": [
        ("23", "Expected list or null"),
        (True, "Expected list or null"),
        (23, "Expected list or null"),
        (34.56, "Expected list or null"),
        ({}, START_OF_MAP),
    ],
    "Map": [
        ("23", "Expected map or null"),
        (True, "Expected map or null"),
        (2147483648, "Expected map or null"),
        ([], START_OF_LIST),
    ],
    "Structure": [
        ("23", "Expected null"),
        (True, "Expected null"),
        (23, "Expected null"),
        ([], START_OF_LIST),
    ],
}
MEMBERS = [
    ("CreateStream", "StreamName", "String"),
    ("PutRecords", "Records.0.PartitionKey", "String"),
    ("CreateStream", "ShardCount", "Integer"),
    ("ListStreams", "Limit", "Integer"),
    ("DeleteStream", "EnforceConsumerDeletion", "Boolean"),
    ("PutRecord", "Data", "Blob"),
    ("PutRecords", "Records.0.Data", "Blob"),
    ("GetShardIterator", "Timestamp", "Timestamp"),
    ("RemoveTagsFromStream", "TagKeys", "List"),
    ("PutRecords", "Records", "List"),
    ("AddTagsToStream", "Tags", "Map"),
    ("CreateStream", "StreamModeDetails", "Structure"),
    ("PutRecords", "Records.0", "Structure"),
]


@pytest.mark.parametrize(("action", "path", "kind"), MEMBERS)
def test_type_error_table(url: str, action: str, path: str, kind: str) -> None:
    for value, message in TYPE_TABLE[kind]:
        assert answer(url, action, place(path, value)) == serialization(message), value
    value, message = TYPE_TABLE[kind][-1]
    assert answer(url, action, place(path, value), cbor=True) == serialization(message)


def test_long_members_name_their_type() -> None:
    shape = structure(("N", Shape("long")))
    for value, message in (
        ("23", "class java.lang.String can not be converted to an Long"),
        (False, "class java.lang.Boolean can not be converted to an Long"),
        ([1], START_OF_LIST),
    ):
        with pytest.raises(SerializationException) as info:
            validate_shape(shape, {"N": value})
        assert info.value.message == message
    assert validate_shape(shape, {"N": 2.9}) == {"N": 2}
    assert validate_shape(shape, {"N": -2.5}) == {"N": -3}


def test_other_errors_carry_lower_case_message(url: str) -> None:
    assert answer(url, "DescribeStream", {"StreamName": "absent"}) == error(
        "ResourceNotFoundException", f"Stream absent under account {ACCOUNT} not found."
    )
    assert answer(url, "DescribeStream", {"StreamName": "absent"}, cbor=True) == error(
        "ResourceNotFoundException", f"Stream absent under account {ACCOUNT} not found."
    )
    status, body = answer(url, "ListStreams", {"Limit": 0})
    assert (status, body["__type"], set(body)) == (400, "ValidationException",
                                                   {"__type", "message"})


@pytest.fixture(scope="module")
def stream(url: str) -> str:
    assert answer(url, "CreateStream", {"StreamName": "tagged", "ShardCount": 1}) == (200, None)
    return "tagged"


INVALID_CHARACTERS = (
    "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white "
    "space, _ . / = + - % @."
)


@pytest.mark.parametrize("text", ["a\tb", "a\nb", "line\r", "a;b", "a\x00"])
def test_tag_texts_with_invalid_characters(url: str, stream: str, text: str) -> None:
    for name in (stream, "absent"):
        for tags in ({text: "v"}, {"k": text}):
            assert answer(url, "AddTagsToStream", {"StreamName": name, "Tags": tags}) == error(
                "InvalidArgumentException", INVALID_CHARACTERS
            )
        assert answer(
            url, "RemoveTagsFromStream", {"StreamName": name, "TagKeys": [text]}
        ) == error("InvalidArgumentException", INVALID_CHARACTERS)
    assert answer(url, "CreateStream", {
        "StreamName": "never", "ShardCount": 1, "Tags": {text: "v"}
    }) == error("InvalidArgumentException", INVALID_CHARACTERS)
    # Spaces, letters of any script and the listed punctuation pass.
    assert answer(url, "AddTagsToStream", {
        "StreamName": stream, "Tags": {"a b_.:/=+-@ é字": "v"}
    }) == (200, None)


def test_checks_needing_no_lookup_come_before_not_found(url: str) -> None:
    too_many = {f"k{i}": "v" for i in range(51)}
    assert answer(url, "AddTagsToStream", {"StreamName": "absent", "Tags": too_many}) == error(
        "InvalidArgumentException",
        f"Failed to add tags to stream absent under account {ACCOUNT} because a given stream "
        "cannot have more than 50 tags associated with it.",
    )
    for action in ("IncreaseStreamRetentionPeriod", "DecreaseStreamRetentionPeriod"):
        assert answer(url, action, {"StreamName": "absent", "RetentionPeriodHours": 8761}) == (
            error("InvalidArgumentException",
                  "Maximum allowed retention period is 8760 hours. Requested retention period "
                  "(8761 hours) is too long.")
        )
        assert answer(url, action, {"StreamName": "absent", "RetentionPeriodHours": 23}) == (
            error("InvalidArgumentException",
                  "Minimum allowed retention period is 24 hours. Requested retention period "
                  "(23 hours) is too short.")
        )
    big = str(2**128)
    out_of_range = error(
        "InvalidArgumentException",
        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. "
        f"Specified value was {big}",
    )
    record = {"Data": "", "PartitionKey": "k", "ExplicitHashKey": big}
    assert answer(url, "PutRecord", {"StreamName": "absent", **record}) == out_of_range
    assert answer(url, "PutRecords", {"StreamName": "absent", "Records": [record]}) == out_of_range
    status, body = answer(url, "PutRecord", {**record, "StreamName": "absent",
                                             "ExplicitHashKey": "-1"})
    assert (status, body["__type"]) == (400, "ValidationException")
    assert body["message"].endswith(
        "at 'explicitHashKey' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: 0|([1-9]\\d{0,38})"
    )
    status, body = answer(url, "SplitShard", {
        "StreamName": "absent", "ShardToSplit": "x", "NewStartingHashKey": "a"
    })
    assert (status, body["__type"]) == (400, "ValidationException")
