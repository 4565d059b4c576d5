"""What a new user meets first: the lines printed for throttles and for common mistakes."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from kpl.cli._common import describe_error
from kpl.cli.load_view import throttle_note
from kpl.errors import NetworkError
from server.__main__ import main as server_main
from tests.cli.test_commands import assert_one_line_error, invoke

# ----------------------------------------------------------------------------- throttles


def _summary(throttles: int, failed: int = 0, rate_limit: float = 150) -> dict[str, object]:
    return {
        "throttles": throttles,
        "records_failed": failed,
        "records_unresolved": 0,
        "settings": {"rate_limit": rate_limit},
    }


def test_no_throttles_no_note() -> None:
    assert throttle_note(_summary(0)) is None


def test_throttles_over_a_150_percent_rate_limit_are_explained() -> None:
    note = throttle_note(_summary(1234))
    assert note is not None
    assert "expected" in note
    assert "150%" in note
    assert "--rate-limit" in note
    assert note.endswith("every record was acknowledged")


def test_throttle_note_does_not_claim_success_when_records_failed() -> None:
    note = throttle_note(_summary(10, failed=3))
    assert note is not None
    assert "acknowledged" not in note


def test_throttle_note_at_or_under_the_limit_only_says_they_were_retried() -> None:
    note = throttle_note(_summary(10, rate_limit=100))
    assert note == "throttles are retried; every record was acknowledged"


def test_load_summary_carries_the_throttle_note(runner: CliRunner) -> None:
    result = invoke(
        runner, "load", "--records", "500", "--no-aggregation",
        "--server-args", "--throttle-rate 0.2 --seed 3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "throttles are expected" in result.stdout
    assert "every record was acknowledged" in result.stdout


# ----------------------------------------------------------------------------- errors


def test_refused_connection_is_said_plainly() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
        except OSError as cause:
            raise NetworkError("network error (ListStreams): ssl:default [...]") from cause
    except NetworkError as error:
        line = describe_error(error, "http://127.0.0.1:1")
    assert line == (
        "cannot reach http://127.0.0.1:1: connection refused (is a server running there?)"
    )


def test_other_network_errors_keep_their_detail() -> None:
    line = describe_error(NetworkError("network error: reset by peer"), "http://h:1")
    assert line == "cannot reach http://h:1: network error: reset by peer"


def test_unreachable_endpoint_from_the_command_line(runner: CliRunner) -> None:
    result = invoke(runner, "streams", "list", "--endpoint", "http://127.0.0.1:1")
    assert_one_line_error(result, "cannot reach http://127.0.0.1:1: connection refused")
    assert "ssl:default" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["streams", "list", "--endpoint", "http://kinesis.example.invalid:4567"],
        ["tail", "s", "--endpoint", "http://kinesis.example.invalid:4567"],
        ["load", "--records", "1", "--endpoint", "http://kinesis.example.invalid:4567"],
    ],
)
def test_a_remote_endpoint_without_a_region_asks_for_the_flag(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    result = invoke(runner, *args)
    assert_one_line_error(result, "needs a region", "--region")
    assert "region='" not in result.stderr  # the Python API's wording, not the CLI's


def test_server_bad_value_hint_appears_once(runner: CliRunner) -> None:
    result = invoke(runner, "server", "--limits-scale", "-1")
    assert_one_line_error(result, "--limits-scale")
    assert result.stderr.count("server --help") == 1


def test_kpl_server_on_a_busy_port_is_one_line(runner: CliRunner, server_url: str) -> None:
    port = str(urlsplit(server_url).port)
    result = invoke(runner, "server", "--port", port)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("kpl server: error: cannot listen on 127.0.0.1:" + port), line
    assert "address already in use" in line
    assert "--port 0" in line


def test_python_m_server_on_a_busy_port_names_itself(
    server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(urlsplit(server_url).port)
    assert server_main(["--port", port]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("python -m server: error: cannot listen on"), line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["load", "--records", "abc"], "'abc' is not a valid integer."),
        (["load", "--duration", "soon"], "'soon' is not a valid number."),
        (["streams", "scale", "s", "many"], "'many' is not a valid integer."),
        (["load", "--records", "0"], "0 is not in the range x>=1"),
    ],
)
def test_bad_numbers_read_plainly(runner: CliRunner, args: list[str], fragment: str) -> None:
    result = invoke(runner, *args)
    assert_one_line_error(result, fragment)
    assert "range." not in result.stderr  # click's "not a valid integer range."


def _summary_text(**changes: object) -> str:
    from io import StringIO

    from rich.console import Console

    from kpl.cli.load_view import summary_table

    summary: dict[str, object] = {
        "records_sent": 10, "records_acked": 10, "records_failed": 0,
        "records_unresolved": 0, "duration_s": 1.0, "records_per_s": 10.0,
        "bytes_per_s": 1000.0, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "retries": 3, "throttles": 3,
        "errors_by_code": {"ProvisionedThroughputExceededException": 3},
        "failures_by_code": {}, "kinesis_records": 10, "put_records_calls": 2,
    }  # fmt: skip
    summary.update(changes)
    out = StringIO()
    Console(file=out, width=120).print(summary_table(summary))
    return out.getvalue()


def test_a_run_that_lost_nothing_shows_no_failure_rows() -> None:
    text = _summary_text()
    assert "throttles (retried)" in text
    # Throttles are counted once, as retried; no row of codes or failures looks like an error.
    assert "ProvisionedThroughputExceededException" not in text
    assert "failures by code" not in text
    assert "attempt errors" not in text


def test_summary_tells_other_attempt_errors_from_record_failures() -> None:
    text = _summary_text(
        records_acked=8, records_failed=2, retries=5,
        errors_by_code={"ProvisionedThroughputExceededException": 3, "InternalFailure": 4},
        failures_by_code={"InternalFailure": 2},
    )  # fmt: skip
    assert "other attempt errors by code" in text
    assert "InternalFailure 4" in text
    assert "record failures by code" in text
    assert "InternalFailure 2" in text


def test_the_outcome_says_what_the_producer_achieved_against_the_stream() -> None:
    from kpl.cli.load_view import capacity_text, outcome_note
    from kpl.loadgen import stream_capacity

    capacity = stream_capacity(4)
    assert capacity["bytes_per_s"] == 4 * 1024 * 1024
    assert capacity_text("s", capacity).startswith(
        "stream s: 4 shards take 4.00 MiB/s and 4,000 Kinesis records/s"
    )
    summary = {
        "records_acked": 400_000, "records_failed": 0, "records_unresolved": 0,
        "duration_s": 10.0, "records_per_s": 40_000.0, "bytes_per_s": 4_194_304.0,
        "kinesis_records": 1000, "stream_capacity": capacity,
    }  # fmt: skip
    note = outcome_note(summary)
    assert "40,000 records/s" in note
    assert "100% of the stream's write limit" in note
    assert "400 records per Kinesis record" in note
    assert note.endswith("no record failed")
    summary["records_failed"] = 5
    assert "5 records failed" in outcome_note(summary)
    off = stream_capacity(2, None)
    assert capacity_text("s", off) == "stream s: 2 shards, no write limits enforced"
    assert "write limit" not in outcome_note({**summary, "stream_capacity": off})
