"""kpl.deaggregate: KPL vectors, the reference aggregator's output, plain records, bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from kpl.consumer import UserRecord, deaggregate, deaggregate_records
from kpl.core.aggregator import Aggregator
from kpl.protocol.aggregation import MAGIC

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "kpl_aggregated_records.json").read_text()
)["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_kpl_vectors(vector: dict[str, Any]) -> None:
    data = base64.b64decode(vector["data"])
    records = deaggregate(data, vector["kinesis_partition_key"], sequence_number="49")
    assert [
        (r.partition_key, r.explicit_hash_key, r.sub_sequence_number, r.data) for r in records
    ] == [
        (
            e["partition_key"],
            e["explicit_hash_key"],
            e["sub_sequence_number"],
            base64.b64decode(e["data"]),
        )
        for e in vector["user_records"]
    ]
    assert all(r.sequence_number == "49" for r in records)
    plain = vector["name"].startswith("magic_but_bad_checksum")
    assert all(r.aggregated is not plain for r in records)


def test_bad_checksum_is_plain_data() -> None:
    vector = next(v for v in VECTORS if v["name"] == "magic_but_bad_checksum_is_plain_data")
    data = base64.b64decode(vector["data"])
    assert data.startswith(MAGIC)
    assert deaggregate(data, "a") == [UserRecord("a", data)]


def test_reference_aggregator_output() -> None:
    reference = RecordAggregator()
    for i in range(50):
        reference.add_user_record(f"pk{i % 7}", f"data {i}".encode(), None)
    pk, _ehk, data = reference.clear_and_get().get_contents()
    records = deaggregate(data, pk)
    assert [(r.partition_key, r.data, r.sub_sequence_number) for r in records] == [
        (f"pk{i % 7}", f"data {i}".encode(), i) for i in range(50)
    ]


def test_plain_record_keeps_its_keys() -> None:
    assert deaggregate(b"hello", "k", "42", "7") == [UserRecord("k", b"hello", "42", "7", 0)]


def test_get_records_dicts_bytes_and_base64() -> None:
    aggregator = Aggregator(51_200, 100)
    aggregator.try_add("x", None, b"1")
    aggregator.try_add("y", "5", b"2")
    aggregated = aggregator.serialize()
    boto_style = [
        {"Data": aggregated, "PartitionKey": "a", "SequenceNumber": "1"},
        {"Data": b"plain", "PartitionKey": "p", "SequenceNumber": "2"},
    ]
    json_style = [{**r, "Data": base64.b64encode(r["Data"]).decode()} for r in boto_style]
    expected = [
        UserRecord("x", b"1", None, "1", 0, True),
        UserRecord("y", b"2", "5", "1", 1, True),
        UserRecord("p", b"plain", None, "2", 0, False),
    ]
    assert deaggregate_records(boto_style) == expected
    assert deaggregate_records(json_style) == expected


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"PartitionKey": "a"}, "missing 'Data'"),
        ({"Data": b"x"}, "missing 'PartitionKey'"),
        ({"Data": "not base64!", "PartitionKey": "a"}, "not valid base64"),
    ],
)
def test_bad_records_are_rejected_clearly(record: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deaggregate_records([record])


def test_data_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        deaggregate("text", "a")  # type: ignore[arg-type]


def test_raw_data_needs_a_partition_key() -> None:
    with pytest.raises(TypeError, match="partition_key"):
        deaggregate(b"x")


def test_deaggregate_takes_a_record_dict() -> None:
    aggregator = Aggregator(51_200, 100)
    aggregator.try_add("x", None, b"1")
    aggregator.try_add("y", None, b"2")
    record = {"Data": aggregator.serialize(), "PartitionKey": "a", "SequenceNumber": "9"}
    assert deaggregate(record) == [
        UserRecord("x", b"1", None, "9", 0, True),
        UserRecord("y", b"2", None, "9", 1, True),
    ]
