"""Shard iterators: opaque, tamper-evident tokens that expire after five minutes.

A token is ``base64(payload) + base64(tag)`` where the payload is a small JSON array
``[stream name, shard id, position, issued ms, stream created ms]`` and the tag is an
HMAC-SHA256 of it (truncated to 16 bytes) under a secret. The engine can therefore
trust everything in a token that verifies: nothing about an iterator is kept in server
memory. A server with a data directory keeps the secret there (``server.storage.durable``),
so a token outlives a restart; a memory server draws a fresh one, and its tokens die
with it, as its records do. ``position`` is the next sequence number to read (a decimal string,
since it exceeds 64 bits). ``stream created ms`` makes an iterator from a deleted and
re-created stream of the same name stale.

Expiry compares ``issued ms`` with the ``now`` of the check, both from the server's
clock, which is wall-clock epoch time (``time.time``), never a monotonic clock: a
monotonic clock's origin is arbitrary (boot time, on Linux), so a token from before a
reboot would look issued in the future. So a token expires five minutes after it was
issued whether or not the server restarted in between.
"""

from __future__ import annotations

import hmac
from base64 import b64decode, b64encode
from binascii import Error as BinasciiError
from datetime import UTC, datetime
from hashlib import sha256
from typing import NamedTuple

import orjson

from server.core.errors import ExpiredIteratorException, InvalidArgumentException

__all__ = ["IteratorCodec", "IteratorState", "amz_utc"]

_TAG_BYTES = 16
_TAG_B64 = 24  # len(b64encode(16 bytes))


class IteratorState(NamedTuple):
    """What a shard iterator says: where to read next, and since when it is valid."""

    stream_name: str
    shard_id: str
    position: int
    issued_ms: int
    stream_created_ms: int


def amz_utc(epoch_seconds: float) -> str:
    """A time as the service's messages print it: ``Thu Nov 26 00:48:12 UTC 2026``."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%a %b %d %H:%M:%S UTC %Y")


class IteratorCodec:
    """Makes and checks shard iterator tokens with one secret key."""

    def __init__(self, secret: bytes, ttl_seconds: float) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, sha256).digest()[:_TAG_BYTES]

    def encode(self, state: IteratorState) -> str:
        """The token for ``state``."""
        payload = orjson.dumps(
            [
                state.stream_name,
                state.shard_id,
                str(state.position),
                state.issued_ms,
                state.stream_created_ms,
            ]
        )
        return (b64encode(payload) + b64encode(self._tag(payload))).decode("ascii")

    def decode(self, token: str, now: float) -> IteratorState:
        """Check a token and give back its state.

        Raises ``InvalidArgumentException("Invalid ShardIterator.")`` for anything that is
        not a token this server made (garbage, truncation, a changed byte), and
        :class:`ExpiredIteratorException` once the token is older than the TTL.
        """
        try:
            raw = token.encode("ascii")
            payload = b64decode(raw[:-_TAG_B64], validate=True)
            tag = b64decode(raw[-_TAG_B64:], validate=True)
            if len(raw) <= _TAG_B64 or not hmac.compare_digest(tag, self._tag(payload)):
                raise ValueError("bad tag")
            name, shard_id, position, issued_ms, created_ms = orjson.loads(payload)
            state = IteratorState(name, shard_id, int(position), int(issued_ms), int(created_ms))
        except (ValueError, TypeError, BinasciiError, UnicodeError, orjson.JSONDecodeError):
            raise InvalidArgumentException("Invalid ShardIterator.") from None
        if now * 1000.0 - state.issued_ms > self.ttl_seconds * 1000.0:
            raise ExpiredIteratorException(
                f"Iterator expired. The iterator was created at time "
                f"{amz_utc(state.issued_ms / 1000.0)} while right now it is {amz_utc(now)} "
                f"which is further in the future than the tolerated delay of "
                f"{int(self.ttl_seconds * 1000)} milliseconds."
            )
        return state
