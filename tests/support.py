"""Test support shared by the server, producer and command-line tests.

boto3 and the ``kpl`` commands run their own (or no) event loop, so the real server
they talk to runs on a private loop in a thread, on port 0.

Shell tests that need a stream but no socket talk to :class:`EngineKinesis`, the server's
sans-IO engine behind a MockTransport, and run on :class:`VirtualTimeLoop` (``@virtual_time``):
its clock stands still while anything is ready to run and jumps to the next timer when
nothing is, so a test's timeouts, backoffs and TTLs pass in no wall time and always in
the same order.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import random
import selectors
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import boto3
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from kpl.client import KinesisClient
from kpl.protocol.hashing import partition_key_hash
from kpl.transport import MockRequest, MockResponse, MockTransport
from server import StreamServer
from server.core.engine import Engine, EngineConfig
from server.core.errors import KinesisError
from server.storage.memory import MemoryStorage


class FakeClock:
    """A settable clock for the server (epoch seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_P = ParamSpec("_P")
_R = TypeVar("_R")


class _JumpingSelector(selectors.BaseSelector):
    """A selector that, instead of blocking until a timer is due, moves the loop's
    clock to it. Real readiness (a thread's wake-up, a socket) still wins: it is
    polled first, and with no timer at all the selector blocks for real."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None or self._loop.threads_busy:
            # No timer to jump to, or a worker thread whose result is real: wait for real.
            return self._real.select(timeout)
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: ``time()`` moves only when every task waits for a
    timer, and then straight to the earliest one. Work in executor threads takes real
    time, so the clock holds still while any is running."""

    def __init__(self, start: float = 100_000.0) -> None:
        self._now = start
        self.threads_busy = 0
        super().__init__(_JumpingSelector(self))

    def run_in_executor(self, executor: Any, func: Callable[..., _R], *args: Any) -> Any:
        """Run ``func`` in a thread, holding the clock until it is done."""
        future = super().run_in_executor(executor, func, *args)
        self.threads_busy += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, future: asyncio.Future[Any]) -> None:
        self.threads_busy -= 1

    async def shutdown_default_executor(self, *args: Any) -> None:
        """Join the executor's threads with no (virtual) deadline: joining takes real time."""
        await super().shutdown_default_executor()

    def time(self) -> float:
        """The virtual clock (seconds)."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the selector does, when the loop would sleep)."""
        self._now += seconds


def virtual_time(test: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, _R]:
    """Run an async test on a fresh :class:`VirtualTimeLoop` (for tests without sockets)."""

    @functools.wraps(test)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            return runner.run(test(*args, **kwargs))

    return run


class ServerThread:
    """Runs a StreamServer on a private event loop until :meth:`stop`.

    ``ServerThread(**overrides).start()`` ... ``.stop()``, or ``with ServerThread() as s:``.
    """

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        #: The running server (for tests that look inside it), once started.
        self.server: StreamServer | None = None
        self._thread = threading.Thread(target=self._run, name="stream-server", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with StreamServer(port=0, **self._overrides) as server:
                self.server = server
                self.url = server.url
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as error:  # surfaced by start()
            self._error = error
            self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the test server did not start within 30 s")
        if self._error is not None:
            raise RuntimeError("the test server failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def make_client(url: str) -> Any:
    """A boto3 Kinesis client for the local server (no retries: errors show at once)."""
    from botocore.config import Config

    return boto3.client(
        "kinesis",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}),
    )


def serve_with_client(**overrides: Any) -> Iterator[Any]:
    """For a fixture: a server with ``overrides`` and a boto3 client for it, both closed after."""
    with ServerThread(**overrides) as thread:
        client = make_client(thread.url)
        try:
            yield client
        finally:
            client.close()


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
        return self.engine.handle(action, body, EPOCH + loop_time).body

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


async def read_back(client: KinesisClient, name: str) -> list[dict[str, Any]]:
    """Every user record in every shard, deaggregated by aws_kinesis_agg."""
    out: list[dict[str, Any]] = []
    for shard in await client.list_shards(name, open_only=False):
        shard_id = shard["ShardId"]
        start = int(shard["HashKeyRange"]["StartingHashKey"])
        end = int(shard["HashKeyRange"]["EndingHashKey"])
        for record in await client.read_shard(name, shard_id):
            raw = {**record, "ApproximateArrivalTimestamp": 0}
            for user in iter_deaggregate_records([raw], data_format="Boto3"):
                kinesis = user["kinesis"]
                aggregated = kinesis.get("aggregated", False)
                data = base64.b64decode(kinesis["data"]) if aggregated else kinesis["data"]
                out.append({
                    "shard_id": shard_id,
                    "in_range": start <= partition_key_hash(kinesis["partitionKey"]) <= end,
                    "sequence_number": kinesis["sequenceNumber"],
                    "sub_sequence_number": kinesis.get("subSequenceNumber", 0),
                    "partition_key": kinesis["partitionKey"],
                    "data": data,
                })
    return out
