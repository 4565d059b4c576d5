"""``python -m server`` as a process, and the AWS CLI as a client (a few calls: it is slow)."""

from __future__ import annotations

import argparse
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
    for flag in ("--host", "--port", "--region", "--account-id", "--shard-limit", "--state-delay"):
        assert flag in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--account-id", "12"])


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
        assert json.loads(put.stdout)["ShardId"].startswith("shardId-")
        missing = aws("describe-stream-summary", "--stream-name", "nope")
        assert missing.returncode != 0
        assert "ResourceNotFoundException" in missing.stderr
        assert "Stream nope under account 000000000000 not found." in missing.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
