"""A ProducerCore driven by a fake clock and a fake PutRecords endpoint (no IO)."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kpl.config import ProducerConfig
from kpl.consumer import deaggregate
from kpl.core.pipeline import (
    Completion,
    Delivered,
    Poll,
    ProducerCore,
    PutRecordsRequest,
    RecordResult,
    iter_completions,
)
from kpl.core.shard_map import ShardMap
from kpl.errors import RecordFailed
from kpl.protocol.hashing import HASH_KEY_SPACE, MAX_HASH_KEY, hash_key_for

Outcome = RecordResult | RecordFailed
# (entry, index) -> error code or None; lets a test fail chosen entries.
Injector = Callable[[dict[str, Any], int], "str | None"]


def even_shards(n: int, first: int = 0) -> list[tuple[str, int, int]]:
    step = HASH_KEY_SPACE // n
    return [
        (f"shardId-{first + i:012d}", i * step, MAX_HASH_KEY if i == n - 1 else (i + 1) * step - 1)
        for i in range(n)
    ]


@dataclass
class Stored:
    shard_id: str
    sequence: str
    entry: dict[str, Any]


@dataclass
class Harness:
    """A core, a fake clock and a fake stream that stores what it accepts."""

    config: ProducerConfig = field(default_factory=ProducerConfig)
    shards: list[tuple[str, int, int]] = field(default_factory=lambda: even_shards(4))
    #: The map the core starts with (default: the true one; None: no map yet).
    core_map: list[tuple[str, int, int]] | str | None = "same"
    now: float = 0.0
    core: ProducerCore = field(init=False)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    stored: list[Stored] = field(default_factory=list)
    sent: list[PutRecordsRequest] = field(default_factory=list)
    unanswered: list[PutRecordsRequest] = field(default_factory=list)
    refreshes: int = 0
    _handles: int = 0

    def __post_init__(self) -> None:
        self.core = ProducerCore("stream", self.config, rng=random.Random(42))
        self.true_map = ShardMap(self.shards)
        if self.core_map == "same":
            self.core.set_shard_map(self.shards, self.now)
        elif isinstance(self.core_map, list):
            self.core.set_shard_map(self.core_map, self.now)

    def put(
        self, data: bytes = b"x" * 100, key: str = "k", explicit_hash_key: str | None = None
    ) -> int:
        self._handles += 1
        self.core.add(data, key, explicit_hash_key, self._handles, self.now)
        return self._handles

    def poll(self) -> Poll:
        poll = self.core.poll(self.now)
        assert poll.deadline is None or poll.deadline > self.now, "a poll must not spin"
        self._resolve(poll.completions)
        if poll.refresh_shard_map:
            self.refreshes += 1
        self.sent.extend(poll.requests)
        self.unanswered.extend(poll.requests)
        return poll

    def _resolve(self, completions: list[Completion | Delivered]) -> None:
        for handle, outcome in iter_completions(completions):
            assert isinstance(handle, int)
            assert handle not in self.outcomes, "one completion per record"
            self.outcomes[handle] = outcome

    def answer(
        self,
        request: PutRecordsRequest,
        inject: Injector | None = None,
        answering_map: ShardMap | None = None,
    ) -> None:
        """Answer like the service: place each entry by its hash key, store it."""
        self.unanswered.remove(request)
        shard_map = answering_map or self.true_map
        results = []
        for i, entry in enumerate(orjson.loads(request.body)["Records"]):
            code = inject(entry, i) if inject else None
            if code:
                results.append({"ErrorCode": code, "ErrorMessage": f"{code} injected"})
                continue
            hash_key = hash_key_for(entry["PartitionKey"], entry.get("ExplicitHashKey"))
            shard_id = shard_map.shard_id_for(hash_key)
            assert shard_id is not None
            sequence = str(len(self.stored) + 1)
            self.stored.append(Stored(shard_id, sequence, entry))
            results.append({"ShardId": shard_id, "SequenceNumber": sequence})
        self._resolve(self.core.on_response(request, {"Records": results}, self.now))

    def fail(self, request: PutRecordsRequest, error: BaseException) -> None:
        self.unanswered.remove(request)
        self._resolve(self.core.on_error(request, error, self.now))

    def run(
        self, inject: Injector | None = None, until: float = 60.0, latency: float = 0.01
    ) -> None:
        """Poll and answer everything until the core is empty (or ``until``)."""
        while self.core.buffered_records and self.now < until:
            poll = self.poll()
            pending = list(self.unanswered)
            if pending:
                self.now += latency
                for request in pending:
                    self.answer(request, inject)
                continue
            if self.core.in_flight:
                raise AssertionError("requests in flight that the harness never saw")
            assert poll.deadline is not None, "records buffered but no deadline"
            self.now = poll.deadline

    def user_records_stored(self) -> list[tuple[str, str, bytes, int]]:
        """(shard, partition key, data, sub-sequence) of everything the stream stored."""
        out = []
        for item in self.stored:
            data = base64.b64decode(item.entry["Data"])
            for record in deaggregate(
                data, item.entry["PartitionKey"], item.entry.get("ExplicitHashKey")
            ):
                out.append(
                    (item.shard_id, record.partition_key, record.data, record.sub_sequence_number)
                )
        return out


def keys(n: int) -> list[str]:
    return [f"user-{i}" for i in range(n)]


def first_copies(
    stored: list[tuple[str, str, bytes, int]], true_map: ShardMap
) -> dict[str, list[bytes]]:
    """Per key, what a consumer reads (sub-records in the shard owning their hash key),
    each record at its first copy (a record sent again after a misprediction may be
    stored twice: at least once, never out of order)."""
    read: dict[str, list[bytes]] = {}
    for shard_id, key, data, _sub in stored:
        if true_map.shard_id_for(hash_key_for(key)) == shard_id:
            seen = read.setdefault(key, [])
            if data not in seen:
                seen.append(data)
    return read
