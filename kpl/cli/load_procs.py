"""``kpl load --processes N``: one run's load offered by N producer processes.

One event loop caps the load one process can offer; N processes (the ``spawn`` start
method, so no event loop or socket is inherited) each run :func:`kpl.cli.load_run.run_load`
against the same endpoint with a share of the run (``rate / N``, a share of
``--records``), and the parent makes one run of them:

- The parent starts the embedded server when there is one (the children put into it
  over loopback), creates the stream, then starts the children.
- Children send their view snapshots and, at the end, their summary and stats through
  one queue; the parent's view shows the sum, and the summary is made from the merged
  stats (:func:`kpl.loadgen.merge_stats`), so ``--json`` and ``--report`` stay one run's.
- Children run in sessions of their own, so a terminal's Ctrl-C reaches only the parent,
  which passes each Ctrl-C (or SIGTERM) on: the first stops producing and
  flushes, a second gives up on the flush, as in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import time
from typing import TYPE_CHECKING, Any, Final

from kpl.loadgen import LoadStats, Snapshot, merge_stats, summarize

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from kpl.cli.load_run import LoadOptions
    from kpl.cli.load_view import View

__all__ = ["combine_snapshots", "run_processes", "shares"]

#: How long the parent waits on the queue before checking that its children live.
_POLL_S: Final = 0.2
#: How long a child waits for the others to be ready before it starts anyway.
_START_TIMEOUT_S: Final = 30.0


def shares(total: int, n: int) -> list[int]:
    """``total`` split into ``n`` parts that differ by at most one, largest first."""
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def combine_snapshots(snaps: list[Snapshot]) -> Snapshot:
    """One view of several processes' latest snapshots: counts and rates add up; the
    latency figures are the worst process's (percentiles do not add)."""
    errors: dict[str, int] = {}
    for snap in snaps:
        for code, n in snap.errors_by_code.items():
            errors[code] = errors.get(code, 0) + n
    return Snapshot(
        elapsed_s=max(s.elapsed_s for s in snaps),
        records_sent=sum(s.records_sent for s in snaps),
        records_acked=sum(s.records_acked for s in snaps),
        records_failed=sum(s.records_failed for s in snaps),
        in_flight=sum(s.in_flight for s in snaps),
        records_per_s=sum(s.records_per_s for s in snaps),
        bytes_per_s=sum(s.bytes_per_s for s in snaps),
        retries=sum(s.retries for s in snaps),
        throttles=sum(s.throttles for s in snaps),
        p50_ms=max(s.p50_ms for s in snaps),
        p99_ms=max(s.p99_ms for s in snaps),
        errors_by_code=errors,
    )


class _QueueView:
    """A child's view: its snapshots go to the parent."""

    def __init__(self, index: int, out: Any, refresh_s: float) -> None:
        self._index = index
        self._out = out
        self.refresh_s = refresh_s

    def start(self) -> None:
        """Nothing to start."""

    def announce(self, phase: str) -> None:
        """The parent announces the phases."""

    def update(self, snap: Snapshot, phase: str) -> None:
        """Send the snapshot to the parent."""
        self._out.put(("snapshot", self._index, snap, phase))

    def stop(self) -> None:
        """Nothing to stop."""


def _child(index: int, opts: LoadOptions, out: Any, refresh_s: float, start: Any) -> None:
    """A child process: run its share and send back what came of it."""
    from kpl.cli.load_run import run_load
    from kpl.runner import run

    # A session of its own: the terminal's Ctrl-C is the parent's to pass on, and where
    # the kernel groups CPU time by session (autogroup), each child gets a share of its
    # own instead of the N of them splitting one.
    os.setsid()

    async def ready() -> None:
        # Every child set up (interpreter, imports, producer) before any puts: the run's
        # duration is not stretched by one starting later than another.
        await asyncio.get_running_loop().run_in_executor(None, start.wait, _START_TIMEOUT_S)

    try:
        summary, stats = run(run_load(opts, _QueueView(index, out, refresh_s), ready=ready))
    except BaseException as error:
        out.put(("error", index, f"{type(error).__name__}: {error}", None))
        raise
    out.put(("result", index, summary, stats))


