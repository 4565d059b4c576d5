"""``kpl streams create|list|describe|delete|split|merge|scale``: thin wrappers over the API.

Each subcommand opens one :class:`kpl.KinesisClient`, makes its calls and prints a short
human answer (a table on a terminal) or, with ``--json``, the API's answer as JSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from kpl.cli._common import (
    CliError,
    IntRange,
    check_region,
    describe_error,
    endpoint_options,
    resolve_endpoint,
    wait_for_active,
)
from kpl.client import KinesisClient
from kpl.errors import KinesisError, ResourceNotFoundException
from kpl.runner import run

__all__ = ["streams"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
_wait_option = click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until the stream is ACTIVE."
)


def _print_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _with_client(
    endpoint: str | None, region: str | None, action: Callable[[KinesisClient], Awaitable[Any]]
) -> Any:
    url = resolve_endpoint(endpoint)
    check_region(url, region)

    async def go() -> Any:
        try:
            async with KinesisClient(url, region=region) as client:
                return await action(client)
        except KinesisError as error:
            raise CliError(describe_error(error, url)) from error
        except TimeoutError as error:
            raise CliError(describe_error(error, url)) from error

    try:
        return run(go())
    except ValueError as error:  # e.g. no region for a real AWS endpoint
        raise CliError(str(error)) from error


async def _stream_or_fail(client: KinesisClient, name: str) -> dict[str, Any]:
    try:
        return await client.describe_stream_summary(name)
    except ResourceNotFoundException as error:
        raise CliError(f"stream {name!r} not found ({error.message})") from error


@click.group("streams")
def streams() -> None:
    """Create, list, describe, delete and reshard streams."""


@streams.command("create")
@click.argument("name")
@click.option("--shards", type=IntRange(min=1), default=1, show_default=True)
@click.option("--on-demand", is_flag=True, help="ON_DEMAND capacity mode (no shard count).")
@_wait_option
@endpoint_options
def create(
    name: str, shards: int, on_demand: bool, wait: bool, endpoint: str | None, region: str | None
) -> None:
    """Create stream NAME."""

    async def action(client: KinesisClient) -> dict[str, Any] | None:
        await client.create_stream(name, shards, on_demand=on_demand)
        return await wait_for_active(client, name) if wait else None

    summary = _with_client(endpoint, region, action)
    count = summary.get("OpenShardCount", shards) if summary else shards
    state = "ACTIVE" if wait else "CREATING"
    click.echo(f"created stream {name} ({count} shards, {state})")


@streams.command("list")
@_json_option
@endpoint_options
def list_(as_json: bool, endpoint: str | None, region: str | None) -> None:
    """List the streams."""

    async def action(client: KinesisClient) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        payload: dict[str, Any] = {}
        while True:
            answer = await client.call("ListStreams", payload)
            names = answer.get("StreamNames", [])
            by_name = {s.get("StreamName"): s for s in answer.get("StreamSummaries", [])}
            for stream_name in names:
                summaries.append(by_name.get(stream_name, {"StreamName": stream_name}))
            if not answer.get("HasMoreStreams") or not names:
                return summaries
            payload = {"ExclusiveStartStreamName": names[-1]}

    summaries = _with_client(endpoint, region, action)
    if as_json:
        _print_json(summaries)
        return
    if not summaries:
        click.echo("no streams")
        return
    table = Table("stream", "status", "mode", box=None, pad_edge=False)
    for s in summaries:
        mode = s.get("StreamModeDetails", {}).get("StreamMode", "")
        table.add_row(s.get("StreamName", ""), s.get("StreamStatus", ""), mode)
    Console(soft_wrap=True).print(table)


def _shard_table(shards: list[dict[str, Any]]) -> Table:
    table = Table("shard", "parent", "hash range (first..last)", "state", box=None, pad_edge=False)
    for shard in shards:
        hash_range = shard.get("HashKeyRange", {})
        parents = ",".join(
            p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p
        )
        closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
        table.add_row(
            shard.get("ShardId", ""),
            parents or "-",
            f"{hash_range.get('StartingHashKey', '?')}..{hash_range.get('EndingHashKey', '?')}",
            "closed" if closed else "open",
        )
    return table


@streams.command("describe")
@click.argument("name")
@click.option("--all-shards", is_flag=True, help="Also list closed (parent) shards.")
@_json_option
@endpoint_options
def describe(
    name: str, all_shards: bool, as_json: bool, endpoint: str | None, region: str | None
) -> None:
    """Describe stream NAME and its shards."""

    async def action(client: KinesisClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        summary = await _stream_or_fail(client, name)
        shards = await client.list_shards(name, open_only=not all_shards)
        return summary, shards

    summary, shards = _with_client(endpoint, region, action)
    if as_json:
        _print_json({"StreamDescriptionSummary": summary, "Shards": shards})
        return
    console = Console(soft_wrap=True)
    mode = summary.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
    console.print(
        f"stream {summary.get('StreamName', name)}: {summary.get('StreamStatus')}, {mode}, "
        f"{summary.get('OpenShardCount', len(shards))} open shards, "
        f"retention {summary.get('RetentionPeriodHours', '?')} h",
        highlight=False,
    )
    if summary.get("StreamARN"):
        console.print(f"arn {summary['StreamARN']}", highlight=False)
    console.print(_shard_table(shards))


@streams.command("delete")
@click.argument("name")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until it is gone.")
@endpoint_options
def delete(name: str, wait: bool, endpoint: str | None, region: str | None) -> None:
    """Delete stream NAME."""

    async def action(client: KinesisClient) -> None:
        await _stream_or_fail(client, name)
        await client.delete_stream(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while wait:
            try:
                await client.describe_stream_summary(name)
            except ResourceNotFoundException:
                return
            if loop.time() > deadline:
                raise CliError(f"stream {name!r} still exists 60 s after DeleteStream")
            # Polling a remote state: there is nothing to await but time.
            await asyncio.sleep(0.05)

    _with_client(endpoint, region, action)
    click.echo(f"deleted stream {name}")


async def _reshard_then_wait(
    client: KinesisClient, name: str, call: Awaitable[Any], wait: bool
) -> list[dict[str, Any]]:
    await call
    if wait:
        await wait_for_active(client, name)
    return await client.list_shards(name)


@streams.command("split")
@click.argument("name")
@click.argument("shard_id")
@click.option(
    "--at",
    "at_hash_key",
    metavar="HASH_KEY",
    default=None,
    help="First hash key of the new upper child (default: the middle of the shard's range).",
)
@_wait_option
@endpoint_options
def split(
    name: str,
    shard_id: str,
    at_hash_key: str | None,
    wait: bool,
    endpoint: str | None,
    region: str | None,
) -> None:
    """Split SHARD_ID of stream NAME in two."""

    async def action(client: KinesisClient) -> list[dict[str, Any]]:
        await _stream_or_fail(client, name)
        key = at_hash_key
        if key is None:
            shards = await client.list_shards(name)
            match = [s for s in shards if s["ShardId"] == shard_id]
            if not match:
                raise CliError(f"stream {name!r} has no open shard {shard_id!r}")
            hash_range = match[0]["HashKeyRange"]
            first = int(hash_range["StartingHashKey"])
            last = int(hash_range["EndingHashKey"])
            if first == last:
                raise CliError(f"shard {shard_id} covers a single hash key and cannot split")
            key = str((first + last + 1) // 2)
        return await _reshard_then_wait(client, name, client.split_shard(name, shard_id, key), wait)

    shards = _with_client(endpoint, region, action)
    click.echo(f"split {shard_id} of {name}; open shards now:")
    Console(soft_wrap=True).print(_shard_table(shards))


@streams.command("merge")
@click.argument("name")
@click.argument("shard_id")
@click.argument("adjacent_shard_id")
@_wait_option
@endpoint_options
def merge(
    name: str,
    shard_id: str,
    adjacent_shard_id: str,
    wait: bool,
    endpoint: str | None,
    region: str | None,
) -> None:
    """Merge SHARD_ID with ADJACENT_SHARD_ID in stream NAME."""

    async def action(client: KinesisClient) -> list[dict[str, Any]]:
        await _stream_or_fail(client, name)
        return await _reshard_then_wait(
            client, name, client.merge_shards(name, shard_id, adjacent_shard_id), wait
        )

    shards = _with_client(endpoint, region, action)
    click.echo(f"merged {shard_id} and {adjacent_shard_id} of {name}; open shards now:")
    Console(soft_wrap=True).print(_shard_table(shards))


@streams.command("scale")
@click.argument("name")
@click.argument("shard_count", type=IntRange(min=1))
@_wait_option
@endpoint_options
def scale(
    name: str, shard_count: int, wait: bool, endpoint: str | None, region: str | None
) -> None:
    """Scale stream NAME to SHARD_COUNT open shards (UpdateShardCount, uniform)."""

    async def action(client: KinesisClient) -> list[dict[str, Any]]:
        await _stream_or_fail(client, name)
        return await _reshard_then_wait(
            client, name, client.update_shard_count(name, shard_count), wait
        )

    shards = _with_client(endpoint, region, action)
    click.echo(f"scaled {name} to {len(shards) if wait else shard_count} open shards")
