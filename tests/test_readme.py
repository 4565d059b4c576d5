"""The README's Python snippets and the example programs run as printed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kpl import KinesisClient
from server import StreamServer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
RUN = "asyncio.run(main())"


def _snippet(containing: str) -> str:
    found = [code for code in SNIPPETS if containing in code]
    assert len(found) == 1, f"one README snippet with {containing!r}, found {len(found)}"
    return found[0]


def _main_of(code: str) -> Any:
    """Exec a snippet without its last ``asyncio.run(main())`` line; return its ``main``."""
    assert RUN in code
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code.replace(RUN, ""), "README.md", "exec"), namespace)
    return namespace["main"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_producer_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    code = _snippet("from kpl import Producer")
    async with StreamServer(port=0) as server:
        async with KinesisClient(server.url) as client:
            await client.create_stream("my-stream", shard_count=2)
            await client.wait_for_active("my-stream")
        await _main_of(code.replace("http://127.0.0.1:4567", server.url))()
    lines = capsys.readouterr().out.split()
    assert lines[0] in ("shardId-000000000000", "shardId-000000000001")
    assert len(lines[1]) == 56  # the sequence number
    assert lines[2:] == ["0", "1"]  # sub-sequence 0, then UserRecordsPut


async def test_embedded_server_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    await _main_of(_snippet("from server import StreamServer"))()
    assert "'StreamNames': []" in capsys.readouterr().out


async def test_example_server_boto3(capsys: pytest.CaptureFixture[str]) -> None:
    await _load("server_boto3.py").main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "put 10 records, 0 failed"
    assert sorted(line.split(" ", 1)[1] for line in lines[1:]) == sorted(
        f"user-{i} event {i}" for i in range(10)
    )
