"""KPL aggregated records: byte-exact encoding, decoding, size accounting, reference peer."""

from __future__ import annotations

import base64
import json
import random
from hashlib import md5
from pathlib import Path
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records as reference_deaggregate

from kpl.core.aggregator import EMPTY_SIZE, Aggregator
from kpl.protocol.aggregation import (
    DATA_HEADERS,
    DIGEST_SIZE,
    MAGIC,
    PARTITION_KEY_ENTRY_HEADERS,
    PARTITION_KEY_INDEX_FIELDS,
    RECORD_HEADERS,
    SMALL_VARINT_LIMIT,
    AggregatedRecordMessage,
    DecodedRecord,
    SubRecord,
    decode,
    encode,
    encode_sub_record,
    encode_varint,
    frame,
    partition_key_entry,
    varint_size,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors" / "kpl_aggregated_records.json").read_text()
)["vectors"]


def _random_key(rng: random.Random) -> str:
    return "".join(rng.choice("abcxyz0é€😀") for _ in range(rng.choice([1, 2, 7, 40, 256])))


def _protobuf_encode(added: list[tuple[str, str | None, bytes]]) -> bytes:
    """The aggregated record of ``added`` as the protobuf library serialises it."""
    message = AggregatedRecordMessage()
    pks = list(dict.fromkeys(pk for pk, _, _ in added))
    ehks = list(dict.fromkeys(ehk for _, ehk, _ in added if ehk is not None))
    message.partition_key_table.extend(pks)
    message.explicit_hash_key_table.extend(ehks)
    for pk, ehk, data in added:
        sub = message.records.add()
        sub.partition_key_index = pks.index(pk)
        if ehk is not None:
            sub.explicit_hash_key_index = ehks.index(ehk)
        sub.data = data
    return frame(message.SerializeToString())


def _aggregate(added: list[tuple[str, str | None, bytes]]) -> bytes:
    aggregator = Aggregator(1 << 30, 2**32 - 1)
    for pk, ehk, data in added:
        assert aggregator.try_add(pk, ehk, data)
    data = aggregator.serialize()
    assert aggregator.size == len(data)
    return data


