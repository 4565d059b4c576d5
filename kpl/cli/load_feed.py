"""How ``kpl load`` puts records and learns their outcomes, at a small cost per record.

The shell half of :mod:`kpl.loadgen`'s pacing and bookkeeping:

- One feeding task wakes once per :attr:`~kpl.loadgen.Pacer.tick_s` (1-5 ms) and puts
  everything due since the previous tick as one *chunk*: payloads and keys are slices of
  :class:`~kpl.loadgen.RecordSource`'s tables, counted sent in one call.
- Nothing is registered on a record's future. Every :data:`SWEEP_S` the feed walks its
  chunks in flight; a chunk whose futures are all done is settled in bulk: its results
  read by ``map`` (C loops), its records counted acknowledged at once, and its failures,
  the rare case, one by one.
- A record's latency is its put time (read just before its put) to the moment its
  acknowledging answer arrived, which its result's last attempt carries
  (``Attempt.ended``), so no callback has to run at that moment. It is taken for every
  record up to :data:`~kpl.loadgen.LATENCY_SAMPLES_PER_S` a second, and for one record in
  ``every`` above that (a systematic sample over randomly keyed records, so uniform).
- The bulk path: when the producer has ``put_many()`` and a chunk has records that need no
  latency, those go in one ``put_many()`` call (one future for all of them) and only the
  sampled ones through ``put()``.

The feed also adds up the CPU time of its own work (``process_time`` around generation,
settling and the view), reported as ``generator_cpu_s``.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Callable
from typing import Any, Final

from kpl.histogram import LatencyHistogram
from kpl.loadgen import LoadStats, RecordSource

__all__ = ["SWEEP_S", "Feed", "failure_code"]

#: How often chunks in flight are checked for outcomes (seconds).
SWEEP_S: Final = 0.02

_result = asyncio.Future.result
_done = asyncio.Future.done
_attempts = operator.itemgetter(3)  # RecordResult.attempts
_codes = operator.attrgetter("error_code")


def failure_code(error: BaseException) -> str:
    """The code a failed record is counted under: the wire code it carries, else its class."""
    return str(getattr(error, "code", None) or type(error).__name__)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Chunk:
    """Records put together: their futures, sizes, and the put times of sampled ones."""

    __slots__ = (
        "filling", "first", "futures", "nbytes", "pick", "sizes", "step", "t0s", "weight",
    )

    def __init__(
        self,
        futures: list[Any],
        sizes: list[int],
        nbytes: int,
        t0s: list[float],
        first: int = 0,
        step: int = 1,
    ) -> None:
        self.futures = futures
        self.sizes = sizes
        self.nbytes = nbytes
        #: put times of the records measured: ``first``, then one in ``step``
        self.t0s = t0s
        self.first = first
        self.step = step
        #: with every record measured for a reference: the first of the sample (the
        #: feed's stride goes on across chunks)
        self.pick = first
        #: the sampling stride when these records were put: each measured one stands for
        #: this many in the percentiles
        self.weight = step
        #: still being put: not to be settled yet
        self.filling = True


class _Bulk:
    """Records put by one ``put_many()`` call: one future for all of them."""

    __slots__ = ("future", "nbytes", "sizes")

    def __init__(self, future: Any, sizes: list[int], nbytes: int) -> None:
        self.future = future
        self.sizes = sizes
        self.nbytes = nbytes


class Feed:
    """Puts chunks of records into ``producer`` and settles their outcomes into ``stats``.

    ``every``: measure the latency of one record in this many. ``exact``: also measure
    every record's latency into this histogram (a benchmark's reference for the sample).
    ``bulk``: use the producer's ``put_many()`` for records that need no latency.
    """

    def __init__(
        self,
        producer: Any,
        source: RecordSource,
        stats: LoadStats,
        time_fn: Callable[[], float],
        *,
        every: int = 1,
        exact: LatencyHistogram | None = None,
        bulk: bool = False,
    ) -> None:
        self._producer = producer
        self._source = source
        self._stats = stats
        self._time = time_fn
        self.every = every
        self._exact = exact
        self._put_many: Callable[..., Any] | None = (
            getattr(producer, "put_many", None) if bulk else None
        )
        self._pending: list[_Chunk | _Bulk] = []
        self._next_sample = 0  # records to skip before the next sampled one
        #: CPU seconds spent by the feed's own work (not the producer's).
        self.cpu_s = 0.0

    @property
    def in_flight(self) -> int:
        """Chunks put whose outcomes are not all settled yet."""
        return len(self._pending)

    @property
    def bulk(self) -> bool:
        """Whether records that need no latency go through ``put_many()``."""
        return self._put_many is not None

    async def put(self, n: int) -> None:
        """Put the next ``n`` records (waiting, as ``put()`` does, while the buffer is full).

        Cancelled part way (the run is stopped while the buffer is full), the records
        already put stay in the books and the others were never sent."""
        started = time.process_time()
        datas, keys, sizes = self._source.take(n)
        every = self.every
        measure_all = self._exact is not None or every == 1
        first = self._next_sample
        if first >= n:
            self._next_sample -= n
        else:
            self._next_sample = every - 1 - (n - 1 - first) % every
        self.cpu_s += time.process_time() - started
        if self._put_many is not None and not measure_all:
            await self._put_bulk(datas, keys, sizes, first)
            return
        put = self._producer.put
        now = self._time
        futures: list[Any] = []
        append = futures.append
        t0s: list[float] = []
        if measure_all:
            chunk = _Chunk(futures, sizes, 0, t0s)
            chunk.pick = first
            chunk.weight = every
        else:
            chunk = _Chunk(futures, sizes, 0, t0s, first, every)
        self._pending.append(chunk)
        try:
            if measure_all:
                for data, key in zip(datas, keys, strict=True):
                    t0s.append(now())
                    append(await put(data, key))
            else:
                sample = first
                for i, (data, key) in enumerate(zip(datas, keys, strict=True)):
                    if i == sample:
                        t0s.append(now())
                        sample += every
                    append(await put(data, key))
        finally:
            put_count = len(futures)
            if put_count < n:
                chunk.sizes = sizes[:put_count]
                del t0s[len(range(chunk.first, put_count, chunk.step)) :]
            chunk.nbytes = sum(chunk.sizes)
            chunk.filling = False
            self._stats.on_sent_many(put_count, chunk.nbytes)

    async def _put_bulk(
        self, datas: list[bytes], keys: list[str], sizes: list[int], first: int
    ) -> None:
        """The sampled records through ``put()``, the others in one ``put_many()``."""
        assert self._put_many is not None
        sampled = range(first, len(datas), self.every)
        picked = set(sampled)
        rest = [i for i in range(len(datas)) if i not in picked]
        put = self._producer.put
        now = self._time
        futures: list[Any] = []
        t0s: list[float] = []
        chunk = _Chunk(futures, [], 0, t0s)
        chunk.weight = self.every
        self._pending.append(chunk)
        try:
            for i in sampled:
                t0s.append(now())
                futures.append(await put(datas[i], keys[i]))
        finally:
            del t0s[len(futures) :]
            chunk.sizes = [sizes[i] for i in sampled[: len(futures)]]
            chunk.nbytes = sum(chunk.sizes)
            chunk.filling = False
            self._stats.on_sent_many(len(futures), chunk.nbytes)
        if rest:
            rest_sizes = [sizes[i] for i in rest]
            future = await self._put_many([(datas[i], keys[i]) for i in rest])
            nbytes = sum(rest_sizes)
            self._stats.on_sent_many(len(rest), nbytes)
            self._pending.append(_Bulk(future, rest_sizes, nbytes))

    def forget(self) -> None:
        """Give up on what is still in flight: outcomes that come later (records the
        producer's close fails) are retrieved and dropped, never logged as unretrieved."""
        for chunk in self._pending:
            for future in chunk.futures if isinstance(chunk, _Chunk) else (chunk.future,):
                future.add_done_callback(_retrieve)
        self._pending = []

    def sweep(self) -> None:
        """Settle every chunk whose records all have an outcome."""
        started = time.process_time()
        keep: list[_Chunk | _Bulk] = []
        for chunk in self._pending:
            if isinstance(chunk, _Bulk):
                if chunk.future.done():
                    self._settle_bulk(chunk)
                else:
                    keep.append(chunk)
                continue
            if chunk.filling:
                keep.append(chunk)
                continue
            futures = chunk.futures
            # Records come back roughly in put order: while the last one is out, the chunk
            # costs one call; then the rest are checked by a C loop.
            if futures and not futures[-1].done():
                keep.append(chunk)
            elif all(map(_done, futures)):
                self._settle(chunk)
            else:
                keep.append(chunk)
        self._pending = keep
        self.cpu_s += time.process_time() - started

    def _settle(self, chunk: _Chunk) -> None:
        stats = self._stats
        futures = chunk.futures
        if not futures:
            return
        try:
            results = list(map(_result, futures))
        except BaseException:  # a record failed or was cancelled: one by one
            self._settle_slowly(chunk)
            return
        attempts = list(map(_attempts, results))
        retries = sum(map(len, attempts)) - len(attempts)
        if retries:
            for tries in attempts:
                if len(tries) > 1:
                    stats.on_attempts(list(map(_codes, tries)))
        acked_at = attempts[-1][-1].ended
        exact = self._exact
        every = chunk.weight
        pick = chunk.pick
        indices = range(chunk.first, len(futures), chunk.step)
        for index, t0 in zip(indices, chunk.t0s, strict=True):
            ended = attempts[index][-1].ended
            latency = ended - t0
            if exact is not None:
                # Every record measured for the reference; the sample is one in `every`.
                exact.add(latency)
                if index < pick or (index - pick) % every:
                    continue
            stats.on_latency(latency, ended, every)
            if ended > acked_at:
                acked_at = ended
        stats.on_acked_many(len(futures), chunk.nbytes, retries, acked_at)

    def _settle_slowly(self, chunk: _Chunk) -> None:
        stats = self._stats
        t0_of = dict(
            zip(range(chunk.first, len(chunk.futures), chunk.step), chunk.t0s, strict=True)
        )
        now = self._time()
        for index, (future, size) in enumerate(zip(chunk.futures, chunk.sizes, strict=True)):
            if future.cancelled():
                stats.on_failed("Cancelled", (), now)
                continue
            error = future.exception()
            if error is not None:
                attempts = getattr(error, "attempts", ())
                stats.on_failed(failure_code(error), list(map(_codes, attempts)), now)
                continue
            tries = future.result().attempts
            ended = tries[-1].ended
            if len(tries) > 1:
                stats.on_attempts(list(map(_codes, tries)))
            stats.on_acked_many(1, size, len(tries) - 1, ended)
            t0 = t0_of.get(index)
            if t0 is not None:
                if self._exact is not None:
                    self._exact.add(ended - t0)
                    if index < chunk.pick or (index - chunk.pick) % chunk.weight:
                        continue
                stats.on_latency(ended - t0, ended, chunk.weight)

    def _settle_bulk(self, bulk: _Bulk) -> None:
        stats = self._stats
        now = self._time()
        if bulk.future.cancelled():
            for _ in bulk.sizes:
                stats.on_failed("Cancelled", (), now)
            return
        batch = bulk.future.result()
        failed_bytes = 0
        for index, error in batch.failures:
            failed_bytes += bulk.sizes[index]
            attempts = getattr(error, "attempts", ())
            stats.on_failed(failure_code(error), list(map(_codes, attempts)), now)
        retries = 0
        if batch.failed < batch.count and self._producer_retried():
            # Attempts of delivered records are only in their results: built only when
            # the producer retried anything since the last look.
            for result in batch.results():
                if result is not None and len(result.attempts) > 1:
                    retries += len(result.attempts) - 1
                    stats.on_attempts(list(map(_codes, result.attempts)))
        stats.on_acked_many(batch.count - batch.failed, bulk.nbytes - failed_bytes, retries, now)

    def _producer_retried(self) -> bool:
        metrics = self._producer.metrics()
        return bool(metrics.get("AllErrors", 0.0))
