"""``kpl tail STREAM``: follow every shard and print one user record per line.

One reader task per shard. A reader that reaches the end of a closed shard (no
``NextShardIterator``) hands over to the shard's children (``ChildShards``, or ListShards
when the answer has none); a child starts once every parent being read has finished, so a
partition key's records come out in order across a split or a merge. KPL-aggregated
records are taken apart; each user record is printed as
``PARTITION_KEY<TAB>SEQUENCE/SUBSEQUENCE<TAB>DATA`` (data as text when it is printable
UTF-8, else ``base64:...``), or as one JSON object per line with ``--json``.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from dataclasses import dataclass, field
from typing import Any, Final

import click
import orjson

from kpl.cli._common import (
    CliError,
    IntRange,
    check_region,
    describe_error,
    endpoint_options,
    resolve_endpoint,
)
from kpl.client import KinesisClient
from kpl.consumer import UserRecord, deaggregate
from kpl.consumer.core.lineage import Lineage, ShardInfo
from kpl.errors import (
    ExpiredIteratorException,
    KinesisError,
    ProvisionedThroughputExceededException,
    ResourceNotFoundException,
)
from kpl.runner import run

__all__ = ["format_line", "tail", "user_records"]

#: Between two GetRecords calls on an idle shard (the service allows 5 calls/s per shard).
IDLE_POLL_S: Final = 0.25
#: After a read throttle.
THROTTLED_POLL_S: Final = 1.0


def user_records(record: dict[str, Any]) -> list[UserRecord]:
    """The user records of one GetRecords record (``Data`` already bytes)."""
    return deaggregate(
        record["Data"],
        str(record["PartitionKey"]),
        record.get("ExplicitHashKey"),
        str(record["SequenceNumber"]),
    )


def _text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # One record per line: anything that would break the line is shown as base64.
    return text if text.isprintable() else None


def format_line(
    shard_id: str, record: UserRecord, *, as_json: bool = False, worker: str | None = None
) -> str:
    """The printed form of one user record (``worker``: who delivered it, in JSON)."""
    text = _text(record.data)
    if as_json:
        obj: dict[str, Any] = {
            "shard_id": shard_id,
            "partition_key": record.partition_key,
            "sequence_number": record.sequence_number,
            "sub_sequence_number": record.sub_sequence_number,
            "aggregated": record.aggregated,
        }
        if text is None:
            obj["data_base64"] = base64.b64encode(record.data).decode("ascii")
        else:
            obj["data"] = text
        if worker is not None:
            obj["worker"] = worker
        return orjson.dumps(obj).decode()
    shown = text if text is not None else "base64:" + base64.b64encode(record.data).decode("ascii")
    return f"{record.partition_key}\t{record.sequence_number}/{record.sub_sequence_number}\t{shown}"


@dataclass
class _Follower:
    """The shards being read, and who may start when."""

    client: KinesisClient
    stream: str
    follow: bool
    as_json: bool
    max_records: int | None
    #: The shards that will be read and which may start (parents before children).
    lineage: Lineage = field(default_factory=Lineage)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    printed: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, shard_id: str, iterator_type: str, iterator: str | None = None) -> None:
        if self.done.is_set():
            return
        task = asyncio.create_task(
            self._read(shard_id, iterator_type, iterator), name=f"tail {shard_id}"
        )
        self.tasks.add(task)
        task.add_done_callback(self._reader_done)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.done.set()  # the error is collected by the caller
        elif not self.tasks:
            self.done.set()

    def _emit(self, shard_id: str, record: dict[str, Any]) -> None:
        out = sys.stdout
        for user_record in user_records(record):
            out.write(format_line(shard_id, user_record, as_json=self.as_json) + "\n")
            self.printed += 1
            if self.max_records is not None and self.printed >= self.max_records:
                out.flush()
                self.done.set()
                return
        out.flush()

    async def _children_of(self, shard_id: str, answer: dict[str, Any]) -> list[ShardInfo]:
        children: list[dict[str, Any]] | None = answer.get("ChildShards")
        if children is not None:
            return [ShardInfo.from_api(child) for child in children]
        # An answer without ChildShards: find the children in the shard list.
        shards = await self.client.list_shards(self.stream, open_only=False)
        infos = [ShardInfo.from_api(s) for s in shards]
        return [s for s in infos if shard_id in s.parent_shard_ids]

    def _hand_over(self, shard_id: str, children: list[ShardInfo]) -> None:
        for child_id in self.lineage.finish(shard_id, children):
            self.start(child_id, "TRIM_HORIZON")

    async def _read(self, shard_id: str, iterator_type: str, iterator: str | None) -> None:
        client = self.client
        if iterator is None:
            iterator = await client.get_shard_iterator(self.stream, shard_id, iterator_type)
        last_sequence: str | None = None
        while iterator is not None and not self.done.is_set():
            try:
                answer = await client.get_records(iterator)
            except ProvisionedThroughputExceededException:
                await asyncio.sleep(THROTTLED_POLL_S)
                continue
            except ExpiredIteratorException:
                iterator = await client.get_shard_iterator(
                    self.stream,
                    shard_id,
                    "AFTER_SEQUENCE_NUMBER" if last_sequence else iterator_type,
                    starting_sequence_number=last_sequence,
                )
                continue
            records = answer.get("Records", [])
            for record in records:
                if self.done.is_set():
                    return
                self._emit(shard_id, record)
                last_sequence = str(record["SequenceNumber"])
            iterator = answer.get("NextShardIterator")
            if iterator is None:
                self._hand_over(shard_id, await self._children_of(shard_id, answer))
                return
            if not records:
                if not self.follow and answer.get("MillisBehindLatest", 0) == 0:
                    return
                await asyncio.sleep(IDLE_POLL_S)


async def _tail(
    url: str | None,
    region: str | None,
    stream: str,
    start: str,
    follow: bool,
    as_json: bool,
    max_records: int | None,
) -> int:
    async with KinesisClient(url, region=region) as client:
        try:
            shards = await client.list_shards(stream, open_only=False)
        except ResourceNotFoundException as error:
            raise CliError(f"stream {stream!r} not found ({error.message})") from error
        infos = [ShardInfo.from_api(s) for s in shards]
        if start == "latest":
            # Closed shards hold nothing newer than LATEST: only the open ones are read,
            # and their parents are never waited for.
            lineage = Lineage(s for s in infos if s.is_open)
            iterator_type = "LATEST"
        else:
            # Oldest first: shards whose parents are gone (or never were) start now; the
            # others wait for their parents to hand over.
            lineage = Lineage(infos)
            iterator_type = "TRIM_HORIZON"
        follower = _Follower(client, stream, follow, as_json, max_records, lineage)
        # The first iterators are taken before anything is announced, so a record put
        # after the announcement is seen even from LATEST.
        root_ids = lineage.take_ready()
        iterators = await asyncio.gather(
            *(client.get_shard_iterator(stream, shard_id, iterator_type) for shard_id in root_ids)
        )
        for shard_id, iterator in zip(root_ids, iterators, strict=True):
            follower.start(shard_id, iterator_type, iterator)
        click.echo(
            f"kpl tail: {'following' if follow else 'reading'} {len(root_ids)} shards of "
            f"{stream} from {start} (Ctrl-C stops)",
            err=True,
        )
        try:
            if follower.tasks:
                await follower.done.wait()
        finally:
            tasks = list(follower.tasks)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        return 0


@click.command("tail", short_help="Print the records of a stream as they arrive.")
@click.argument("stream")
@click.option(
    "--from",
    "start",
    type=click.Choice(["latest", "trim-horizon"]),
    default="latest",
    show_default=True,
    help="Start at new records only, or at the oldest record kept.",
)
@click.option(
    "--no-follow",
    is_flag=True,
    help="Stop once every shard has been read up to its tip instead of waiting for more.",
)
@click.option(
    "-n",
    "--max-records",
    type=IntRange(min=1),
    default=None,
    help="Stop after printing this many user records.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user record.")
@endpoint_options
def tail(
    stream: str,
    start: str,
    no_follow: bool,
    max_records: int | None,
    as_json: bool,
    endpoint: str | None,
    region: str | None,
) -> int:
    """Print the records of STREAM as they arrive, one user record per line.

    Follows every shard, across splits and merges, and takes KPL-aggregated records apart.
    Lines are PARTITION_KEY, SEQUENCE/SUB-SEQUENCE and the data (text, or base64:...),
    separated by tabs. Ctrl-C stops.
    """
    url = resolve_endpoint(endpoint)
    check_region(url, region)
    try:
        return run(_tail(url, region, stream, start, not no_follow, as_json, max_records))
    except KinesisError as error:
        raise CliError(describe_error(error, url)) from error
    except ValueError as error:
        raise CliError(str(error)) from error
    except KeyboardInterrupt:
        return 0
