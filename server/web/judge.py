"""Bodies too costly to build in the server's process, answered from a child process.

Theory of operation
-------------------
Parsing a JSON body of a few hundred thousand distinct keys holds the interpreter lock
for the whole parse (orjson builds the objects in one call), and freeing them again for
as long: a worker thread does not help, every other client waits. No valid request
needs anywhere near that many values (PutRecords' 500 entries have about 2,000), so
such a body nearly always ends in an error: this module finds that error in a child
process, which builds the objects in its own interpreter and hands back only the
outcome, so the server's process never holds them.

* **What the child computes.** The body decoded (:func:`~server.web.codec.decode_request`)
  and validated for its action (:func:`~server.core.validation.validate`): the very
  code the server runs. Its reply is the decoding error, or the validation error with
  a *stand-in* of the body (its type, and for an object only the members of the
  action's input shape, each container among them emptied), which is what the rest of
  the request flow reads (the type check, the metrics); or the valid body, pruned.
* **Valid after all.** A body with many values can be valid (unknown members are
  ignored, at any depth; a partition key may be all commas). The child then sends the
  body back *pruned*: the same JSON without the members its shape does not know, which
  validation would drop anyway, so the request is answered as the whole body would be,
  and what comes back is bounded by the shape (500 records, 200 tags ...), not by the
  body. The server decodes and validates that as any large body (``server.web.bodies``).
  Nothing valid is ever refused.
* **One child, one body at a time.** Bodies are sent in arrival order, one exchange at
  a time, each run to its end even if its client goes away (the pipe stays in step).
  The bodies waiting are those the server holds anyway (large bodies within the body
  budget, small ones within the connection cap).
* **Failures.** A child that cannot be started leaves the server to decode every body
  itself (logged once). A child that dies mid-body is restarted with the next body;
  the body it held is decoded in the server.
* **Shutdown.** The child reads its bodies from a pipe: closing it ends the child (and
  the server's exit, however abrupt, closes it too). ``close`` waits for it to end.

The child is this module's :func:`main`, speaking length-prefixed frames on its
standard input and output: a request is a 4-byte big-endian length and an orjson header
(``action``, ``values``), then an 8-byte length and the body; a reply is an 8-byte
length, then ``E`` and an orjson object (an error), or ``V`` and the pruned body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from server.core.actions import ACTIONS
from server.core.errors import KinesisError, UnknownOperationException, for_code
from server.core.shapes import Shape
from server.core.validation import validate
from server.web.codec import decode_request

__all__ = ["CHILD_VALUES", "Judge", "Judgement", "judge_body"]

log = logging.getLogger("server.web")

#: JSON bodies with more values than this are judged in the child (orjson builds this
#: many in a few milliseconds; a PutRecords of 500 entries has about 2,000).
CHILD_VALUES = 50_000
#: How long ``close`` waits for the child to end before killing it.
_EXIT_SECONDS = 5.0
_ROOT = Path(__file__).resolve().parent.parent.parent
#: The child's program (``-m`` would run this module a second time, as ``__main__``).
_CHILD = "from server.web.judge import main; main()"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A body's outcome: invalid (what the request flow reads of it) or valid (pruned)."""

    stand_in: Any = None
    """The body's type with only the action's members (containers emptied)."""
    error: KinesisError | None = None
    """The validation error (``UnknownOperationException`` for an unknown action);
    ``None``: the body is valid."""
    pruned: bytes = b""
    """A valid body without the members its shape does not know, as JSON."""


def _stand_in(payload: Any, action: str | None) -> Any:
    if isinstance(payload, list):
        return []
    if not isinstance(payload, dict):
        return None
    entry = None if action is None else ACTIONS.get(action)
    if entry is None or entry.input is None:
        return {}
    out: dict[str, Any] = {}
    for name, _ in entry.input.members:
        if name in payload:
            value = payload[name]
            out[name] = [] if isinstance(value, list) else {} if isinstance(value, dict) \
                else value
    return out


def _pruned(shape: Shape, value: Any) -> Any:
    """A valid ``value`` without the members ``shape`` does not know (at any depth)."""
    kind = shape.kind
    if kind == "structure" and isinstance(value, dict):
        return {name: _pruned(member, value[name]) for name, member in shape.members
                if name in value}
    if kind == "list" and shape.member is not None and isinstance(value, list):
        return [_pruned(shape.member, item) for item in value]
    if kind == "map" and shape.member is not None and isinstance(value, dict):
        return {key: _pruned(shape.member, item) for key, item in value.items()}
    return value


