"""The sans-IO engine driven directly, with a fake clock: plain synchronous tests."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from kpl.protocol.hashing import MAX_HASH_KEY, partition_key_hash
from server.core.engine import Engine, EngineConfig
from server.core.errors import (
    ExpiredIteratorException,
    InvalidArgumentException,
    KinesisError,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    SerializationException,
    UnknownOperationException,
    ValidationException,
)
from server.core.seqnum import DIGITS, INDEX_UNIT, parse_sequence_number
from server.core.validation import validate
from server.storage.memory import MemoryStorage

T0 = 1_800_000_000.0
N3_RANGES = [
    ("0", "113427455640312821154458202477256070484"),
    ("113427455640312821154458202477256070485", "226854911280625642308916404954512140969"),
    ("226854911280625642308916404954512140970", "340282366920938463463374607431768211455"),
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Harness:
    """An engine over memory storage with a clock the test moves."""

    def __init__(self, **config: Any) -> None:
        self.now = T0
        self.storage = MemoryStorage()
        self.engine = Engine(
            EngineConfig(**{"state_delay_seconds": 0.5, **config}), self.storage, random.Random(7)
        )

    def __call__(self, action: str, **body: Any) -> Any:
        return self.engine.handle(action, body, self.now).body

    def error(self, action: str, body: Any) -> KinesisError:
        with pytest.raises(KinesisError) as info:
            self.engine.handle(action, body, self.now)
        return info.value

    def stream(self, name: str = "s", shards: int = 1) -> str:
        self("CreateStream", StreamName=name, ShardCount=shards)
        self.now += 1.0
        return name

    def iterator(
        self, kind: str, shard_id: str = "shardId-000000000000", name: str = "s"
    ) -> str:
        """A shard iterator of type ``kind``, from GetShardIterator."""
        it: str = self(
            "GetShardIterator", StreamName=name, ShardId=shard_id, ShardIteratorType=kind
        )["ShardIterator"]
        return it

    def read_all(self, name: str, shard_id: str) -> list[dict[str, Any]]:
        it = self.iterator("TRIM_HORIZON", shard_id, name)
        out: list[dict[str, Any]] = []
        while True:
            page = self("GetRecords", ShardIterator=it)
            out += page["Records"]
            if not page["Records"]:
                return out
            it = page["NextShardIterator"]


def test_hash_ranges_n3_match_the_service() -> None:
    h = Harness()
    h.stream("s", 3)
    shards = h("DescribeStream", StreamName="s")["StreamDescription"]["Shards"]
    got = [
        (s["HashKeyRange"]["StartingHashKey"], s["HashKeyRange"]["EndingHashKey"]) for s in shards
    ]
    assert got == N3_RANGES
    assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(3)]


def test_states_advance_lazily_from_now() -> None:
    h = Harness()
    h("CreateStream", StreamName="s", ShardCount=1)
    assert (
        h("DescribeStreamSummary", StreamName="s")["StreamDescriptionSummary"]["StreamStatus"]
        == "CREATING"
    )
    # writes are refused while CREATING
    err = h.error("PutRecord", {"StreamName": "s", "Data": b64(b"x"), "PartitionKey": "k"})
    assert isinstance(err, ResourceNotFoundException)
    h.now += 0.5
    assert h("DescribeStream", StreamName="s")["StreamDescription"]["StreamStatus"] == "ACTIVE"
    h("DeleteStream", StreamName="s")
    assert h("DescribeStream", StreamName="s")["StreamDescription"]["StreamStatus"] == "DELETING"
    assert h("ListStreams")["StreamNames"] == ["s"]
    h.now += 0.5
    err = h.error("DescribeStream", {"StreamName": "s"})
    assert isinstance(err, ResourceNotFoundException)
    assert err.message == "Stream s under account 000000000000 not found."
    assert h("ListStreams")["StreamNames"] == []
    assert h.storage.load_streams() == []


def test_sequence_numbers_increase_and_encode_the_shard() -> None:
    h = Harness()
    h.stream("s", 2)
    seqs: dict[str, list[int]] = {}
    for i in range(50):
        entries = [{"Data": b64(b"d"), "PartitionKey": f"k{i}-{j}"} for j in range(7)]
        for r in h("PutRecords", StreamName="s", Records=entries)["Records"]:
            seqs.setdefault(r["ShardId"], []).append(int(r["SequenceNumber"]))
        r = h("PutRecord", StreamName="s", Data=b64(b"d"), PartitionKey=f"p{i}")
        seqs.setdefault(r["ShardId"], []).append(int(r["SequenceNumber"]))
        h.now += 0.001
    assert set(seqs) == {"shardId-000000000000", "shardId-000000000001"}
    for shard_id, numbers in seqs.items():
        assert numbers == sorted(set(numbers))  # strictly increasing
        for n in numbers:
            assert len(str(n)) == DIGITS
            parsed = parse_sequence_number(n)
            assert parsed is not None
            assert parsed.shard_index == int(shard_id[8:])


def test_sequence_number_for_ordering_moves_the_counter() -> None:
    h = Harness()
    h.stream()
    first = h("PutRecord", StreamName="s", Data=b64(b"a"), PartitionKey="k")["SequenceNumber"]
    bumped = str(int(first) + 1000 * INDEX_UNIT)  # the same shard's index 1001
    second = h(
        "PutRecord",
        StreamName="s",
        Data=b64(b"b"),
        PartitionKey="k",
        SequenceNumberForOrdering=bumped,
    )["SequenceNumber"]
    assert int(second) > int(bumped)
    third = h(
        "PutRecord",
        StreamName="s",
        Data=b64(b"c"),
        PartitionKey="k",
        SequenceNumberForOrdering=first,
    )["SequenceNumber"]
    assert int(third) == int(second) + INDEX_UNIT  # the next index, the same second


def test_routing_by_md5_and_by_explicit_hash_key() -> None:
    h = Harness()
    h.stream("s", 3)
    bounds = [(int(a), int(b)) for a, b in N3_RANGES]
    keys = [f"key-{i}" for i in range(60)]
    result = h(
        "PutRecords", StreamName="s", Records=[{"Data": b64(b"x"), "PartitionKey": k} for k in keys]
    )
    for key, entry in zip(keys, result["Records"], strict=True):
        index = int(entry["ShardId"][8:])
        lo, hi = bounds[index]
        assert lo <= partition_key_hash(key) <= hi
    # explicit hash keys at every boundary go to the shard that owns them
    for index, (lo, hi) in enumerate(bounds):
        for ehk in (lo, hi):
            r = h(
                "PutRecord",
                StreamName="s",
                Data=b64(b"x"),
                PartitionKey="z",
                ExplicitHashKey=str(ehk),
            )
            assert r["ShardId"] == f"shardId-{index:012d}"
    entries = [
        {"Data": b64(b"x"), "PartitionKey": "z", "ExplicitHashKey": str(hi)} for _, hi in bounds
    ]
    shard_ids = [r["ShardId"] for r in h("PutRecords", StreamName="s", Records=entries)["Records"]]
    assert shard_ids == [f"shardId-{i:012d}" for i in range(3)]
    err = h.error(
        "PutRecord",
        {
            "StreamName": "s",
            "Data": b64(b"x"),
            "PartitionKey": "z",
            "ExplicitHashKey": str(MAX_HASH_KEY + 1),
        },
    )
    assert isinstance(err, InvalidArgumentException)
    assert err.message == (
        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. "
        f"Specified value was {MAX_HASH_KEY + 1}"
    )


def test_every_iterator_type() -> None:
    h = Harness()
    h.stream()
    shard = "shardId-000000000000"
    seqs = []
    for i in range(5):
        seqs.append(
            h("PutRecord", StreamName="s", Data=b64(bytes([i])), PartitionKey="k")["SequenceNumber"]
        )
        h.now += 10.0

    def first(kind: str, **extra: Any) -> list[bytes]:
        it = h("GetShardIterator", StreamName="s", ShardId=shard, ShardIteratorType=kind, **extra)
        return [r["Data"] for r in h("GetRecords", ShardIterator=it["ShardIterator"])["Records"]]

    assert first("TRIM_HORIZON") == [bytes([i]) for i in range(5)]
    assert first("AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[2]) == [
        bytes([2]),
        bytes([3]),
        bytes([4]),
    ]
    assert first("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[2]) == [
        bytes([3]),
        bytes([4]),
    ]
    assert first("AT_TIMESTAMP", Timestamp=T0 + 1.0 + 15.0) == [bytes([2]), bytes([3]), bytes([4])]
    assert first("AT_TIMESTAMP", Timestamp=h.now) == []
    latest = h("GetShardIterator", StreamName="s", ShardId=shard, ShardIteratorType="LATEST")
    assert h("GetRecords", ShardIterator=latest["ShardIterator"])["Records"] == []
    h("PutRecord", StreamName="s", Data=b64(b"new"), PartitionKey="k")
    page = h("GetRecords", ShardIterator=latest["ShardIterator"])
    assert [r["Data"] for r in page["Records"]] == [b"new"]
    assert page["MillisBehindLatest"] == 0


def test_get_records_limit_next_iterator_and_millis_behind() -> None:
    h = Harness()
    h.stream()
    h(
        "PutRecords",
        StreamName="s",
        Records=[{"Data": b64(bytes([i])), "PartitionKey": "k"} for i in range(10)],
    )
    h.now += 2.0
    it = h.iterator("TRIM_HORIZON")
    page = h("GetRecords", ShardIterator=it, Limit=4)
    assert [r["Data"] for r in page["Records"]] == [bytes([i]) for i in range(4)]
    assert page["MillisBehindLatest"] == 2000
    assert page["Records"][0]["ApproximateArrivalTimestamp"] == T0 + 1.0
    rest = h("GetRecords", ShardIterator=page["NextShardIterator"])
    assert [r["Data"] for r in rest["Records"]] == [bytes([i]) for i in range(4, 10)]
    assert rest["MillisBehindLatest"] == 0


def test_iterator_expiry_and_tampering() -> None:
    h = Harness()
    h.stream()
    it = h.iterator("LATEST")
    h.now += 299.0
    h("GetRecords", ShardIterator=it)
    h.now += 2.0
    err = h.error("GetRecords", {"ShardIterator": it})
    assert isinstance(err, ExpiredIteratorException)
    assert err.message.startswith("Iterator expired. The iterator was created at time ")
    assert err.message.endswith("tolerated delay of 300000 milliseconds.")
    fresh = h.iterator("LATEST")
    tampered = [
        fresh[:10] + ("A" if fresh[10] != "A" else "B") + fresh[11:],
        fresh[:-4] + "AAA=",
        "garbage",
        fresh + "x",
        "A" * 100,
    ]
    for bad in tampered:
        err = h.error("GetRecords", {"ShardIterator": bad})
        assert isinstance(err, InvalidArgumentException), bad
        assert err.message == "Invalid ShardIterator."


def test_iterator_of_a_recreated_stream_is_stale() -> None:
    h = Harness()
    h.stream()
    it = h.iterator("LATEST")
    h("DeleteStream", StreamName="s")
    h.now += 1.0
    h.stream()
    err = h.error("GetRecords", {"ShardIterator": it})
    assert isinstance(err, ResourceNotFoundException)
    assert (
        err.message
        == "Shard shardId-000000000000 in stream s under account 000000000000 does not exist"
    )


def test_sequence_number_of_another_shard_or_stream_is_refused() -> None:
    h = Harness()
    h.stream("s", 2)
    h.stream("t", 1)
    r = h("PutRecord", StreamName="s", Data=b64(b"x"), PartitionKey="k", ExplicitHashKey="0")
    err = h.error(
        "GetShardIterator",
        {
            "StreamName": "s",
            "ShardId": "shardId-000000000001",
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "StartingSequenceNumber": r["SequenceNumber"],
        },
    )
    assert isinstance(err, InvalidArgumentException)
    assert err.message == (
        "Invalid StartingSequenceNumber. It encodes shardId-000000000000, while it "
        "was used in a call to a shard with shardId-000000000001"
    )
    # stream t was created a second later: same shard index, different stream epoch
    err = h.error(
        "GetShardIterator",
        {
            "StreamName": "t",
            "ShardId": "shardId-000000000000",
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "StartingSequenceNumber": r["SequenceNumber"],
        },
    )
    assert err.message.endswith("is invalid because it did not come from this stream.")
    err = h.error(
        "GetShardIterator",
        {
            "StreamName": "s",
            "ShardId": "shardId-000000000000",
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "StartingSequenceNumber": "5",
        },
    )
    assert err.message == (
        "StartingSequenceNumber 5 used in GetShardIterator on shard shardId-000000000000 "
        "in stream s under account 000000000000 is invalid."
    )


def test_iterator_argument_combinations() -> None:
    h = Harness()
    h.stream()
    base = {"StreamName": "s", "ShardId": "shardId-000000000000"}
    err = h.error("GetShardIterator", {**base, "ShardIteratorType": "AT_SEQUENCE_NUMBER"})
    assert err.message.endswith(
        "Request specified AT_SEQUENCE_NUMBER and no StartingSequenceNumber."
    )
    err = h.error(
        "GetShardIterator", {**base, "ShardIteratorType": "LATEST", "StartingSequenceNumber": "1"}
    )
    assert err.message == (
        "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
        "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. "
        "Request specified LATEST and also a StartingSequenceNumber."
    )
    err = h.error("GetShardIterator", {**base, "ShardIteratorType": "AT_TIMESTAMP"})
    assert isinstance(err, InvalidArgumentException)
    err = h.error(
        "GetShardIterator", {**base, "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": h.now + 60}
    )
    assert err.message == (
        "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. "
        f"timestampInMillis: {int((h.now + 60) * 1000)}, "
        f"currentTimestampInMillis: {int(h.now * 1000)}"
    )
    err = h.error(
        "GetShardIterator",
        {**base, "ShardId": "shardId-000000000009", "ShardIteratorType": "LATEST"},
    )
    assert isinstance(err, ResourceNotFoundException)
    assert (
        err.message
        == "Shard shardId-000000000009 in stream s under account 000000000000 does not exist"
    )


def test_validation_single_and_multiple_errors() -> None:
    h = Harness()
    err = h.error("CreateStream", {"StreamName": "bad name!", "ShardCount": 1})
    assert isinstance(err, ValidationException)
    assert err.message == (
        "1 validation error detected: Value 'bad name!' at 'streamName' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    )
    err = h.error("CreateStream", {"StreamName": "a" * 129, "ShardCount": 0})
    assert err.message == (
        "2 validation errors detected: Value '" + "a" * 129 + "' at 'streamName' failed to satisfy "
        "constraint: Member must have length less than or equal to 128; Value '0' at 'shardCount' "
        "failed to satisfy constraint: Member must have value greater than or equal to 1"
    )
    err = h.error(
        "PutRecords",
        {
            "StreamName": "s",
            "Records": [
                {"Data": b64(b"x"), "PartitionKey": ""},
                {"Data": b64(b"x"), "PartitionKey": "k" * 257},
                {"Data": b64(b"x"), "PartitionKey": "k", "ExplicitHashKey": "01"},
                {"PartitionKey": "k"},
            ],
        },
    )
    assert err.message == (
        "4 validation errors detected: Value '' at 'records.1.member.partitionKey' failed to "
        "satisfy constraint: Member must have length greater than or equal to 1; Value '"
        + "k" * 257
        + "' at 'records.2.member.partitionKey' failed to satisfy constraint: Member must have "
        "length less than or equal to 256; Value '01' at 'records.3.member.explicitHashKey' "
        "failed to satisfy constraint: Member must satisfy regular expression pattern: "
        "0|([1-9]\\d{0,38}); Value null at 'records.4.member.data' failed to satisfy "
        "constraint: Member must not be null"
    )
    err = h.error(
        "GetShardIterator", {"StreamName": "s", "ShardId": "x", "ShardIteratorType": "SOON"}
    )
    assert err.message == (
        "1 validation error detected: Value 'SOON' at 'shardIteratorType' failed to satisfy "
        "constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, "
        "AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
    )
    # at most 10 items
    err = h.error(
        "PutRecords", {"StreamName": "s", "Records": [{"Data": b64(b"x"), "PartitionKey": ""}] * 12}
    )
    assert err.message.startswith("10 validation errors detected: ")
    assert err.message.count("; ") == 9
    # neither StreamName nor StreamARN
    err = h.error("DescribeStream", {})
    assert err.message == (
        "1 validation error detected: Value null at 'streamName' failed to satisfy "
        "constraint: Member must not be null"
    )
    err = h.error(
        "PutRecords",
        {"StreamName": "s", "Records": [{"Data": b64(b"x"), "PartitionKey": "k"}] * 501},
    )
    assert (
        "at 'records' failed to satisfy constraint: Member must have length less than or equal to 500"  # noqa: E501
        in err.message
    )


@pytest.mark.parametrize(
    ("action", "body", "message"),
    [
        (
            "CreateStream",
            {"StreamName": "s", "ShardCount": "1"},
            "class java.lang.String can not be converted to an Integer",
        ),
        (
            "CreateStream",
            {"StreamName": 5, "ShardCount": 1},
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted "
            "to an String",
        ),
        (
            "CreateStream",
            {"StreamName": True},
            "class java.lang.Boolean can not be converted to an String",
        ),
        ("CreateStream", {"StreamName": ["s"]}, "Start of list found where not expected"),
        (
            "CreateStream",
            {"StreamName": {"a": 1}},
            "Start of structure or map found where not expected.",
        ),
        ("CreateStream", {"StreamName": "s", "Tags": "x"}, "Expected map or null"),
        (
            "PutRecord",
            {"StreamName": "s", "Data": "abc", "PartitionKey": "k"},
            "'abc' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 3",  # noqa: E501
        ),
        (
            "PutRecord",
            {"StreamName": "s", "Data": "ab!c", "PartitionKey": "k"},
            "'ab!c' can not be converted to a Blob: Invalid Base64 character: '!'",
        ),
        (
            "PutRecord",
            {"StreamName": "s", "Data": "QR==", "PartitionKey": "k"},
            "'QR==' can not be converted to a Blob: Invalid last non-pad Base64 character dectected",  # noqa: E501
        ),
        (
            "PutRecords",
            {"StreamName": "s", "Records": {}},
            "Start of structure or map found where not expected.",
        ),
        (
            "PutRecords",
            {"StreamName": "s", "Records": [{"Data": 1, "PartitionKey": "k"}]},
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted "
            "to a Blob",
        ),
        (
            "GetShardIterator",
            {
                "StreamName": "s",
                "ShardId": "x",
                "ShardIteratorType": "AT_TIMESTAMP",
                "Timestamp": "now",
            },
            "class java.lang.String can not be converted to a Timestamp",
        ),
        (
            "DeleteStream",
            {"StreamName": "s", "EnforceConsumerDeletion": "yes"},
            "'YES' can not be converted to an Boolean",
        ),
        ("ListStreams", [], "Start of list found where not expected"),
        ("ListStreams", "x", "Expected null"),
    ],
)
def test_type_errors_are_serialization_exceptions(action: str, body: Any, message: str) -> None:
    err = Harness().error(action, body)
    assert isinstance(err, SerializationException)
    assert err.message == message


def test_unknown_operation() -> None:
    assert isinstance(Harness().error("Frobnicate", {}), UnknownOperationException)


def test_create_stream_rules_and_shard_limit() -> None:
    h = Harness(shard_limit=10)
    h.stream("a", 6)
    err = h.error("CreateStream", {"StreamName": "a", "ShardCount": 1})
    assert isinstance(err, ResourceInUseException)
    assert err.message == "Stream a under account 000000000000 already exists."
    err = h.error("CreateStream", {"StreamName": "b", "ShardCount": 5})
    assert isinstance(err, LimitExceededException)
    assert err.message.startswith(
        "This request would exceed the shard limit for the account 000000000000 in us-east-1. "
        "Current shard count for the account: 6. Limit: 10. Number of additional shards that "
        "would have resulted from this request: 5."
    )
    h("CreateStream", StreamName="od", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    summary = h("DescribeStreamSummary", StreamName="od")["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 4
    assert summary["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    limits = h("DescribeLimits")
    assert limits["ShardLimit"] == 10
    assert limits["OpenShardCount"] == 10
    assert limits["OnDemandStreamCount"] == 1


def test_record_size_limits_and_update_max_record_size() -> None:
    h = Harness()
    h.stream()
    big = b64(b"x" * (1024 * 1024 + 1))
    err = h.error("PutRecord", {"StreamName": "s", "Data": big, "PartitionKey": "k"})
    assert isinstance(err, ValidationException)
    assert err.message == (
        "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=1048577 "
        "cap=1048577]' at 'data' failed to satisfy constraint: Member must have length "
        "less than or equal to 1048576"
    )
    err = h.error(
        "PutRecords",
        {"StreamName": "s", "Records": [{"Data": b64(b"x" * 600_000), "PartitionKey": "k"}] * 9},
    )
    assert isinstance(err, InvalidArgumentException)
    assert err.message == "Records size exceeds 5 MB limit"
    arn = h("DescribeStreamSummary", StreamName="s")["StreamDescriptionSummary"]["StreamARN"]
    h("UpdateMaxRecordSize", StreamARN=arn, MaxRecordSizeInKiB=2048)
    r = h("PutRecord", StreamARN=arn, Data=big, PartitionKey="k")
    assert r["ShardId"] == "shardId-000000000000"
    h(
        "PutRecords",
        StreamName="s",
        Records=[{"Data": b64(b"x" * 600_000), "PartitionKey": "k"}] * 9,
    )
    err = h.error("UpdateMaxRecordSize", {"StreamARN": arn, "MaxRecordSizeInKiB": 100})
    assert isinstance(err, ValidationException)


MIB = 1024 * 1024


def _sum_rule(data: int, key: int, limit: int, path: str = "data") -> str:
    """The refusal of data that fits alone but not with its key (our words, see engine)."""
    return (
        f"1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim={data} "
        f"cap={data}]' at '{path}' failed to satisfy constraint: Member's length plus the "
        f"partition key's UTF-8 length ({data} + {key} = {data + key} bytes) must be less "
        f"than or equal to {limit}"
    )


def test_record_size_is_data_plus_utf8_partition_key() -> None:
    h = Harness()
    h.stream()
    err = h.error("PutRecord", {"StreamName": "s", "Data": b64(b"x" * MIB), "PartitionKey": "k"})
    assert isinstance(err, ValidationException)
    assert err.message == _sum_rule(MIB, 1, MIB)
    # "é" is one character but two UTF-8 bytes: the limit counts bytes.
    err = h.error(
        "PutRecord", {"StreamName": "s", "Data": b64(b"x" * (MIB - 2)), "PartitionKey": "éa"}
    )
    assert isinstance(err, ValidationException)
    assert err.message == _sum_rule(MIB - 2, 3, MIB)
    assert h.read_all("s", "shardId-000000000000") == []  # a refusal stores nothing
    h("PutRecord", StreamName="s", Data=b64(b"x" * (MIB - 1)), PartitionKey="k")
    h("PutRecord", StreamName="s", Data=b64(b"y" * (MIB - 2)), PartitionKey="é")
    stored = h.read_all("s", "shardId-000000000000")
    assert [(len(r["Data"]), r["PartitionKey"]) for r in stored] == [(MIB - 1, "k"), (MIB - 2, "é")]


def test_put_records_refuses_the_request_for_an_entry_over_the_limit_with_its_key() -> None:
    h = Harness()
    h.stream()
    small = {"Data": b64(b"a"), "PartitionKey": "k"}
    err = h.error(
        "PutRecords",
        {"StreamName": "s", "Records": [small, {"Data": b64(b"x" * MIB), "PartitionKey": "kk"}]},
    )
    assert isinstance(err, ValidationException)
    assert err.message == _sum_rule(MIB, 2, MIB, "records.2.member.data")
    # Data alone over the limit keeps the service's own text.
    too_big = {"Data": b64(b"x" * (MIB + 1)), "PartitionKey": "k"}
    err = h.error("PutRecords", {"StreamName": "s", "Records": [small, too_big]})
    assert err.message == (
        "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=1048577 "
        "cap=1048577]' at 'records.2.member.data' failed to satisfy constraint: Member must "
        "have length less than or equal to 1048576"
    )
    assert h.read_all("s", "shardId-000000000000") == []  # the whole request was refused
    r = h(
        "PutRecords",
        StreamName="s",
        Records=[small, {"Data": b64(b"x" * (MIB - 2)), "PartitionKey": "kk"}],
    )
    assert r["FailedRecordCount"] == 0
    assert len(h.read_all("s", "shardId-000000000000")) == 2


def test_put_records_request_limit_counts_partition_keys() -> None:
    h = Harness()
    h.stream()
    # Ten entries whose data alone is exactly 5 MiB: their keys tip the request over.
    over = [{"Data": b64(b"x" * (MIB // 2)), "PartitionKey": "k"}] * 10
    err = h.error("PutRecords", {"StreamName": "s", "Records": over})
    assert isinstance(err, InvalidArgumentException)
    assert err.message == "Records size exceeds 5 MB limit"
    exact = [{"Data": b64(b"x" * (MIB // 2 - 1)), "PartitionKey": "k"}] * 10
    assert h("PutRecords", StreamName="s", Records=exact)["FailedRecordCount"] == 0


def test_large_record_stream_counts_the_key_against_its_own_limit() -> None:
    h = Harness()
    h.stream()
    arn = h("DescribeStreamSummary", StreamName="s")["StreamDescriptionSummary"]["StreamARN"]
    h("UpdateMaxRecordSize", StreamARN=arn, MaxRecordSizeInKiB=2048)
    limit = 2 * MIB
    err = h.error("PutRecord", {"StreamARN": arn, "Data": b64(b"x" * limit), "PartitionKey": "k"})
    assert isinstance(err, ValidationException)
    assert err.message == _sum_rule(limit, 1, limit)
    err = h.error(
        "PutRecords",
        {"StreamARN": arn, "Records": [{"Data": b64(b"x" * limit), "PartitionKey": "k"}]},
    )
    assert err.message == _sum_rule(limit, 1, limit, "records.1.member.data")
    h("PutRecord", StreamARN=arn, Data=b64(b"x" * (limit - 1)), PartitionKey="k")
    r = h(
        "PutRecords",
        StreamARN=arn,
        Records=[{"Data": b64(b"y" * (limit - 1)), "PartitionKey": "k"}],
    )
    assert r["FailedRecordCount"] == 0
    assert [len(r["Data"]) for r in h.read_all("s", "shardId-000000000000")] == [limit - 1] * 2


def test_tags() -> None:
    h = Harness()
    h.stream()
    h("AddTagsToStream", StreamName="s", Tags={"b": "2", "a": "1", "c": ""})
    assert h("ListTagsForStream", StreamName="s") == {
        "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}, {"Key": "c", "Value": ""}],
        "HasMoreTags": False,
    }
    page = h("ListTagsForStream", StreamName="s", Limit=1, ExclusiveStartTagKey="a")
    assert page == {"Tags": [{"Key": "b", "Value": "2"}], "HasMoreTags": True}
    h("RemoveTagsFromStream", StreamName="s", TagKeys=["a", "zz"])
    assert [t["Key"] for t in h("ListTagsForStream", StreamName="s")["Tags"]] == ["b", "c"]
    h("AddTagsToStream", StreamName="s", Tags={f"t{i:02d}": "v" for i in range(30)})
    everything = h("ListTagsForStream", StreamName="s")  # no Limit: every tag
    assert (len(everything["Tags"]), everything["HasMoreTags"]) == (32, False)
    h("RemoveTagsFromStream", StreamName="s", TagKeys=[f"t{i:02d}" for i in range(30)])
    err = h.error("AddTagsToStream", {"StreamName": "s", "Tags": {f"k{i}": "v" for i in range(49)}})
    assert isinstance(err, InvalidArgumentException)
    assert err.message == (
        "Failed to add tags to stream s under account 000000000000 because a given stream "
        "cannot have more than 50 tags associated with it."
    )
    err = h.error("AddTagsToStream", {"StreamName": "s", "Tags": {"bad#": "v"}})
    assert isinstance(err, InvalidArgumentException)
    assert err.message == (
        "Some tags contain invalid characters. Valid characters: Unicode letters, digits, "
        "white space, _ . / = + - % @."
    )
    err = h.error("AddTagsToStream", {"StreamName": "s", "Tags": {"k": "50%"}})
    assert err.message == (
        "Failed to add tags to stream s under account 000000000000 because some tags "
        "contained illegal characters. The allowed characters are Unicode letters, "
        "white-spaces, '_',',','/','=','+','-','@'."
    )
    err = h.error("RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["a%"]})
    assert isinstance(err, InvalidArgumentException)
    assert err.message.startswith("Failed to remove tags from stream s under account ")
    err = h.error("RemoveTagsFromStream", {"StreamName": "s", "TagKeys": ["a", "bad#"]})
    assert err.message.startswith("Some tags contain invalid characters.")
    err = h.error("AddTagsToStream", {"StreamName": "s", "Tags": {"": "v"}})
    assert err.message.startswith(
        "1 validation error detected: Value '{=v}' at 'tags' failed to satisfy "
        "constraint: Map keys must satisfy constraint"
    )


def test_retention_period_rules_and_trimming() -> None:
    h = Harness()
    h.stream()
    h("PutRecord", StreamName="s", Data=b64(b"old"), PartitionKey="k")
    h("IncreaseStreamRetentionPeriod", StreamName="s", RetentionPeriodHours=48)
    err = h.error("IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 30})
    assert err.message == (
        "Requested retention period (30 hours) for stream s can not be shorter than "
        "existing retention period (48 hours). Use DecreaseRetentionPeriod API."
    )
    err = h.error("DecreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 50})
    assert err.message == (
        "Requested retention period (50 hours) for stream s can not be longer than "
        "existing retention period (48 hours). Use IncreaseRetentionPeriod API."
    )
    err = h.error("DecreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 23})
    assert err.message == (
        "Minimum allowed retention period is 24 hours. Requested retention period "
        "(23 hours) is too short."
    )
    err = h.error(
        "IncreaseStreamRetentionPeriod", {"StreamName": "s", "RetentionPeriodHours": 8761}
    )
    assert err.message == (
        "Maximum allowed retention period is 8760 hours. Requested retention period "
        "(8761 hours) is too long."
    )
    h("DecreaseStreamRetentionPeriod", StreamName="s", RetentionPeriodHours=24)
    assert (
        h("DescribeStreamSummary", StreamName="s")["StreamDescriptionSummary"][
            "RetentionPeriodHours"
        ]
        == 24
    )
    h.now += 12 * 3600
    h("PutRecord", StreamName="s", Data=b64(b"new"), PartitionKey="k")
    assert [r["Data"] for r in h.read_all("s", "shardId-000000000000")] == [b"old", b"new"]
    h.now += 13 * 3600
    assert [r["Data"] for r in h.read_all("s", "shardId-000000000000")] == [b"new"]


def test_list_streams_and_list_shards_paging() -> None:
    h = Harness()
    for name in ("c", "a", "b"):
        h.stream(name, 3)
    page = h("ListStreams", Limit=2)
    assert page["StreamNames"] == ["a", "b"]
    assert page["HasMoreStreams"] is True
    assert [s["StreamStatus"] for s in page["StreamSummaries"]] == ["ACTIVE", "ACTIVE"]
    rest = h("ListStreams", NextToken=page["NextToken"])
    assert rest["StreamNames"] == ["c"]
    assert rest["HasMoreStreams"] is False
    assert h("ListStreams", ExclusiveStartStreamName="a")["StreamNames"] == ["b", "c"]
    shards = h("ListShards", StreamName="a", MaxResults=2)
    assert [s["ShardId"] for s in shards["Shards"]] == [
        "shardId-000000000000",
        "shardId-000000000001",
    ]
    more = h("ListShards", NextToken=shards["NextToken"])
    assert [s["ShardId"] for s in more["Shards"]] == ["shardId-000000000002"]
    assert "NextToken" not in more
    err = h.error("ListShards", {"StreamName": "a", "NextToken": shards["NextToken"]})
    assert isinstance(err, InvalidArgumentException)
    assert err.message == "NextToken and StreamName cannot be provided together."
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/a"
    err = h.error("ListShards", {"StreamARN": arn, "NextToken": shards["NextToken"]})
    assert err.message == "NextToken and StreamARN cannot be provided together."
    err = h.error(
        "ListShards", {"NextToken": shards["NextToken"], "ExclusiveStartShardId": "shardId-0"}
    )
    assert err.message == "NextToken and ExclusiveStartShardId cannot be provided together."
    err = h.error("ListShards", {})
    assert isinstance(err, InvalidArgumentException)
    assert err.message == "Either NextToken or StreamName should be provided."
    err = h.error("ListShards", {"NextToken": "bm9wZQ=="})
    assert err.message == "Invalid NextToken."
    after = h(
        "ListShards",
        StreamName="a",
        ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000000"},
    )
    assert len(after["Shards"]) == 2
    assert (
        len(h("ListShards", StreamName="a", ExclusiveStartShardId="shardId-000000000001")["Shards"])
        == 1
    )
    for kind in ("AT_TRIM_HORIZON", "FROM_TRIM_HORIZON", "AT_LATEST"):
        assert len(h("ListShards", StreamName="a", ShardFilter={"Type": kind})["Shards"]) == 3
    at = h(
        "ListShards", StreamName="a", ShardFilter={"Type": "AT_TIMESTAMP", "Timestamp": T0 - 100}
    )
    assert at["Shards"] == []
    h.now += 301
    err = h.error("ListShards", {"NextToken": shards["NextToken"]})
    assert err.code == "ExpiredNextTokenException"
    desc = h("DescribeStream", StreamName="a", Limit=2)["StreamDescription"]
    assert desc["HasMoreShards"] is True
    assert len(desc["Shards"]) == 2
    desc = h("DescribeStream", StreamName="a", ExclusiveStartShardId="shardId-000000000001")[
        "StreamDescription"
    ]
    assert [s["ShardId"] for s in desc["Shards"]] == ["shardId-000000000002"]
    assert desc["HasMoreShards"] is False


def test_stream_arn_is_accepted_and_checked() -> None:
    h = Harness()
    h.stream("s")
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
    assert (
        h("DescribeStreamSummary", StreamARN=arn)["StreamDescriptionSummary"]["StreamName"] == "s"
    )
    err = h.error(
        "DescribeStreamSummary", {"StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/x"}
    )
    assert err.message == "Stream x under account 000000000000 not found."
    err = h.error("DescribeStreamSummary", {"StreamARN": arn, "StreamName": "t"})
    assert isinstance(err, InvalidArgumentException)


def test_metadata_survives_a_new_engine_over_the_same_storage() -> None:
    h = Harness()
    h.stream("s", 2)
    last = h("PutRecord", StreamName="s", Data=b64(b"x"), PartitionKey="k", ExplicitHashKey="0")
    h("AddTagsToStream", StreamName="s", Tags={"t": "v"})
    engine = Engine(EngineConfig(), h.storage, random.Random(8))
    again = engine.handle(
        "PutRecord",
        {"StreamName": "s", "Data": b64(b"y"), "PartitionKey": "k", "ExplicitHashKey": "0"},
        h.now,
    ).body
    assert int(again["SequenceNumber"]) > int(last["SequenceNumber"])
    assert engine.handle("ListTagsForStream", {"StreamName": "s"}, h.now).body["Tags"] == [
        {"Key": "t", "Value": "v"}
    ]


def test_closed_shard_end_gives_child_shards() -> None:
    # Lineage on the read side alone: a closed parent and its child written straight to storage.
    h = Harness()
    h.stream("s", 1)
    h("PutRecord", StreamName="s", Data=b64(b"x"), PartitionKey="k")
    stream = h.engine.streams.by_name["s"]
    parent = stream.meta.shards[0]
    parent.ending_sequence_number = stream.shards[parent.shard_id].next_seq - 1
    parent.closed_at = h.now
    from server.storage.base import ShardMeta

    child = ShardMeta(
        "shardId-000000000001", 0, MAX_HASH_KEY, 0, h.now, parent_shard_id=parent.shard_id
    )
    stream.meta.shards.append(child)
    h.storage.save_stream(stream.meta)
    h.engine = Engine(EngineConfig(), h.storage, random.Random(9))
    it = h(
        "GetShardIterator",
        StreamName="s",
        ShardId=parent.shard_id,
        ShardIteratorType="TRIM_HORIZON",
    )
    page = h("GetRecords", ShardIterator=it["ShardIterator"])
    assert [r["Data"] for r in page["Records"]] == [b"x"]
    assert "NextShardIterator" not in page
    assert page["ChildShards"][0]["ShardId"] == "shardId-000000000001"
    assert page["ChildShards"][0]["ParentShards"] == [parent.shard_id]
    r = h("PutRecord", StreamName="s", Data=b64(b"y"), PartitionKey="k")
    assert r["ShardId"] == "shardId-000000000001"


def test_put_records_fast_path_matches_full_validation() -> None:
    """The inline entry checks answer exactly as the generic validator would."""
    fast, slow = Harness(), Harness()
    for h in (fast, slow):
        h.stream("s", 3)
    body = {
        "StreamName": "s",
        "Records": [
            {"Data": b64(bytes([i]) * i), "PartitionKey": f"k{i}é", "Unknown": [1]}
            for i in range(20)
        ]
        + [{"Data": "", "PartitionKey": "x", "ExplicitHashKey": str(MAX_HASH_KEY)}],
    }
    assert fast("PutRecords", **body) == slow.engine.records.put_records(
        validate("PutRecords", body), slow.now
    )
    for bad in (
        {"StreamName": "s!", "Records": [{"Data": "", "PartitionKey": "k"}]},
        {"StreamName": 1, "Records": [{"Data": "", "PartitionKey": "k"}]},
        {"StreamARN": "arn:nope", "Records": [{"Data": "", "PartitionKey": "k"}]},
    ):
        err = fast.error("PutRecords", bad)
        assert isinstance(err, ValidationException | SerializationException)


def test_put_records_refuses_before_numbering() -> None:
    h = Harness()
    h.stream("s", 1)
    entries = [{"Data": b64(b"x"), "PartitionKey": "k"}] * 3 + [
        {"Data": b64(b"x"), "PartitionKey": "k", "ExplicitHashKey": str(MAX_HASH_KEY + 1)}
    ]
    err = h.error("PutRecords", {"StreamName": "s", "Records": entries})
    assert isinstance(err, InvalidArgumentException)
    assert h.read_all("s", "shardId-000000000000") == []
    first = h("PutRecord", StreamName="s", Data=b64(b"y"), PartitionKey="k")["SequenceNumber"]
    parsed = parse_sequence_number(int(first))
    assert parsed is not None
    assert parsed.counter == 1  # the first number after the shard's starting one


def test_list_streams_answers_at_most_100_names() -> None:
    h = Harness(shard_limit=200)
    for i in range(102):
        h("CreateStream", StreamName=f"s{i:03d}", ShardCount=1)
    page = h("ListStreams", Limit=10000)
    assert len(page["StreamNames"]) == 100
    assert page["HasMoreStreams"] is True
    assert h("ListStreams", NextToken=page["NextToken"])["StreamNames"] == ["s100", "s101"]


def test_get_shard_iterator_reads_shard_ids_and_words_misses_as_the_service() -> None:
    h = Harness()
    h.stream(shards=2)
    # "shardId-1" and bare digits name shard 1, as on the service.
    for loose in ("shardId-1", "1", "shardId-000000000001"):
        it = h("GetShardIterator", StreamName="s", ShardId=loose, ShardIteratorType="LATEST")
        assert h("GetRecords", ShardIterator=it["ShardIterator"])["Records"] == []
    err = h.error(
        "GetShardIterator", {"StreamName": "s", "ShardId": "shard-x", "ShardIteratorType": "LATEST"}
    )
    assert isinstance(err, ResourceNotFoundException)
    assert err.message == (
        "Could not find shard shard-x in stream s under account 000000000000."
    )
    err = h.error(
        "GetShardIterator",
        {"StreamName": "s", "ShardId": "shardId-7", "ShardIteratorType": "LATEST"},
    )
    assert err.message == (
        "Shard shardId-000000000007 in stream s under account 000000000000 does not exist"
    )
    # A missing stream is worded as a missing shard in this action.
    err = h.error(
        "GetShardIterator",
        {"StreamName": "nope", "ShardId": "shardId-0", "ShardIteratorType": "LATEST"},
    )
    assert isinstance(err, ResourceNotFoundException)
    assert err.message == (
        "Shard shardId-000000000000 in stream nope under account 000000000000 does not exist"
    )


def test_put_record_refuses_a_sequence_number_for_ordering_not_from_the_service() -> None:
    h = Harness()
    h.stream()
    body = {"StreamName": "s", "Data": b64(b"x"), "PartitionKey": "k"}
    err = h.error("PutRecord", {**body, "SequenceNumberForOrdering": "12345"})
    assert isinstance(err, InvalidArgumentException)
    assert err.message == (
        "ExclusiveMinimumSequenceNumber 12345 used in PutRecord on stream s under account "
        "000000000000 is invalid."
    )
    first = h("PutRecord", **body)["SequenceNumber"]
    second = h("PutRecord", **body, SequenceNumberForOrdering=first)["SequenceNumber"]
    assert int(second) > int(first)


def test_describe_stream_and_list_shards_cap_their_pages() -> None:
    h = Harness(shard_limit=2000)
    h.stream(shards=1100)
    page = h("DescribeStream", StreamName="s", Limit=10000)["StreamDescription"]
    assert (len(page["Shards"]), page["HasMoreShards"]) == (100, True)
    listed = h("ListShards", StreamName="s", MaxResults=10000)
    assert len(listed["Shards"]) == 1000
    rest = h("ListShards", NextToken=listed["NextToken"], MaxResults=10000)
    assert len(rest["Shards"]) == 100
    assert "NextToken" not in rest
