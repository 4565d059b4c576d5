"""Shared helpers for the producer's shell tests: the server's sans-IO engine behind a
MockTransport, with the failures a test injects, and decoding of what it stored through
the reference deaggregator."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from kpl.transport import MockRequest, MockResponse, MockTransport
from server.core.engine import Engine, EngineConfig
from server.core.errors import KinesisError
from server.storage.memory import MemoryStorage

#: The engine's epoch seconds at virtual loop time 0 (any fixed date works).
EPOCH = 1_800_000_000.0


@dataclass(frozen=True, slots=True)
class Stored:
    """One Kinesis record as the stream stores it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Delivered:
    """One user record read back through aws_kinesis_agg."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    data: bytes


# Decides the fate of one PutRecords entry: None to store it, or an error code.
EntryFault = Callable[[dict[str, Any], int], str | None]
# Decides the fate of a whole call: None to answer, else an exception to raise or a
# MockResponse to return.
RequestFault = Callable[[MockRequest, int], BaseException | MockResponse | None]


class EngineKinesis:
    """The stream server's engine (memory storage, no throughput limits) answering a
    producer's MockTransport, plus the failures a test injects around it.

    ``entry_fault`` fails chosen PutRecords entries with an error code (the others are
    written by the engine); ``request_fault`` fails whole PutRecords calls; a stall is
    :meth:`transport` with a ``gate`` event. The engine's clock is the running loop's.
    """

    def __init__(
        self,
        stream_name: str = "s",
        shards: int = 4,
        entry_fault: EntryFault | None = None,
        request_fault: RequestFault | None = None,
    ) -> None:
        self.stream_name = stream_name
        self.entry_fault = entry_fault
        self.request_fault = request_fault
        self.put_calls = 0
        self.list_shards_calls = 0
        self.engine = Engine(
            EngineConfig(state_delay_seconds=0.0), MemoryStorage(), random.Random(7)
        )
        self._call("CreateStream", {"StreamName": stream_name, "ShardCount": shards})

    def _call(self, action: str, body: dict[str, Any]) -> Any:
        try:
            loop_time = asyncio.get_running_loop().time()
        except RuntimeError:  # set-up outside the loop
            loop_time = 0.0
        return self.engine.handle(action, body, EPOCH + loop_time)

    def transport(self, gate: asyncio.Event | None = None) -> MockTransport:
        """A transport to the engine; with ``gate``, PutRecords calls wait until it is set."""
        if gate is None:
            return MockTransport(self.handle)

        async def gated(request: MockRequest) -> Any:
            if request.action == "PutRecords":
                await gate.wait()
            return self.handle(request)

        return MockTransport(gated)

    def handle(self, request: MockRequest) -> Any:
        """Answer one call as the service would, after the injected failures."""
        body = request.json()
        if request.action == "ListShards":
            self.list_shards_calls += 1
        if request.action != "PutRecords":
            return self._answer(request.action, body)
        call = self.put_calls
        self.put_calls += 1
        if self.request_fault is not None:
            fault = self.request_fault(request, call)
            if isinstance(fault, BaseException):
                raise fault
            if fault is not None:
                return fault
        if self.entry_fault is None:
            return self._answer("PutRecords", body)
        codes = [self.entry_fault(entry, call) for entry in body["Records"]]
        kept = [entry for entry, code in zip(body["Records"], codes, strict=True) if code is None]
        written: list[dict[str, Any]] = []
        if kept:
            answer = self._answer("PutRecords", {**body, "Records": kept})
            if isinstance(answer, MockResponse):
                return answer
            written = answer["Records"]
        results = iter(written)
        records = [
            next(results) if code is None else {"ErrorCode": code, "ErrorMessage": "injected"}
            for code in codes
        ]
        failed = sum("ErrorCode" in r for r in records)
        return {"FailedRecordCount": failed, "Records": records}

    def _answer(self, action: str, body: dict[str, Any]) -> Any:
        try:
            return self._call(action, body)
        except KinesisError as error:
            return MockResponse(error.status, {"__type": error.code, "message": error.message})

    def shard_ranges(self) -> list[tuple[str, int, int]]:
        """Every shard of the stream, closed ones too: (shard id, first hash, last hash)."""
        shards = self._call("ListShards", {"StreamName": self.stream_name})["Shards"]
        return [
            (
                s["ShardId"],
                int(s["HashKeyRange"]["StartingHashKey"]),
                int(s["HashKeyRange"]["EndingHashKey"]),
            )
            for s in shards
        ]

    def split_every_shard(self) -> None:
        """Split each open shard in two at its middle (a reshard the producer is not told of)."""
        shards = self._call("ListShards", {"StreamName": self.stream_name})["Shards"]
        for shard in shards:
            if "EndingSequenceNumber" in shard["SequenceNumberRange"]:
                continue
            start = int(shard["HashKeyRange"]["StartingHashKey"])
            end = int(shard["HashKeyRange"]["EndingHashKey"])
            self._call("SplitShard", {
                "StreamName": self.stream_name,
                "ShardToSplit": shard["ShardId"],
                "NewStartingHashKey": str((start + end) // 2 + 1),
            })

    @property
    def stored(self) -> list[Stored]:
        """Every Kinesis record in the stream, shard by shard, each shard in arrival order."""
        out: list[Stored] = []
        for shard_id, _, _ in self.shard_ranges():
            iterator = self._call("GetShardIterator", {
                "StreamName": self.stream_name,
                "ShardId": shard_id,
                "ShardIteratorType": "TRIM_HORIZON",
            })["ShardIterator"]
            while True:
                page = self._call("GetRecords", {"ShardIterator": iterator})
                out += [
                    Stored(shard_id, r["SequenceNumber"], r["PartitionKey"], r["Data"])
                    for r in page["Records"]
                ]
                iterator = page.get("NextShardIterator")  # none at a closed shard's end
                if not page["Records"] or iterator is None:
                    break
        return out

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
