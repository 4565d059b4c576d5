"""``python -m server`` as a process, and the AWS CLI as a client (a few calls: it is slow)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli_args import add_server_arguments, config_from_args
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
AWS = Path(sys.executable).parent / "aws"


def test_cli_args_round_trip_and_help() -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    config = config_from_args(
        parser.parse_args(
            [
                "--port",
                "0",
                "--region",
                "eu-west-1",
                "--account-id",
                "123456789012",
                "--shard-limit",
                "7",
                "--state-delay",
                "0",
            ]
        )
    )
    assert config == ServerConfig(
        port=0,
        region="eu-west-1",
        account_id="123456789012",
        shard_limit=7,
        state_delay_seconds=0.0,
    )
    assert config_from_args(parser.parse_args([])) == ServerConfig()
    help_text = parser.format_help()
    flags = (
        "--host", "--port", "--region", "--account-id", "--shard-limit", "--state-delay",
        "--no-auth", "--data-dir", "--segment-bytes", "--limits", "--limits-scale",
        "--throttle-rate", "--internal-failure-rate", "--error-rate", "--latency-ms", "--seed",
        "--iam", "--audit-log", "--audit-data-events", "--max-connections", "--idle-timeout",
        "--body-timeout", "--write-timeout", "--max-answer-bytes", "--max-request-bytes",
        "--max-body-bytes",
    )
    for flag in flags:
        assert flag in help_text
    # Every flag the parser knows is one of those, and each has a help text.
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert sorted(o for a in options for o in a.option_strings) == sorted(flags)
    assert all(a.help for a in options)
    with pytest.raises(SystemExit):
        parser.parse_args(["--account-id", "12"])


def test_what_one_client_may_cost_is_set_by_flags() -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    config = config_from_args(parser.parse_args([
        "--max-connections", "20", "--idle-timeout", "2.5", "--body-timeout", "3",
        "--write-timeout", "4", "--max-answer-bytes", "1048576", "--max-request-bytes", "4096",
        "--max-body-bytes", "2097152",
    ]))
    assert (
        config.max_connections, config.idle_timeout_seconds, config.body_timeout_seconds,
        config.write_timeout_seconds, config.max_answer_bytes, config.max_request_bytes,
        config.max_body_bytes,
    ) == (20, 2.5, 3.0, 4.0, 1 << 20, 4096, 2 << 20)


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--max-connections", "0", "must be at least 1, got 0"),
        ("--max-answer-bytes", "-5", "must be at least 1, got -5"),
        ("--max-request-bytes", "0", "must be at least 1, got 0"),
        ("--max-body-bytes", "0", "must be at least 1, got 0"),
        ("--idle-timeout", "0", "must be > 0 seconds, got 0"),
        ("--body-timeout", "-1", "must be > 0 seconds, got -1"),
        ("--write-timeout", "inf", "must be > 0 seconds, got inf"),
        ("--write-timeout", "soon", "invalid"),
    ],
)
def test_a_bad_limit_flag_is_a_one_line_error(flag: str, value: str, says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", flag, value], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m server: error: argument ")
    assert flag in last
    assert says in last


def test_main_serves_aws_cli_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--state-delay",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.strip().rsplit(" ", 1)[1]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }

        def aws(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(AWS), "kinesis", *args, "--endpoint-url", url, "--output", "json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        created = aws("create-stream", "--stream-name", "cli", "--shard-count", "2")
        assert created.returncode == 0, created.stderr
        put = aws(
            "put-record",
            "--stream-name",
            "cli",
            "--partition-key",
            "k",
            "--data",
            "hello",
        )
        assert put.returncode == 0, put.stderr
        shard_id = json.loads(put.stdout)["ShardId"]
        assert shard_id.startswith("shardId-")
        described = aws("describe-stream", "--stream-name", "cli")
        assert described.returncode == 0, described.stderr
        description = json.loads(described.stdout)["StreamDescription"]
        assert description["StreamStatus"] == "ACTIVE"
        assert len(description["Shards"]) == 2
        listed = aws("list-shards", "--stream-name", "cli")
        assert listed.returncode == 0, listed.stderr
        assert [s["ShardId"] for s in json.loads(listed.stdout)["Shards"]] == [
            "shardId-000000000000",
            "shardId-000000000001",
        ]
        iterator = aws(
            "get-shard-iterator",
            "--stream-name",
            "cli",
            "--shard-id",
            shard_id,
            "--shard-iterator-type",
            "TRIM_HORIZON",
        )
        assert iterator.returncode == 0, iterator.stderr
        got = aws("get-records", "--shard-iterator", json.loads(iterator.stdout)["ShardIterator"])
        assert got.returncode == 0, got.stderr
        records = json.loads(got.stdout)["Records"]
        assert [(r["PartitionKey"], base64.b64decode(r["Data"])) for r in records] == [
            ("k", b"hello")
        ]
        missing = aws("describe-stream-summary", "--stream-name", "nope")
        assert missing.returncode != 0
        assert "ResourceNotFoundException" in missing.stderr
        assert "Stream nope under account 000000000000 not found." in missing.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_main_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    from server.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m server")
    assert "--throttle-rate" in out


def test_main_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", "0", "--limits", "off"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "listening on http://127.0.0.1:" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
