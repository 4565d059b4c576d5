"""Every ``kpl`` command through its real entry point (click's runner)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from click.testing import CliRunner, Result

from kpl.cli import cli
from kpl.client import KinesisClient
from kpl.loadgen import RecordSource

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, list(args), catch_exceptions=False)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ----------------------------------------------------------------------------- load


def test_load_records_json_on_the_embedded_server(runner: CliRunner) -> None:
    result = invoke(runner, "load", "--records", "3000", "--shards", "2", "--json", "--seed", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records_sent"] == 3000
    assert summary["records_acked"] == 3000
    assert summary["records_failed"] == 0
    assert summary["duration_s"] > 0
    assert summary["records_per_s"] == pytest.approx(3000 / summary["duration_s"], rel=0.01)
    assert summary["bytes_per_s"] == pytest.approx(summary["records_per_s"] * 100, rel=0.01)
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # Batched: at most one Kinesis record per user record (fewer once the producer
    # aggregates), in far fewer PutRecords calls.
    assert 0 < summary["kinesis_records"] <= 3000
    assert 0 < summary["put_records_calls"] <= summary["kinesis_records"]
    assert summary["settings"]["shards"] == 2
    assert summary["interrupted"] is False
    assert isinstance(summary["errors_by_code"], dict)


def test_load_without_aggregation_sends_one_kinesis_record_each(runner: CliRunner) -> None:
    result = invoke(
        runner, "load", "--records", "500", "--no-aggregation", "--json", "--record-size", "10-50"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records_acked"] == 500
    assert summary["kinesis_records"] == 500
    assert summary["settings"]["aggregation_enabled"] is False
    assert summary["settings"]["record_size"] == "10-50"


def test_load_paced_by_duration(runner: CliRunner) -> None:
    result = invoke(runner, "load", "--duration", "1", "--rate", "200", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # One second at 200/s: the schedule grants floor(1.0 * 200) + 1 at most. How many a
    # loaded machine manages in a wall-clock second varies; the exact count is checked
    # on virtual time in test_load_run.py.
    assert 0 < summary["records_sent"] <= 201
    assert summary["records_acked"] == summary["records_sent"]


def test_load_plain_progress_and_summary_when_not_a_terminal(runner: CliRunner) -> None:
    result = invoke(runner, "load", "--records", "200")
    assert result.exit_code == 0, result.output
    assert "kpl load summary" in result.stdout
    assert "records acknowledged" in result.stdout
    assert "200" in result.stdout


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_load_report(runner: CliRunner, tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"run{suffix}"
    result = invoke(runner, "load", "--records", "500", "--json", "--report", str(target))
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    if suffix == ".png":
        assert data.startswith(PNG_MAGIC)
    else:
        page = data.decode()
        assert page.startswith("<!DOCTYPE html>")
        assert "<svg" in page
        assert "kpl-load" in page


def test_load_against_an_endpoint(runner: CliRunner, server_url: str) -> None:
    result = invoke(
        runner, "load", "--endpoint", server_url, "--stream", "ext", "--records", "300", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records_acked"] == 300
    assert summary["settings"]["endpoint"] == server_url


def test_load_counts_retries_and_throttles(runner: CliRunner) -> None:
    # The embedded server throttles a fifth of the entries: every record still arrives.
    result = invoke(
        runner, "load", "--records", "2000", "--no-aggregation", "--json",
        "--server-args", "--throttle-rate 0.2 --seed 3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records_acked"] == 2000
    assert summary["records_failed"] == 0
    assert summary["throttles"] > 100
    assert summary["retries"] >= summary["throttles"]
    assert (
        summary["errors_by_code"]["ProvisionedThroughputExceededException"]
        == (summary["throttles"])
    )
    assert summary["settings"]["server_args"] == "--throttle-rate 0.2 --seed 3"


def test_load_failed_records_exit_non_zero_with_the_summary(runner: CliRunner) -> None:
    result = invoke(
        runner, "load", "--records", "50", "--json", "--record-ttl", "0.3",
        "--server-args", "--internal-failure-rate 1",
    )  # fmt: skip
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["records_sent"] == 50
    assert summary["records_acked"] == 0
    assert summary["records_failed"] == 50
    assert sum(summary["failures_by_code"].values()) == 50
    assert summary["errors_by_code"]["InternalFailure"] >= 50
    assert result.stderr.strip().splitlines() == ["kpl load: 50 records failed, 0 unresolved"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--bogus"], "No such option"),
        (["--records", "5", "--duration", "1"], "not both"),
        (["--records", "0"], "--records"),
        (["--record-size", "9-3"], "record size"),
        (["--record-size", "2000000"], "record limit"),
        (["--rate", "-1"], "--rate"),
        (["--rate-limit", "0"], "rate_limit"),
        (["--report", "out.txt"], ".html or .png"),
        (["--endpoint", "ftp://x"], "http://"),
        (["--endpoint", "http://127.0.0.1:1", "--server-args", "--port 1"], "embedded"),
        (["--server-args", "--no-such-flag"], "--no-such-flag"),
        (["--server-args", "--limits sometimes"], "--limits"),
    ],
)
def test_load_bad_flags_are_one_line(runner: CliRunner, args: list[str], fragment: str) -> None:
    assert_one_line_error(invoke(runner, "load", *args), fragment)


def test_load_unreachable_endpoint_is_one_line(runner: CliRunner) -> None:
    result = invoke(runner, "load", "--endpoint", "http://127.0.0.1:1", "--records", "10")
    assert_one_line_error(result, "cannot reach http://127.0.0.1:1")
    assert result.exit_code == 1


# ----------------------------------------------------------------------------- streams


def test_streams_round_trip(runner: CliRunner, server_url: str) -> None:
    ep = ("--endpoint", server_url)
    result = invoke(runner, "streams", "create", "orders", "--shards", "2", *ep)
    assert result.exit_code == 0, result.output
    assert "created stream orders (2 shards, ACTIVE)" in result.stdout

    result = invoke(runner, "streams", "list", *ep)
    assert result.exit_code == 0, result.output
    assert "orders" in result.stdout
    assert "ACTIVE" in result.stdout

    result = invoke(runner, "streams", "describe", "orders", "--json", *ep)
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert described["StreamDescriptionSummary"]["StreamName"] == "orders"
    assert [s["ShardId"] for s in described["Shards"]] == [
        "shardId-000000000000",
        "shardId-000000000001",
    ]

    result = invoke(runner, "streams", "describe", "orders", *ep)
    assert result.exit_code == 0, result.output
    assert "shardId-000000000001" in result.stdout

    result = invoke(runner, "streams", "delete", "orders", *ep)
    assert result.exit_code == 0, result.output
    result = invoke(runner, "streams", "list", "--json", *ep)
    assert json.loads(result.stdout) == []


def test_streams_reshard(runner: CliRunner, server_url: str) -> None:
    ep = ("--endpoint", server_url)
    assert invoke(runner, "streams", "create", "r", "--shards", "2", *ep).exit_code == 0

    result = invoke(runner, "streams", "split", "r", "shardId-000000000000", *ep)
    assert result.exit_code == 0, result.output
    opened = _open_shards(runner, server_url, "r")
    assert opened == ["shardId-000000000001", "shardId-000000000002", "shardId-000000000003"]

    result = invoke(
        runner, "streams", "merge", "r", "shardId-000000000002", "shardId-000000000003", *ep
    )
    assert result.exit_code == 0, result.output
    assert _open_shards(runner, server_url, "r") == [
        "shardId-000000000001",
        "shardId-000000000004",
    ]

    result = invoke(runner, "streams", "scale", "r", "4", *ep)
    assert result.exit_code == 0, result.output
    assert "scaled r to 4 open shards" in result.stdout
    assert len(_open_shards(runner, server_url, "r")) == 4


def _open_shards(runner: CliRunner, url: str, name: str) -> list[str]:
    result = invoke(runner, "streams", "describe", name, "--json", "--endpoint", url)
    assert result.exit_code == 0, result.output
    return sorted(s["ShardId"] for s in json.loads(result.stdout)["Shards"])


def test_streams_errors_are_one_line(runner: CliRunner, server_url: str) -> None:
    ep = ("--endpoint", server_url)
    assert_one_line_error(invoke(runner, "streams", "describe", "missing", *ep), "not found")
    assert_one_line_error(invoke(runner, "streams", "delete", "missing", *ep), "not found")
    assert_one_line_error(invoke(runner, "streams", "scale", "missing", "2", *ep), "not found")
    assert invoke(runner, "streams", "create", "dup", *ep).exit_code == 0
    assert_one_line_error(invoke(runner, "streams", "create", "dup", *ep), "ResourceInUse")
    assert_one_line_error(
        invoke(runner, "streams", "split", "dup", "shardId-000000000009", *ep), "no open shard"
    )
    assert_one_line_error(
        invoke(runner, "streams", "list", "--endpoint", "http://127.0.0.1:1"), "cannot reach"
    )
    assert_one_line_error(invoke(runner, "streams", "list", "--endpoint", "nope"), "--endpoint")
    assert_one_line_error(invoke(runner, "streams", "create", "x", "--shards", "0", *ep), "0")


# ----------------------------------------------------------------------------- tail


async def _put_plain(url: str, stream: str, records: list[tuple[bytes, str]]) -> None:
    async with KinesisClient(url) as client:
        for data, key in records:
            await client.put_record(stream, data, key)


def _parse_tail(stdout: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in stdout.splitlines():
        key, position, data = line.split("\t")
        rows.append((key, position, data))
    return rows


def test_tail_prints_what_was_put(runner: CliRunner, server_url: str) -> None:
    # Aggregated records from the load generator (seeded, so we know what it put) ...
    result = invoke(
        runner, "load", "--endpoint", server_url, "--stream", "t", "--shards", "2",
        "--records", "400", "--seed", "5", "--keys", "20", "--record-size", "8-40", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    source = RecordSource(random.Random(5), size_min=8, size_max=40, keys=20)
    expected = {(key, data.decode()) for data, key in (source.next() for _ in range(400))}
    # ... two plain ones, one of them binary, and one aggregated by the reference library.
    aggregator = RecordAggregator()
    for i in range(3):
        aggregator.add_user_record(f"agg-{i}", f"sub-{i}".encode())
    agg_key, _, agg_data = aggregator.clear_and_get().get_contents()
    asyncio.run(
        _put_plain(
            server_url,
            "t",
            [(b"hello tail", "plain"), (b"\x00\xffbin", "bin"), (agg_data, agg_key)],
        )
    )

    result = invoke(
        runner, "tail", "t", "--from", "trim-horizon", "--no-follow", "--endpoint", server_url
    )
    assert result.exit_code == 0, result.output
    rows = _parse_tail(result.stdout)
    assert len(rows) == 405
    got = {(key, data) for key, _, data in rows}
    assert expected <= got
    assert ("plain", "hello tail") in got
    assert ("bin", "base64:" + base64.b64encode(b"\x00\xffbin").decode()) in got
    # The aggregated record comes out as its user records: one sequence number, and
    # sub-sequence numbers counting up.
    subs = [(key, pos.split("/"), data) for key, pos, data in rows if key.startswith("agg-")]
    assert [(key, data) for key, _, data in subs] == [(f"agg-{i}", f"sub-{i}") for i in range(3)]
    assert len({seq for _, (seq, _), _ in subs}) == 1
    assert [int(sub) for _, (_, sub), _ in subs] == [0, 1, 2]


def test_tail_follows_across_a_split(runner: CliRunner, server_url: str) -> None:
    ep = ("--endpoint", server_url)
    assert invoke(runner, "streams", "create", "s", "--shards", "1", *ep).exit_code == 0
    before = [(f"before-{i}".encode(), f"k{i}") for i in range(20)]
    after = [(f"after-{i}".encode(), f"k{i}") for i in range(20)]
    asyncio.run(_put_plain(server_url, "s", before))
    assert invoke(runner, "streams", "split", "s", "shardId-000000000000", *ep).exit_code == 0
    asyncio.run(_put_plain(server_url, "s", after))

    result = invoke(runner, "tail", "s", "--from", "trim-horizon", "--no-follow", "--json", *ep)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 40
    by_key: dict[str, list[str]] = {}
    for line in lines:
        by_key.setdefault(line["partition_key"], []).append(line["data"])
    # Every key's records in put order: the parent is read before its children.
    for i in range(20):
        assert by_key[f"k{i}"] == [f"before-{i}", f"after-{i}"]
    assert {line["shard_id"] for line in lines} >= {"shardId-000000000000"}


def test_tail_follows_across_a_merge(runner: CliRunner, server_url: str) -> None:
    ep = ("--endpoint", server_url)
    assert invoke(runner, "streams", "create", "mg", "--shards", "2", *ep).exit_code == 0
    keys = [f"k{i}" for i in range(30)]  # spread over both shards
    asyncio.run(_put_plain(server_url, "mg", [(f"{k}-before".encode(), k) for k in keys]))
    result = invoke(
        runner, "streams", "merge", "mg", "shardId-000000000000", "shardId-000000000001", *ep
    )
    assert result.exit_code == 0, result.output
    asyncio.run(_put_plain(server_url, "mg", [(f"{k}-after".encode(), k) for k in keys]))

    result = invoke(runner, "tail", "mg", "--from", "trim-horizon", "--no-follow", "--json", *ep)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 60
    by_key: dict[str, list[str]] = {}
    for line in lines:
        by_key.setdefault(line["partition_key"], []).append(line["data"])
    # The merged child is read only after both parents: every key stays in order.
    assert by_key == {k: [f"{k}-before", f"{k}-after"] for k in keys}
    assert {line["shard_id"] for line in lines} == {
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    }


def test_tail_max_records(runner: CliRunner, server_url: str) -> None:
    assert invoke(runner, "streams", "create", "m", "--endpoint", server_url).exit_code == 0
    asyncio.run(_put_plain(server_url, "m", [(f"r{i}".encode(), "k") for i in range(10)]))
    result = invoke(
        runner, "tail", "m", "--from", "trim-horizon", "-n", "3", "--endpoint", server_url
    )
    assert result.exit_code == 0, result.output
    assert [row[2] for row in _parse_tail(result.stdout)] == ["r0", "r1", "r2"]


def test_tail_unknown_stream_is_one_line(runner: CliRunner, server_url: str) -> None:
    assert_one_line_error(invoke(runner, "tail", "nope", "--endpoint", server_url), "not found")


# ----------------------------------------------------------------------------- server


def test_server_help_is_the_servers(runner: CliRunner) -> None:
    result = invoke(runner, "server", "--help")
    assert result.exit_code == 0
    assert "kpl server" in result.stdout
    for flag in ("--host", "--port", "--region"):
        assert flag in result.stdout


def test_server_bad_flag_is_one_line(runner: CliRunner) -> None:
    assert_one_line_error(invoke(runner, "server", "--no-such-flag"), "--no-such-flag")


def test_server_limit_flags_are_documented_and_checked(runner: CliRunner) -> None:
    result = invoke(runner, "server", "--help")
    for flag in ("--max-connections", "--idle-timeout", "--body-timeout", "--write-timeout",
                 "--max-answer-bytes", "--max-request-bytes", "--max-body-bytes"):
        assert flag in result.stdout
    assert_one_line_error(
        invoke(runner, "server", "--body-timeout", "0"), "must be > 0 seconds, got 0"
    )


def test_top_level_errors(runner: CliRunner) -> None:
    assert_one_line_error(invoke(runner, "nope"), "No such command")
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("server", "load", "streams", "tail"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["load", "--endpoint", "aws", "--records", "1"],
        ["streams", "list", "--endpoint", "aws"],
        ["tail", "s", "--endpoint", "aws"],
    ],
)
def test_aws_endpoint_without_a_region_is_one_line(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert_one_line_error(invoke(runner, *args), "needs a region", "--region")