async def run_processes(
    opts: LoadOptions, view: View, endpoint: str, shards: int, settings: dict[str, Any]
) -> tuple[dict[str, Any], LoadStats]:
    """Run ``opts`` as ``opts.processes`` child processes against ``endpoint`` (the stream
    exists); return one summary and the merged stats."""
    n = opts.processes
    loop = asyncio.get_running_loop()
    cpu_start = time.process_time()
    records = shares(opts.records, n) if opts.records is not None else [None] * n
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    children: list[BaseProcess] = []
    starting = [i for i in range(n) if records[i] != 0]
    start = context.Barrier(len(starting))
    for index in starting:
        child_opts = dataclasses.replace(
            opts,
            endpoint=endpoint,
            server_args=(),
            processes=1,
            records=records[index],
            rate=None if opts.rate is None else opts.rate / n,
            seed=None if opts.seed is None else opts.seed + index,
            metrics_port=None,
            shards=shards,
        )
        child = context.Process(
            target=_child, args=(index, child_opts, out, view.refresh_s, start), daemon=True
        )
        child.start()
        children.append(child)

    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        for child in children:
            if child.pid is not None and child.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGINT)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
            pass
    latest: dict[int, Snapshot] = {}
    phases: dict[int, str] = {}
    results: dict[int, tuple[dict[str, Any], LoadStats]] = {}
    errors: list[str] = []
    fresh: set[int] = set()
    shown_at = loop.time()
    try:
        view.announce(f"producing in {len(children)} processes")
        while len(results) + len(errors) < len(children):
            try:
                kind, index, payload, extra = await loop.run_in_executor(
                    None, out.get, True, _POLL_S
                )
            except queue.Empty:
                dead = [c for c in children if c.exitcode not in (None, 0)]
                if len(dead) > len(errors):
                    errors.append(f"a load process exited with code {dead[-1].exitcode}")
                continue
            if kind == "snapshot":
                latest[index] = payload
                phases[index] = extra
                fresh.add(index)
                running = {i for i, p in phases.items() if p not in ("done", "aborted")}
                # One line per refresh: once every running child has reported (or the
                # period is over), not once per child.
                if running and (
                    fresh >= running or loop.time() - shown_at >= view.refresh_s
                ):
                    phase = "producing" if "producing" in phases.values() else "flushing"
                    view.update(combine_snapshots(list(latest.values())), phase)
                    fresh.clear()
                    shown_at = loop.time()
            elif kind == "result":
                results[index] = (payload, extra)
            else:
                errors.append(str(payload))
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for proc in children:
            await loop.run_in_executor(None, proc.join, 10)
            if proc.is_alive():  # pragma: no cover - a child stuck past its own close
                proc.kill()
    if errors:
        raise RuntimeError(f"kpl load --processes: {errors[0]}")

    parts = [results[i] for i in sorted(results)]
    stats = merge_stats([s for _, s in parts])
    end = max(part_stats.start + part["duration_s"] for part, part_stats in parts)
    summary = summarize(
        stats,
        end=end,
        kinesis_records=sum(part["kinesis_records"] for part, _ in parts),
        put_records_calls=sum(part["put_records_calls"] for part, _ in parts),
        settings=settings,
        interrupted=signals > 0 or any(part["interrupted"] for part, _ in parts),
        process_cpu_s=time.process_time() - cpu_start
        + sum(part["process_cpu_s"] or 0.0 for part, _ in parts),
        generator_cpu_s=sum(part["generator_cpu_s"] or 0.0 for part, _ in parts),
    )
    summary["bulk"] = all(part.get("bulk") for part, _ in parts)
    view.update(stats.snapshot(end, final=True), "done" if signals < 2 else "aborted")
    return summary, stats
