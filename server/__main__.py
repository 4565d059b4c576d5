"""``python -m server``: run the stream server until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from server.cli_args import add_server_arguments, config_from_args
from server.config import ServerConfig
from server.storage.durable import check_data_dir
from server.web.runner import StreamServer

__all__ = ["main"]

log = logging.getLogger("server")


def _parser(prog: str = "python -m server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local server speaking the Kinesis Data Streams API (JSON 1.1 and CBOR 1.1).",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--check", action="store_true",
        help="with --data-dir: verify the directory offline (changing nothing), print what "
        "is damaged, and exit 1 if anything is",
    )
    return parser


def _check(data_dir: str, prog: str) -> int:
    """``--check``: one line per finding and a summary; 0 when nothing is damaged."""
    try:
        report, summary = check_data_dir(Path(data_dir))
    except OSError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    for finding in report.findings:
        print(finding.describe())
    damage = report.damage
    if damage:
        lost = f"{report.records_lost} records lost"
        if not all(f.exact for f in damage):
            lost = f"at least {lost} (some counts unknown)"
        print(f"{summary}: {len(damage)} problems, {lost}")
        return 1
    print(f"{summary}: no damage")
    return 0


async def _serve(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
            pass
    try:
        async with StreamServer(config) as server:
            print(f"kinesis stream server listening on {server.url}", flush=True)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on Windows
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _bind_error(error: OSError, config: ServerConfig) -> str:
    """The one line for a failure to start; a busy port says what to do about it."""
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {config.host}:{config.port}: address already in use "
            "(is another server running there? --port 0 picks a free port)"
        )
    return str(error)


def main(argv: list[str] | None = None, prog: str = "python -m server") -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), serve until a signal, return 0.

    ``prog`` names the command in error lines (``kpl server`` runs this too)."""
    ns = _parser(prog).parse_args(argv)
    if ns.check:
        if ns.data_dir is None:
            print(f"{prog}: error: --check needs --data-dir", file=sys.stderr)
            return 2
        return _check(ns.data_dir, prog)
    try:
        config = config_from_args(ns)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(config))
    except OSError as error:
        print(f"{prog}: error: {_bind_error(error, config)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