def _reference_decode(data: bytes, partition_key: str = "a") -> list[dict[str, Any]]:
    record = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": "1",
            "approximateArrivalTimestamp": 0,
            "partitionKey": partition_key,
            "data": base64.b64encode(data).decode(),
        }
    }
    return [r["kinesis"] for r in reference_deaggregate([record])]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2**32, b"\x80\x80\x80\x80\x10"),
    ],
)
def test_varints(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert varint_size(value) == len(encoded)


def test_hand_encoder_is_byte_identical_to_protobuf() -> None:
    rng = random.Random(7)
    for _ in range(150):
        pks = [_random_key(rng) for _ in range(rng.randint(1, 20))]
        ehks = [str(rng.getrandbits(128)) for _ in range(rng.randint(0, 5))]
        added = [
            (
                rng.choice(pks),
                rng.choice(ehks) if ehks and rng.random() < 0.5 else None,
                rng.randbytes(rng.choice([0, 1, 100, 200, 20000])),
            )
            for _ in range(rng.randint(1, 60))
        ]
        ours = _aggregate(added)
        assert ours == _protobuf_encode(added)
        assert ours.startswith(MAGIC)
        assert ours[-DIGEST_SIZE:] == md5(ours[len(MAGIC) : -DIGEST_SIZE]).digest()


def test_whole_record_encoder_matches_protobuf_and_the_aggregator() -> None:
    rng = random.Random(11)
    for _ in range(50):
        pks = [_random_key(rng) for _ in range(rng.randint(1, 8))]
        ehks = [str(rng.getrandbits(128)) for _ in range(rng.randint(0, 3))]
        added = [
            (rng.choice(pks), rng.choice(ehks) if ehks and rng.random() < 0.5 else None,
             rng.randbytes(rng.choice([0, 1, 300])))
            for _ in range(rng.randint(1, 20))
        ]
        pk_table = list(dict.fromkeys(pk for pk, _, _ in added))
        ehk_table = list(dict.fromkeys(ehk for _, ehk, _ in added if ehk is not None))
        records = [
            SubRecord(pk_table.index(pk), None if ehk is None else ehk_table.index(ehk), data)
            for pk, ehk, data in added
        ]
        ours = encode(pk_table, ehk_table, records)
        assert ours == _protobuf_encode(added) == _aggregate(added)


def test_encode_sub_record_matches_protobuf_field() -> None:
    message = AggregatedRecordMessage()
    sub = message.records.add()
    sub.partition_key_index = 200
    sub.explicit_hash_key_index = 3
    sub.data = b"x" * 300
    assert encode_sub_record(200, 3, b"x" * 300) == message.SerializeToString()


@pytest.mark.parametrize(
    ("pk_index", "ehk_index", "size"),
    [(0, None, 0), (5, None, 100), (200, None, 300), (20_000, None, 20_000), (200, 3, 300)],
)
def test_precomputed_pieces_are_the_encoders_bytes(
    pk_index: int, ehk_index: int | None, size: int
) -> None:
    data = b"x" * size
    field = encode_sub_record(pk_index, ehk_index, data)
    body = len(field) - 1 - varint_size(len(field) - 1)
    if ehk_index is None and body < SMALL_VARINT_LIMIT and pk_index < SMALL_VARINT_LIMIT:
        assert field == b"".join(
            (RECORD_HEADERS[body], PARTITION_KEY_INDEX_FIELDS[pk_index], DATA_HEADERS[size], data)
        )
    for key in (b"k", "κλειδί".encode(), "😀".encode() * 256):
        assert partition_key_entry(key) == PARTITION_KEY_ENTRY_HEADERS[len(key)] + key
    assert len(PARTITION_KEY_ENTRY_HEADERS) == 4 * 256 + 1


def test_round_trip_through_our_decoder() -> None:
    added = [("k", None, b"one"), ("κλειδί", "12345", b""), ("k", None, b"\x00\xff")]
    assert decode(_aggregate(added)) == [DecodedRecord(*item) for item in added]


def test_aggregator_size_is_exact_for_many_random_cases() -> None:
    rng = random.Random(1234)
    # Sizes around every varint boundary and the fast path's limit (0x3F00).
    sizes = [0, 1, 90, 127, 128, 5000, 16127, 16128, 16383, 16384, 17000]
    for case in range(300):
        aggregator = Aggregator(
            rng.choice([100, 1000, 51_200, 1 << 20]), rng.choice([1, 5, 1000, 2**32 - 1])
        )
        for _ in range(rng.randint(1, 120)):
            ehk = str(rng.getrandbits(rng.choice([1, 20, 128]))) if rng.random() < 0.3 else None
            data = bytes(rng.choice(sizes))
            before = aggregator.size, aggregator.count
            if not aggregator.try_add(_random_key(rng), ehk, data):
                assert (aggregator.size, aggregator.count) == before, case
        serialized = aggregator.serialize()
        assert aggregator.size == len(serialized), case
        assert aggregator.size <= aggregator.max_size
        assert aggregator.count <= aggregator.max_count


@pytest.mark.parametrize("with_ehk", [False, True])
def test_aggregator_size_is_exact_past_128_distinct_keys(with_ehk: bool) -> None:
    aggregator = Aggregator(1 << 20, 2**32 - 1)
    for i in range(400):
        ehk = str(i * 7919) if with_ehk and i % 2 else None
        assert aggregator.try_add(f"key-{i}", ehk, b"v" * (i % 200))
        if i % 50 == 0:
            assert aggregator.size == len(aggregator.serialize())
    assert aggregator.size == len(aggregator.serialize())
    assert [r.partition_key for r in decode(aggregator.serialize()) or []] == [
        f"key-{i}" for i in range(400)
    ]


def test_aggregator_deduplicates_keys_and_matches_protobuf() -> None:
    aggregator = Aggregator(51_200, 1000)
    adds = [("a", None, b"1"), ("b", "99", b"2"), ("a", "99", b"3"), ("b", None, b"4")]
    for pk, ehk, data in adds:
        assert aggregator.try_add(pk, ehk, data)
    expected = _protobuf_encode(adds)
    assert aggregator.serialize() == expected
    assert aggregator.size == len(expected)


def test_aggregator_full_is_a_return_value_and_changes_nothing() -> None:
    aggregator = Aggregator(EMPTY_SIZE + 20, 10)
    assert aggregator.try_add("k", None, b"0123456789")
    snapshot = aggregator.serialize()
    assert not aggregator.try_add("k", None, b"0123456789")
    assert aggregator.serialize() == snapshot
    assert aggregator.count == 1


def test_aggregator_count_limit() -> None:
    aggregator = Aggregator(51_200, 2)
    assert aggregator.try_add("k", None, b"x")
    assert aggregator.try_add("k", None, b"x")
    assert not aggregator.try_add("k", None, b"x")


def test_reference_deaggregator_decodes_ours() -> None:
    rng = random.Random(3)
    aggregator = Aggregator(51_200, 10_000)
    added: list[tuple[str, str | None, bytes]] = []
    while True:
        item = (
            _random_key(rng),
            str(rng.getrandbits(128)) if rng.random() < 0.2 else None,
            rng.randbytes(rng.randint(0, 300)),
        )
        if not aggregator.try_add(*item):
            break
        added.append(item)
    theirs = _reference_decode(aggregator.serialize())
    assert len(theirs) == len(added) > 10
    for (pk, ehk, data), record in zip(added, theirs, strict=True):
        assert record["partitionKey"] == pk
        assert record["aggregated"] is True
        assert base64.b64decode(record["data"]) == data
        if ehk is not None:  # the reference reads an absent index as 0, so check only set ones
            assert record["explicitHashKey"] == ehk


def test_we_decode_the_reference_aggregator() -> None:
    rng = random.Random(5)
    reference = RecordAggregator()
    added = []
    for i in range(200):
        item = (
            f"key-{rng.randint(0, 30)}",
            str(rng.getrandbits(128)) if i % 3 == 0 else None,
            rng.randbytes(rng.randint(1, 100)),
        )
        assert reference.add_user_record(item[0], item[2], item[1]) is None
        added.append(item)
    _pk, _ehk, data = reference.clear_and_get().get_contents()
    assert decode(data) == [DecodedRecord(pk, ehk, d) for pk, ehk, d in added]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_kpl_vectors(vector: dict[str, Any]) -> None:
    data = base64.b64decode(vector["data"])
    decoded = decode(data)
    expected = vector["user_records"]
    if vector["name"].startswith("magic_but_bad_checksum"):
        assert data.startswith(MAGIC)
        assert decoded is None
        return
    assert decoded is not None
    assert [(r.partition_key, r.explicit_hash_key, r.data) for r in decoded] == [
        (e["partition_key"], e["explicit_hash_key"], base64.b64decode(e["data"])) for e in expected
    ]
    # Re-encoding the decoded records gives the KPL's bytes back.
    added = [(r.partition_key, r.explicit_hash_key, r.data) for r in decoded]
    assert _aggregate(added) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        MAGIC,
        MAGIC + b"\x00" * 16,
        b"plain data",
        MAGIC + b"\xff\xff" + md5(b"\xff\xff").digest(),
        MAGIC + b"\x1a\x02\x08\x05" + md5(b"\x1a\x02\x08\x05").digest(),
        MAGIC
        + b"\x0a\x01\xff\x1a\x04\x08\x00\x1a\x00"
        + md5(b"\x0a\x01\xff\x1a\x04\x08\x00\x1a\x00").digest(),
    ],
    ids=[
        "empty",
        "magic-only",
        "empty-body",
        "plain",
        "garbage-body",
        "index-out-of-table",
        "key-not-utf8",
    ],
)
def test_not_aggregated(data: bytes) -> None:
    assert decode(data) is None
