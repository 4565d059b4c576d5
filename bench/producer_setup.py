"""Set-up shared by the producer benchmarks (producer_e2e, producer_adaptive,
producer_reshard): the bundled server in its own process, a stream on it, and the
workload of 100-byte records over 10,000 partition keys."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Distinct partition keys of the workload.
KEYS = 10_000
#: Bytes of data per record: an 8-digit record number, then filler.
RECORD_SIZE = 100
_FILLER = b"x" * (RECORD_SIZE - 8)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def server_process(*args: str, capture_errors: bool = False) -> Iterator[str]:
    """The bundled server in its own process (``python -m server`` with ``args`` after
    the port and host); yields its URL once it accepts connections. ``capture_errors``:
    a server that does not start reports its stderr."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(port), "--host", "127.0.0.1", *args],
        cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture_errors else subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"the server did not start: {err}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_with_limits() -> AbstractContextManager[str]:
    """The server with the service's per-shard limits; streams are ACTIVE at once."""
    return server_process("--state-delay", "0")


def server_without_limits() -> AbstractContextManager[str]:
    """The server with no throughput limits (raw throughput)."""
    return server_process("--limits", "off", capture_errors=True)


async def create_stream(url: str, name: str, shards: int, interval: float = 0.05) -> None:
    """Create a stream of ``shards`` shards and wait (at most 30 s) until it is ACTIVE."""
    from kpl import KinesisClient

    async with KinesisClient(url, region="us-east-1") as client:
        await client.create_stream(name, shards)
        async with asyncio.timeout(30):
            await client.wait_for_active(name, interval=interval)


def partition_keys(count: int = KEYS) -> list[str]:
    """The workload's partition keys: ``user-0000000`` onwards."""
    return [f"user-{i:07d}" for i in range(count)]


def record_data(i: int) -> bytes:
    """The data of record number ``i``: RECORD_SIZE bytes, distinct per record."""
    return b"%08d" % i + _FILLER


def workload(count: int, key_count: int = KEYS) -> list[tuple[str, bytes]]:
    """``count`` records as (partition key, data), keys taken in turn."""
    keys = partition_keys(key_count)
    return [(keys[i % key_count], record_data(i)) for i in range(count)]
