"""Request bodies: read in pieces, counted as they arrive, decoded off the loop when large.

Theory of operation
-------------------
The server is one event loop: no body may hold it for long, whatever it holds.

* **Reading.** A body is read piece by piece as the socket delivers it (one loop slice
  per piece) and joined once. A JSON 1.1 body's values (its ``{``, ``[`` and ``,``,
  :func:`~server.web.codec.json_values`) are counted piece by piece too; once more than
  any request holds (:data:`~server.web.codec.MAX_JSON_VALUES`), its answer is known
  (``SerializationException``, when its turn in the request flow comes) and the rest
  is read and dropped, so such a body is neither counted in one long scan nor kept.
* **Decoding.** A small body is decoded on the loop: a few milliseconds at most. A
  large one (over :data:`OFF_LOOP_BYTES`, or with more than :data:`OFF_LOOP_VALUES`
  values, CBOR counting each byte as one) is decoded on one worker thread, and, when
  the action is known, validated there too (``Engine.validate`` reads no engine
  state). The decoders and the validator hold the interpreter lock only in short
  stretches (the worker gives it up between Python steps and orjson and cbor2 between
  their own), so the loop keeps serving other clients meanwhile. One worker: large
  bodies are decoded one at a time, in arrival order.
* **Bodies no request holds.** A JSON body of more values than ``CHILD_VALUES`` (far
  more than any valid request has, yet under the value limit) would hold the
  interpreter lock for a long parse whatever the thread: it is judged in a child
  process first (``server.web.judge``), and only its error and a stand-in of its
  members come back. One the child finds valid comes back without the members its
  shape does not know, bounded by the shape, and is decoded here as above.
* **Order of answers.** Decoding and validation run early, but their errors are raised
  where the request flow would meet them: a decoding error where the body is parsed, a
  validation error where the engine would validate (after the authentication and
  access checks), so a request is answered exactly as if everything ran in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from server.core.calls import Validated
from server.core.engine import Engine
from server.core.errors import KinesisError, SerializationException
from server.web.codec import (
    MAX_JSON_VALUES,
    TOO_MANY,
    decode_cbor_request,
    decode_request,
    json_values,
)
from server.web.judge import CHILD_VALUES, Judge

__all__ = ["OFF_LOOP_BYTES", "OFF_LOOP_VALUES", "Body", "Decoded", "Decoder", "read_body"]

#: Bodies larger than this are decoded (and validated) on the worker thread.
OFF_LOOP_BYTES = 1024 * 1024
#: Bodies that may hold more values than this are decoded on the worker thread too (a
#: PutRecords of 500 entries has about 2,000; validating each value costs up to ~3 us).
OFF_LOOP_VALUES = 2_500
#: Actions whose request the worker does not validate: GetRecords' read-ahead takes its
#: parsed body, and its shape (three short members) costs nothing to check.
_NOT_VALIDATED_AHEAD = frozenset({"GetRecords"})
#: While reading, the loop is let go after every this many bytes.
_YIELD_EVERY = 512 * 1024


@dataclass(frozen=True, slots=True)
class Body:
    """A request body as read."""

    data: bytes | bytearray
    """The bytes (empty when they were dropped: see ``too_many``)."""
    size: int
    """How many bytes arrived."""
    values: int | None
    """A JSON body's :func:`~server.web.codec.json_values` (``None``: not counted)."""

    @property
    def too_many(self) -> bool:
        """More values than any request holds: refused, its bytes dropped as read."""
        return self.values is not None and self.values > MAX_JSON_VALUES


