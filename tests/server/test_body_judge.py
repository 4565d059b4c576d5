"""JSON bodies of more values than any request holds are judged in a child process
(``server.web.judge``): answered exactly as when decoded in the server, the child
replaced when it dies, ended with the server."""

from __future__ import annotations

import asyncio
import io
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import orjson
import pytest

from server import StreamServer
from server.core.validation import validate
from server.web import app as app_module
from server.web.judge import CHILD_VALUES, Judge, judge_body
from tests.server.test_wire import AUTH

ROOT = Path(__file__).resolve().parents[2]
N = CHILD_VALUES + 1_000
JUNK = {f"k{i}": "v" for i in range(N)}
COMMAS = "," * 200


def _bodies() -> list[tuple[str, bytes]]:
    """(action, body): each with more than ``CHILD_VALUES`` values."""
    dump = orjson.dumps
    return [
        ("AddTagsToStream", dump({"StreamName": "s", "Tags": JUNK})),
        ("CreateStream", dump({"StreamName": "t", "ShardCount": 1, "Tags": JUNK})),
        ("PutRecords", dump({"StreamName": "s", "Records": [{}] * N})),
        ("PutRecords", dump({"StreamName": "s", "Records": [
            {"Data": "aGk=", "PartitionKey": COMMAS} for _ in range(600)]})),
        ("PutRecord", dump({"StreamName": "s", "Data": 5, "PartitionKey": "k", "X": JUNK})),
        ("PutRecord", dump({"StreamName": None, "Data": "aGk=", "PartitionKey": "",
                            "X": JUNK})),
        ("GetRecords", dump({"ShardIterator": "x", "Limit": "ten", "X": JUNK})),
        ("GetRecords", dump({"ShardIterator": "not-an-iterator", "X": JUNK})),
        ("DescribeStream", dump([1] * N)),
        ("DescribeStream", dump(COMMAS * 300)),
        ("DescribeStream", b'{"StreamName":"s","X":[' + b"1," * N),  # not JSON
        ("NoSuchAction", dump({"X": JUNK})),
        # Valid: unknown members (at any depth) are ignored.
        ("ListStreams", dump({"X": JUNK})),
        ("AddTagsToStream", dump({"StreamName": "s", "Tags": {"a": "1"}, "X": JUNK})),
        ("PutRecords", dump({"StreamName": "s", "Records": [
            {"Data": "aGk=", "PartitionKey": "k", "X": [0] * 200} for _ in range(300)]})),
        ("ListTagsForStream", dump({"StreamName": "s"})),
    ]


def _comparable(action: str, status: int, answer: Any) -> Any:
    """The answer without what differs between two servers (sequence numbers, times)."""
    if action == "PutRecords" and status == 200:
        return status, answer["FailedRecordCount"], len(answer["Records"])
    if action == "ListStreams" and status == 200:
        return status, answer["StreamNames"]
    return status, answer


async def _answers(*, judged: bool, signed: bool = True) -> list[Any]:
    out = []
    async with StreamServer(port=0, require_auth=True, limits="off",
                            state_delay_seconds=0) as server, \
            aiohttp.ClientSession() as session:
        headers = AUTH if signed else {"Content-Type": AUTH["Content-Type"]}
        await _post(session, server.url, "CreateStream",
                    orjson.dumps({"StreamName": "s", "ShardCount": 1}), AUTH)
        for action, body in _bodies():
            status, answer = await _post(session, server.url, action, body, headers)
            out.append(_comparable(action, status, answer))
        judges = [j for j in _Recorded.made if j.started]
        assert bool(judges) == judged
        async with session.get(server.url + "/metrics") as response:
            out.append(_observed(await response.text()))
    return out


def _observed(exposition: str) -> tuple[set[str], set[str]]:
    """What the metrics observed: every series, and the values of counts (not of
    latencies, which differ from run to run)."""
    series = {line.rsplit(" ", 1)[0] for line in exposition.splitlines()
              if line and not line.startswith("#")}
    counts = {line for line in exposition.splitlines()
              if line and not line.startswith("#")
              and ("_count" in line.split("{")[0] or line.split("{")[0].endswith("_total"))}
    return series, counts


async def _post(session: aiohttp.ClientSession, url: str, action: str, body: bytes,
                headers: dict[str, str]) -> tuple[int, Any]:
    async with session.post(url, data=io.BytesIO(body), headers={
        **headers, "X-Amz-Target": f"Kinesis_20131202.{action}",
    }) as response:
        raw = await response.read()
        return response.status, orjson.loads(raw) if raw else None


class _Recorded(Judge):
    """A judge the test can find."""

    made: ClassVar[list[Judge]] = []

    def __init__(self, command: list[str] | None = None) -> None:
        super().__init__(command)
        _Recorded.made.append(self)


@pytest.fixture
def judges(monkeypatch: pytest.MonkeyPatch) -> list[Judge]:
    _Recorded.made = []
    monkeypatch.setattr(app_module, "Judge", _Recorded)
    return _Recorded.made


