"""Shared helpers for the producer's shell tests: a Kinesis stand-in behind a
MockTransport, and decoding of what it stored through the reference deaggregator."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from kpl.protocol.hashing import HASH_KEY_SPACE, partition_key_hash
from kpl.transport import MockRequest, MockResponse, MockTransport


@dataclass(frozen=True, slots=True)
class Stored:
    """One Kinesis record as the fake stream stored it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    explicit_hash_key: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Delivered:
    """One user record read back through aws_kinesis_agg."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    data: bytes


def even_shards(count: int) -> list[tuple[str, int, int]]:
    """Shard ranges the way CreateStream splits the hash key space."""
    step = HASH_KEY_SPACE // count
    return [
        (
            f"shardId-{i:012d}",
            i * step,
            HASH_KEY_SPACE - 1 if i == count - 1 else (i + 1) * step - 1,
        )
        for i in range(count)
    ]


# Decides the fate of one PutRecords entry: None to store it, or an error code.
EntryFault = Callable[[dict[str, Any], int], str | None]
# Decides the fate of a whole call: None to answer, else an exception to raise or a
# MockResponse to return.
RequestFault = Callable[[MockRequest, int], BaseException | MockResponse | None]


@dataclass
class FakeKinesis:
    """Just enough of Kinesis behind a MockTransport: ListShards and PutRecords.

    Routes by hash key like the service, hands out increasing sequence numbers per
    shard, and can fail chosen entries or whole calls.
    """

    stream_name: str = "s"
    shards: list[tuple[str, int, int]] = field(default_factory=lambda: even_shards(4))
    entry_fault: EntryFault | None = None
    request_fault: RequestFault | None = None
    stored: list[Stored] = field(default_factory=list)
    put_calls: int = 0
    list_shards_calls: int = 0
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def transport(self) -> MockTransport:
        return MockTransport(self.handle)

    def _shard_for(self, hash_key: int) -> str:
        for shard_id, start, end in self.shards:
            if start <= hash_key <= end:
                return shard_id
        raise AssertionError(f"hash key {hash_key} in no shard")

    def handle(self, request: MockRequest) -> Any:
        payload = request.json()
        if request.action == "ListShards":
            self.list_shards_calls += 1
            if payload.get("StreamName", self.stream_name) != self.stream_name:
                return MockResponse(400, {"__type": "ResourceNotFoundException",
                                          "message": f"Stream {payload['StreamName']} not found."})
            return {
                "Shards": [
                    {
                        "ShardId": shard_id,
                        "HashKeyRange": {"StartingHashKey": str(start),
                                         "EndingHashKey": str(end)},
                        "SequenceNumberRange": {"StartingSequenceNumber": "0"},
                    }
                    for shard_id, start, end in self.shards
                ]
            }
        assert request.action == "PutRecords", request.action
        call = self.put_calls
        self.put_calls += 1
        if self.request_fault is not None:
            fault = self.request_fault(request, call)
            if isinstance(fault, BaseException):
                raise fault
            if fault is not None:
                return fault
        if payload.get("StreamName") != self.stream_name:
            return MockResponse(400, {"__type": "ResourceNotFoundException",
                                      "message": f"Stream {payload.get('StreamName')} not found."})
        results: list[dict[str, Any]] = []
        failed = 0
        for entry in payload["Records"]:
            code = self.entry_fault(entry, call) if self.entry_fault else None
            if code is not None:
                failed += 1
                results.append({"ErrorCode": code, "ErrorMessage": f"injected {code}"})
                continue
            ehk = entry.get("ExplicitHashKey")
            hash_key = int(ehk) if ehk is not None else partition_key_hash(entry["PartitionKey"])
            shard_id = self._shard_for(hash_key)
            sequence = f"{next(self._seq):056d}"
            self.stored.append(Stored(shard_id, sequence, entry["PartitionKey"], ehk,
                                      base64.b64decode(entry["Data"])))
            results.append({"ShardId": shard_id, "SequenceNumber": sequence})
        return orjson.dumps({"FailedRecordCount": failed, "Records": results})

    def delivered(self) -> list[Delivered]:
        """Every user record stored, deaggregated by the reference library."""
        return deaggregate_reference(self.stored)


def deaggregate_reference(stored: list[Stored]) -> list[Delivered]:
    """Decode stored Kinesis records with aws_kinesis_agg (the reference deaggregator)."""
    out: list[Delivered] = []
    for record in stored:
        raw = {
            "SequenceNumber": record.sequence_number,
            "PartitionKey": record.partition_key,
            "ApproximateArrivalTimestamp": 0,
            "Data": record.data,
        }
        for user in iter_deaggregate_records([raw], data_format="Boto3"):
            kinesis = user["kinesis"]
            aggregated = kinesis.get("aggregated", False)
            data = base64.b64decode(kinesis["data"]) if aggregated else kinesis["data"]
            out.append(
                Delivered(
                    record.shard_id,
                    record.sequence_number,
                    kinesis.get("subSequenceNumber", 0),
                    kinesis["partitionKey"],
                    data,
                )
            )
    return out