def judge_body(
    data: bytes | bytearray, values: int | None, action: str | None
) -> dict[str, Any] | bytes:
    """The child's outcome for one body: ``{"raise": [code, message]}`` (a decoding
    error), ``{"stand_in": ..., "error": [code, message]}`` (invalid), or the valid body
    pruned, as JSON."""
    try:
        payload = decode_request(data, values)
    except KinesisError as error:
        return {"raise": [error.code, error.message]}
    stand_in = _stand_in(payload, action)
    if action is None or not isinstance(payload, dict | list):
        # The flow refuses it before validation (an unknown action, not an object).
        code = UnknownOperationException.code
        return {"stand_in": stand_in, "error": [code, ""]}
    entry = ACTIONS[action]
    assert entry.input is not None
    try:
        validate(action, payload)
    except KinesisError as error:
        return {"stand_in": stand_in, "error": [error.code, error.message]}
    return orjson.dumps(_pruned(entry.input, payload))


def _error(pair: list[str]) -> KinesisError:
    code, message = pair
    return for_code(code)(message)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def main() -> None:
    """The child: judge bodies from standard input until it closes."""
    # Ctrl-C reaches the whole process group: the server's shutdown closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = _read_exactly(stdin, 4)
        if head is None:
            return
        header = _read_exactly(stdin, struct.unpack(">I", head)[0])
        length = _read_exactly(stdin, 8)
        if header is None or length is None:
            return
        body = _read_exactly(stdin, struct.unpack(">Q", length)[0])
        if body is None:
            return
        asked = orjson.loads(header)
        outcome = judge_body(body, asked["values"], asked["action"])
        del body
        reply = b"V" + outcome if isinstance(outcome, bytes) else b"E" + orjson.dumps(outcome)
        stdout.write(struct.pack(">Q", len(reply)) + reply)
        stdout.flush()


class Judge:
    """The server's side: starts the child when first needed, sends it one body at a
    time, restarts it if it died (see the module docstring)."""

    def __init__(self, command: list[str] | None = None) -> None:
        self._command = command or [sys.executable, "-c", _CHILD]
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: The child could not be started: every body is decoded in the server.
        self.unavailable = False
        #: Children started so far.
        self.started = 0

    @property
    def pid(self) -> int | None:
        """The running child's process id (``None``: none running)."""
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    async def judge(
        self, data: bytes | bytearray, values: int | None, action: str | None
    ) -> Judgement | None:
        """The body's outcome; ``None`` when the child could not judge it (the server
        then decodes it itself). A decoding error is raised."""
        if self.unavailable or self._closed:
            return None
        # Shielded: a client that goes away leaves the exchange to finish in step.
        reply = await asyncio.shield(self._exchange(data, values, action))
        if reply is None:
            return None
        if reply[:1] == b"V":
            return Judgement(pruned=reply[1:])
        outcome = orjson.loads(reply[1:])
        if "raise" in outcome:
            raise _error(outcome["raise"])
        return Judgement(outcome["stand_in"], _error(outcome["error"]))

    async def _exchange(
        self, data: bytes | bytearray, values: int | None, action: str | None
    ) -> bytes | None:
        async with self._lock:
            if self._closed:
                return None
            process = await self._running()
            if process is None:
                return None
            assert process.stdin is not None
            assert process.stdout is not None
            header = orjson.dumps({"action": action, "values": values})
            try:
                process.stdin.write(struct.pack(">I", len(header)) + header
                                    + struct.pack(">Q", len(data)))
                process.stdin.write(data)
                await process.stdin.drain()
                size = struct.unpack(">Q", await process.stdout.readexactly(8))[0]
                reply = await process.stdout.readexactly(size)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                log.warning("the body judge (pid %d) ended (%s): the body is decoded here, "
                            "the next one starts another", process.pid, type(error).__name__)
                await self._end(process)
                return None
            return reply

    async def _running(self) -> asyncio.subprocess.Process | None:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        if process is not None:
            await self._end(process)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": str(_ROOT) + (os.pathsep + path if path else "")}
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env,
            )
        except (OSError, NotImplementedError, RuntimeError) as error:
            log.warning("cannot start the body judge (%s): large bodies are decoded in the "
                        "server's process", error)
            self.unavailable = True
            return None
        self._process = process
        self.started += 1
        return process

    async def _end(self, process: asyncio.subprocess.Process) -> None:
        """Close the child's pipe, wait for it to end (killed if it does not)."""
        if self._process is process:
            self._process = None
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), _EXIT_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def close(self) -> None:
        """End the child (a body being judged is finished first, if it finishes soon)."""
        self._closed = True
        process = self._process
        if process is not None:
            await self._end(process)