async def read_body(request: web.Request, cap: int, *, count_json: bool) -> Body | None:
    """The body, or ``None`` once it is known to exceed ``cap`` bytes (never read whole).

    With ``count_json`` the JSON values are counted as the pieces arrive."""
    length = request.content_length
    if length is not None and length > cap:
        return None
    # The pieces are copied into one buffer as they come (of the announced length, else
    # joined at the end), never into aiohttp's read() buffer, which grows by copies and
    # stays on the request object.
    buffer = bytearray(length) if length else None
    chunks: list[bytes] = []
    size = 0
    values = 0
    since_yield = 0
    async for chunk in request.content.iter_any():
        start = size
        size += len(chunk)
        if size > cap:
            return None
        if count_json and values <= MAX_JSON_VALUES:
            values += json_values(chunk)
            if values > MAX_JSON_VALUES:
                buffer = None  # the answer is known: the bytes are not needed
                chunks.clear()
        if not count_json or values <= MAX_JSON_VALUES:
            if buffer is not None and size <= len(buffer):
                buffer[start:size] = chunk
            else:
                if buffer is not None:  # more than announced: aiohttp refuses it anyway
                    chunks.append(bytes(buffer[:start]))
                    buffer = None
                chunks.append(chunk)
        since_yield += len(chunk)
        if since_yield >= _YIELD_EVERY:
            # Pieces already received are handed over without a pause: let the loop
            # serve others between them.
            since_yield = 0
            await asyncio.sleep(0)
    if buffer is not None and size == len(buffer):
        data: bytes | bytearray = buffer
    else:
        data = b"".join(chunks) if buffer is None else bytes(buffer[:size])
    return Body(data, size, values if count_json else None)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded body and, when validated ahead, the outcome of its validation."""

    payload: Any
    """The parsed body."""
    checked: Validated | KinesisError | None = None
    """The validated request, the validation error to raise in its turn, or ``None``:
    not validated ahead."""


def _decode(body: Body, cbor: bool) -> Any:
    if body.too_many:
        raise SerializationException(TOO_MANY)
    return decode_cbor_request(body.data) if cbor else decode_request(body.data, body.values)


class Decoder:
    """Decodes bodies: small ones at once, large ones on its worker thread."""

    def __init__(self, engine: Engine, judge: Judge | None = None) -> None:
        self._engine = engine
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        #: Judges bodies of more than ``CHILD_VALUES`` values in a child process
        #: (``server.web.judge``); ``None``: every body is decoded here.
        self.judge = judge

    @staticmethod
    def off_loop(body: Body, cbor: bool) -> bool:
        """Whether ``body`` is decoded on the worker thread."""
        if body.too_many:
            return False  # refused without decoding
        values = body.size if cbor or body.values is None else body.values
        return body.size > OFF_LOOP_BYTES or values > OFF_LOOP_VALUES

    async def decode(self, body: Body, cbor: bool, action: str | None) -> Decoded:
        """Parse ``body`` (raising its decoding error); a large one is also validated for
        ``action`` (when known) on the worker thread."""
        if not self.off_loop(body, cbor):
            return Decoded(_decode(body, cbor))
        judge = self.judge
        if judge is not None and not cbor and body.values is not None \
                and body.values > CHILD_VALUES:
            judged = await judge.judge(body.data, body.values, action)
            if judged is not None:
                if judged.error is not None:  # only a stand-in and the error come back
                    return Decoded(judged.stand_in, judged.error)
                pruned = judged.pruned  # valid: what is answered is the same without
                body = Body(pruned, len(pruned), json_values(pruned))  # unknown members
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="body-decoder"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._decode_and_check, body, cbor,
                                          action)

    def _decode_and_check(self, body: Body, cbor: bool, action: str | None) -> Decoded:
        try:
            payload = _decode(body, cbor)
        except KinesisError as error:
            raise error.with_traceback(None) from None
        if action is None or action in _NOT_VALIDATED_AHEAD or not isinstance(payload, dict):
            return Decoded(payload)
        try:
            checked: Validated | KinesisError = self._engine.validate(action, payload)
        except KinesisError as error:
            checked = error.with_traceback(None)
        return Decoded(payload, checked)

    async def close(self) -> None:
        """Let the worker thread end (once a decode in progress finishes); end the
        judge's child."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)
        if self.judge is not None:
            await self.judge.close()
