"""Hash keys: MD5 of the partition key, explicit hash keys, against the KPL's vectors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from kpl.protocol.hashing import (
    EXPLICIT_HASH_KEY_RE,
    MAX_HASH_KEY,
    ExplicitHashKeyError,
    hash_key_for,
    parse_explicit_hash_key,
    partition_key_hash,
    uniform_ranges,
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


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 10, 1000])
def test_uniform_ranges_tile_the_hash_space(count: int) -> None:
    ranges = uniform_ranges(count)
    assert len(ranges) == count
    assert ranges[0][0] == 0
    assert ranges[-1][1] == MAX_HASH_KEY
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert start == end + 1
    widths = {end - start + 1 for start, end in ranges[:-1]}
    assert len(widths) <= 1  # equal steps; the last range takes the remainder


def test_uniform_ranges_of_two_split_at_half() -> None:
    assert uniform_ranges(2) == [(0, 2**127 - 1), (2**127, MAX_HASH_KEY)]


@pytest.mark.parametrize(
    ("text", "syntax_ok"),
    [("0", True), ("7", True), ("9" * 39, True), ("9" * 40, False), ("01", False), ("", False)],
)
def test_explicit_hash_key_pattern_is_the_models(text: str, syntax_ok: bool) -> None:
    assert (EXPLICIT_HASH_KEY_RE.fullmatch(text) is not None) is syntax_ok
