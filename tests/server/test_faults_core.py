"""Fault injection and the limits/fault settings, sans IO: seeded draws, validation, flags."""

from __future__ import annotations

import argparse
import random
from collections import Counter

import pytest

from server.cli_args import add_server_arguments, config_from_args
from server.config import ServerConfig
from server.core.engine import Engine, EngineConfig
from server.core.faults import Faults, FaultSettings, parse_latency_ms
from server.storage.memory import MemoryStorage


def test_nothing_is_injected_by_default() -> None:
    settings = ServerConfig().fault_settings()
    assert settings == FaultSettings()
    assert not settings.active
    faults = Faults(settings)
    rng = random.Random(1)
    assert faults.entry_error(rng) is None
    assert faults.request_fault("PutRecords", rng) is None


def test_entry_errors_follow_the_two_rates() -> None:
    faults = Faults(FaultSettings(throttle_rate=0.2, internal_failure_rate=0.1))
    rng = random.Random(42)
    counts = Counter(faults.entry_error(rng) for _ in range(20_000))
    assert counts["ProvisionedThroughputExceededException"] / 20_000 == pytest.approx(0.2, abs=0.01)
    assert counts["InternalFailure"] / 20_000 == pytest.approx(0.1, abs=0.01)
    assert counts[None] / 20_000 == pytest.approx(0.7, abs=0.01)


def test_the_same_seed_gives_the_same_faults() -> None:
    faults = Faults(FaultSettings(throttle_rate=0.5, error_rate=0.5, latency_ms=(1, 9)))
    runs = []
    for _ in range(2):
        rng = random.Random(7)
        runs.append(
            [faults.entry_error(rng) for _ in range(50)]
            + [faults.request_fault("GetRecords", rng) for _ in range(50)]
        )
    assert runs[0] == runs[1]


def test_request_faults_latency_range_and_error_rate() -> None:
    faults = Faults(FaultSettings(error_rate=0.25, latency_ms=(10, 30)))
    rng = random.Random(3)
    drawn = [faults.request_fault("PutRecords", rng) for _ in range(4000)]
    assert all(f is not None and 0.010 <= f.delay_seconds <= 0.030 for f in drawn)
    errors = sum(1 for f in drawn if f is not None and f.error_code == "InternalFailure")
    assert errors / 4000 == pytest.approx(0.25, abs=0.03)
    fixed = Faults(FaultSettings(latency_ms=(5, 5))).request_fault("X", rng)
    assert fixed is not None
    assert fixed.delay_seconds == pytest.approx(0.005)
    assert fixed.error_code is None


@pytest.mark.parametrize(
    ("text", "expected"), [("5", (5.0, 5.0)), ("5-20", (5.0, 20.0)), (" 0-0 ", (0.0, 0.0))]
)
def test_parse_latency(text: str, expected: tuple[float, float]) -> None:
    assert parse_latency_ms(text) == expected


@pytest.mark.parametrize("text", ["", "x", "5-", "20-5", "-5", "inf", "1-2-3"])
def test_parse_latency_refuses_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="latency"):
        parse_latency_ms(text)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("throttle_rate", 1.5, "throttle_rate"),
        ("internal_failure_rate", -0.1, "internal_failure_rate"),
        ("error_rate", 2.0, "error_rate"),
        ("latency_ms", (10.0, 5.0), "latency"),
        ("limits", "strict", "limits"),
        ("limits_scale", 0.0, "limits_scale"),
    ],
)
def test_server_config_refuses_bad_settings(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ServerConfig(**{field: value})  # type: ignore[arg-type]


def test_the_two_entry_rates_together_are_at_most_one() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        ServerConfig(throttle_rate=0.6, internal_failure_rate=0.5)


def _parse(*argv: str) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_flags_reach_the_config() -> None:
    config = _parse(
        "--limits", "off", "--limits-scale", "0.5", "--throttle-rate", "0.1",
        "--internal-failure-rate", "0.2", "--error-rate", "0.05", "--latency-ms", "3-8",
        "--seed", "9",
    )
    assert config.limits == "off"
    assert config.limits_scale == 0.5
    assert config.fault_settings() == FaultSettings(0.1, 0.2, 0.05, (3.0, 8.0))
    assert config.seed == 9
    defaults = _parse()
    assert defaults.limits == "aws"
    assert defaults.limits_scale == 1.0
    assert not defaults.fault_settings().active
    assert defaults.seed is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--limits", "some"],
        ["--limits-scale", "0"],
        ["--limits-scale", "nan"],
        ["--throttle-rate", "1.2"],
        ["--error-rate", "x"],
        ["--latency-ms", "9-3"],
        ["--seed", "abc"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parse(*argv)
    assert info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_put_record_with_injected_failures_fails_whole() -> None:
    engine = Engine(
        EngineConfig(state_delay_seconds=0.0),
        MemoryStorage(),
        random.Random(5),
        faults=Faults(FaultSettings(internal_failure_rate=1.0)),
    )
    now = 1_800_000_000.0
    engine.handle("CreateStream", {"StreamName": "s", "ShardCount": 1}, now)
    with pytest.raises(Exception, match="Internal service failure") as info:
        engine.handle("PutRecord", {"StreamName": "s", "Data": "eA==", "PartitionKey": "k"}, now)
    assert type(info.value).__name__ == "InternalFailure"