@pytest.mark.parametrize("signed", [True, False])
async def test_answers_are_the_same_judged_in_the_child_or_decoded_here(
    judges: list[Judge], monkeypatch: pytest.MonkeyPatch, signed: bool
) -> None:
    judged = await _answers(judged=True, signed=signed)
    monkeypatch.setattr(app_module, "Judge", lambda: None)
    judges.clear()
    here = await _answers(judged=False, signed=signed)
    assert judged == here
    if signed:
        codes = [a[1]["__type"] if a[0] != 200 else "ok" for a in here[:-1]]
        assert codes.count("ok") >= 4, codes  # the valid bodies were answered
        assert "ValidationException" in codes
        assert "SerializationException" in codes
        assert "UnknownOperationException" in codes
        assert here[-2] == (200, {"Tags": [{"Key": "a", "Value": "1"}],
                                  "HasMoreTags": False})
    else:  # the authentication is checked before the child's validation error
        assert {a[1]["__type"] for a in here[:-1] if a[0] != 200} <= {
            "MissingAuthenticationTokenException", "SerializationException",
            "UnknownOperationException"}


async def test_without_a_child_every_body_is_decoded_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: ClassVar[list[Judge]] = []

    def broken() -> Judge:
        judge = Judge([str(ROOT / "no-such-python")])
        made.append(judge)
        return judge

    monkeypatch.setattr(app_module, "Judge", broken)
    async with StreamServer(port=0, require_auth=False, limits="off") as server, \
            aiohttp.ClientSession() as session:
        status, answer = await _post(session, server.url, "ListStreams",
                                     orjson.dumps({"X": JUNK}), AUTH)
        assert (status, answer["StreamNames"]) == (200, [])
        status, answer = await _post(session, server.url, "AddTagsToStream",
                                     orjson.dumps({"StreamName": "s", "Tags": JUNK}), AUTH)
        assert (status, answer["__type"]) == (400, "ValidationException")
    assert made[0].unavailable
    assert made[0].started == 0


async def test_a_killed_child_is_replaced(judges: list[Judge]) -> None:
    body = orjson.dumps({"StreamName": "s", "Tags": JUNK})
    async with StreamServer(port=0, require_auth=False, limits="off") as server, \
            aiohttp.ClientSession() as session:
        first = await _post(session, server.url, "AddTagsToStream", body, AUTH)
        assert first[0] == 400
        judge = judges[0]
        pid = judge.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # The next body finds the child gone (or its pipe broken: then it is decoded
        # here), the one after it a new child; every answer is the same.
        assert await _post(session, server.url, "AddTagsToStream", body, AUTH) == first
        assert await _post(session, server.url, "AddTagsToStream", body, AUTH) == first
        assert judge.started == 2
        assert judge.pid not in (None, pid)


async def test_the_child_ends_with_the_server(judges: list[Judge]) -> None:
    async with StreamServer(port=0, require_auth=False, limits="off") as server, \
            aiohttp.ClientSession() as session:
        await _post(session, server.url, "AddTagsToStream",
                    orjson.dumps({"StreamName": "s", "Tags": JUNK}), AUTH)
        pid = judges[0].pid
        assert pid is not None
        os.kill(pid, 0)  # running
    assert judges[0].pid is None
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(pid, 0)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, pidfd")
def test_a_server_killed_outright_leaves_no_child() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", "0", "--no-auth", "--limits", "off"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])

        async def hostile() -> int:
            async with aiohttp.ClientSession() as session:
                status, _ = await _post(session, f"http://127.0.0.1:{port}/", "AddTagsToStream",
                                        orjson.dumps({"StreamName": "s", "Tags": JUNK}), AUTH)
                return status

        assert asyncio.run(hostile()) == 400
        (child,) = _children(proc.pid)
        watch = os.pidfd_open(child)
        proc.kill()
        proc.wait()
        # The child sees its pipe closed and ends (the bound only keeps a broken build
        # from hanging the suite).
        readable, _, _ = select.select([watch], [], [], 60)
        os.close(watch)
        assert readable == [watch]
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_valid_body_comes_back_without_unknown_members() -> None:
    body = {"StreamName": "s", "X": JUNK, "Records": [
        {"Data": "aGk=", "PartitionKey": "k", "Y": [1, 2]}, {"Data": "", "PartitionKey": "j"}]}
    raw = orjson.dumps(body)
    pruned = judge_body(raw, None, "PutRecords")
    assert isinstance(pruned, bytes)
    assert orjson.loads(pruned) == {"StreamName": "s", "Records": [
        {"Data": "aGk=", "PartitionKey": "k"}, {"Data": "", "PartitionKey": "j"}]}
    assert validate("PutRecords", orjson.loads(pruned)) == validate("PutRecords", body)


def test_an_invalid_body_comes_back_as_its_error_and_a_stand_in() -> None:
    body = {"StreamName": "s", "X": JUNK, "Tags": JUNK}
    outcome = judge_body(orjson.dumps(body), None, "AddTagsToStream")
    assert isinstance(outcome, dict)
    assert outcome["stand_in"] == {"StreamName": "s", "Tags": {}}
    code, message = outcome["error"]
    assert code == "ValidationException"
    assert message.startswith("1 validation error detected: Value '{k0=v, k1=v, ")
    assert judge_body(b"[1,2]", None, "ListStreams")["stand_in"] == []  # type: ignore[index]
    assert judge_body(b"{", None, "ListStreams") == {"raise": ["SerializationException", ""]}
