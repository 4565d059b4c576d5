"""Hash keys: MD5 of the partition key, explicit hash keys, against the KPL's vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpl.protocol.hashing import (
    MAX_HASH_KEY,
    ExplicitHashKeyError,
    hash_key_for,
    parse_explicit_hash_key,
    partition_key_hash,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "kpl_aggregated_records.json"


def test_md5_of_abcd_is_the_kpl_vector() -> None:
    assert partition_key_hash("abcd") == 0xE2FC714C4727EE9395F324CD2E7F331F


def test_hash_key_vectors_from_the_kpl() -> None:
    vectors = json.loads(VECTORS.read_text())["hash_key_vectors"]
    assert vectors
    for vector in vectors:
        assert partition_key_hash(vector["partition_key"]) == int(vector["hash_key"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1", 1),
        (str(MAX_HASH_KEY), MAX_HASH_KEY),
        ("12345678901234567890", 12345678901234567890),
    ],
)
def test_explicit_hash_key_parses(text: str, expected: int) -> None:
    assert parse_explicit_hash_key(text) == expected
    assert hash_key_for("ignored", text) == expected


@pytest.mark.parametrize(
    "text", ["", "-1", "01", "1.5", " 1", "abc", str(MAX_HASH_KEY + 1), "9" * 40]
)
def test_explicit_hash_key_rejects(text: str) -> None:
    with pytest.raises(ExplicitHashKeyError):
        parse_explicit_hash_key(text)
