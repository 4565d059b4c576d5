"""``python -m bench``: options reach the chosen benchmark, with or without ``--``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bench.__main__ as runner


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def fake_call(cmd: list[str]) -> int:
        seen.append(cmd)
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        ["producer_core", "--", "--records", "1000", "--repeat", "1"],
        ["producer_core", "--records", "1000", "--repeat", "1"],
    ],
)
def test_options_go_to_the_one_benchmark(calls: list[list[str]], argv: list[str]) -> None:
    assert runner.main(argv) == 0
    assert len(calls) == 1
    assert calls[0][0] == sys.executable
    assert calls[0][1].endswith("producer_core.py")
    assert calls[0][2:] == ["--records", "1000", "--repeat", "1"]


def test_options_with_several_names_are_refused(calls: list[list[str]]) -> None:
    with pytest.raises(SystemExit) as exited:
        runner.main(["producer_core", "server_core", "--", "--records", "5"])
    assert exited.value.code == 2
    assert calls == []


def test_no_name_runs_every_benchmark(calls: list[list[str]]) -> None:
    assert runner.main([]) == 0
    assert [cmd[1].rsplit("/", 1)[-1] for cmd in calls] == [
        f"{name}.py" for name in runner.BENCHMARKS
    ]
