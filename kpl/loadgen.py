"""The load generator's decisions: pacing, record generation, latency and throughput stats.

Theory of operation
-------------------
``kpl load`` is a thin asyncio shell (``kpl.cli.load_run``) around the pure pieces here, which
take ``now`` (seconds, any monotonic origin) and a ``random.Random`` and never sleep:

* :class:`Pacer` says how many records may be put by ``now`` at a target rate (an open
  schedule: record *i* is due at ``start + i / rate``). When the producer falls behind
  (backpressure) the schedule slips rather than bursting more than ``max_lag_s`` worth of
  records afterwards.
* :class:`Pacer` also says how long to sleep between grants (:attr:`Pacer.tick_s`, 1-5 ms
  adapted to the rate): the shell grants everything due at each tick, never one sleep
  per record.
* :class:`RecordSource` makes records of a size drawn from ``[min, max]`` over ``K``
  distinct partition keys, drawn once into tables that :meth:`RecordSource.take` slices:
  no random call and no Python loop per record.
* :class:`~kpl.histogram.LatencyHistogram` (in its own module) keeps put→acknowledged
  latencies in logarithmic buckets.
* :class:`LoadStats` counts outcomes exactly (in bulk: :meth:`LoadStats.on_acked_many`),
  attempt errors by code, retries and throttles, and keeps a per-interval timeline
  (records, bytes, latency percentiles) for reports. Latencies come from every record up
  to :data:`LATENCY_SAMPLES_PER_S` records a second and from a uniform sample of that
  many a second above it (:func:`sample_every`); the summary says which.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from kpl.histogram import LatencyHistogram
from kpl.protocol.limits import SHARD_WRITE_BYTES_PER_SECOND, SHARD_WRITE_RECORDS_PER_SECOND

#: Error code of a per-shard throttling answer, counted apart in the stats.
THROTTLE_CODE: Final = "ProvisionedThroughputExceededException"

#: The pacer's ticks: sleep for about this many records, within these bounds (seconds).
TICK_RECORDS: Final = 32
MIN_TICK_S: Final = 0.001
MAX_TICK_S: Final = 0.005

#: Latencies are measured for every record up to this many records/s, and for a uniform
#: sample of at least this many a second above it.
LATENCY_SAMPLES_PER_S: Final = 10_000

# RecordSource's tables.
_MIN_PAYLOADS: Final = 16
_MAX_PAYLOADS: Final = 4096
_MIN_KEY_SEQUENCE: Final = 8192

def parse_record_size(text: str) -> tuple[int, int]:
    """Parse ``B`` or ``MIN-MAX`` (bytes) into ``(min, max)``.

    Raises ``ValueError`` with a message fit for the user.
    """
    parts = text.strip().split("-")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"record size must be B or MIN-MAX in bytes, got {text!r}")
    low = int(parts[0])
    high = int(parts[-1])
    if low < 1:
        raise ValueError(f"record size must be at least 1 byte, got {text!r}")
    if high < low:
        raise ValueError(f"record size range is empty: {text!r} (MIN must not exceed MAX)")
    return low, high


class Pacer:
    """An open schedule of puts at ``rate`` records/s; ``rate=None`` means no pacing.

    The shell wakes once per :attr:`tick_s` (or at :meth:`next_due`, when later) and takes
    everything due since its last wake-up in one go, so the event loop turns a few hundred
    times a second whatever the rate, never once per record.
    """

    __slots__ = ("_max_lag", "_rate", "_start", "_taken")

    def __init__(self, rate: float | None, start: float, *, max_lag_s: float = 1.0) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of records/s, got {rate!r}")
        if max_lag_s <= 0:
            raise ValueError("max_lag_s must be positive")
        self._rate = rate
        self._start = start
        self._taken = 0
        self._max_lag = max_lag_s

    @property
    def taken(self) -> int:
        """Records granted so far."""
        return self._taken

    @property
    def tick_s(self) -> float:
        """How long the shell should sleep between grants: long enough for about
        :data:`TICK_RECORDS` records, within [:data:`MIN_TICK_S`, :data:`MAX_TICK_S`]."""
        if self._rate is None:
            return 0.0
        return min(MAX_TICK_S, max(MIN_TICK_S, TICK_RECORDS / self._rate))

    def _grant(self, due: int, want: int) -> int:
        backlog = due - self._taken
        assert self._rate is not None
        limit = max(1, math.ceil(self._max_lag * self._rate))
        if backlog > limit:
            # Fell behind (the producer pushed back): slip the schedule instead of
            # bursting the whole debt later.
            self._start += (backlog - limit) / self._rate
            backlog = limit
        granted = max(0, min(want, backlog))
        self._taken += granted
        return granted

    def take(self, now: float, want: int) -> int:
        """Grant up to ``want`` records due by ``now``; returns how many (maybe 0)."""
        if want <= 0:
            return 0
        if self._rate is None:
            self._taken += want
            return want
        # Record i is due at start + i/rate, so floor(elapsed*rate)+1 are due by now
        # (the epsilon keeps 0.1 s * 100/s from flooring to 9 in binary floating point).
        due = math.floor((now - self._start) * self._rate + 1e-9) + 1
        if due <= self._taken and now >= self._start + self._taken / self._rate:
            # Rounding put the floor one short of a record next_due() calls due: grant it,
            # or a caller that slept until next_due() would find nothing and spin.
            due = self._taken + 1
        return self._grant(due, want)

    def take_before(self, end: float, want: int) -> int:
        """Grant up to ``want`` records due strictly before ``end`` (a run's deadline:
        the record due at the deadline itself is not part of the run)."""
        if want <= 0:
            return 0
        if self._rate is None:
            self._taken += want
            return want
        due = max(0, math.ceil((end - self._start) * self._rate - 1e-9))
        return self._grant(due, want)

    def next_due(self) -> float | None:
        """When the next record is due (``None``: always, no pacing)."""
        if self._rate is None:
            return None
        return self._start + self._taken / self._rate


class RecordSource:
    """Records of random sizes in ``[size_min, size_max]`` over ``keys`` partition keys.

    Every random draw happens here, once: a table of payloads (their sizes drawn from the
    range) and a longer table of partition keys drawn uniformly. Records walk both tables
    in step, wrapping around; the two lengths are coprime, so the (payload, key) pairs
    repeat only after their product. :meth:`take` hands out many records as slices of the
    tables, with no per-record Python work at all.
    """

    __slots__ = ("_data", "_data_pos", "_key_pos", "_key_seq", "_keys", "_sizes")

    def __init__(
        self,
        rng: random.Random,
        *,
        size_min: int,
        size_max: int,
        keys: int,
        table_bytes: int = 8 << 20,
    ) -> None:
        if not 1 <= size_min <= size_max:
            raise ValueError(f"bad record size range {size_min}-{size_max}")
        if keys < 1:
            raise ValueError(f"keys must be at least 1, got {keys}")
        self._keys = [f"key-{i:0{len(str(keys - 1))}d}" for i in range(keys)]
        # Printable payloads keep `kpl tail` output readable; slices of one random block.
        alphabet = (string.ascii_letters + string.digits).encode()
        block = bytes(rng.choices(alphabet, k=size_max + 4096))
        # As many payloads as fit in table_bytes (bounded either way): enough that a
        # range of sizes is well covered, few enough that 1 MiB records stay affordable.
        n_data = min(_MAX_PAYLOADS, max(_MIN_PAYLOADS, table_bytes // size_max))
        random_ = rng.random
        span = size_max - size_min + 1
        self._sizes = sizes = [size_min + int(random_() * span) for _ in range(n_data)]
        self._data = [
            block[offset : offset + size]
            for size in sizes
            for offset in (int(random_() * (len(block) - size + 1)),)
        ]
        # k * n_data + 1 is coprime with n_data; at least every key appears in the table.
        n_keys = n_data * math.ceil(max(_MIN_KEY_SEQUENCE, keys) / n_data) + 1
        self._key_seq = rng.choices(self._keys, k=n_keys)
        self._data_pos = 0
        self._key_pos = 0

    @property
    def keys(self) -> list[str]:
        """The distinct partition keys in use."""
        return list(self._keys)

    def take(self, n: int) -> tuple[list[bytes], list[str], list[int]]:
        """The next ``n`` records as parallel lists: payloads, keys and payload sizes."""
        start = self._data_pos
        datas = _cycle(self._data, start, n)
        sizes = _cycle(self._sizes, start, n)
        self._data_pos = (start + n) % len(self._data)
        keys = _cycle(self._key_seq, self._key_pos, n)
        self._key_pos = (self._key_pos + n) % len(self._key_seq)
        return datas, keys, sizes

    def next(self) -> tuple[bytes, str]:
        """One record: ``(data, partition_key)`` (the same sequence :meth:`take` walks)."""
        datas, keys, _ = self.take(1)
        return datas[0], keys[0]


_T = TypeVar("_T")


def _cycle(table: list[_T], start: int, n: int) -> list[_T]:
    """``n`` items of ``table`` from ``start``, wrapping around (slices, no item loop)."""
    end = start + n
    if end <= len(table):
        return table[start:end]
    out = table[start:]
    n -= len(out)
    while n > 0:
        out += table[:n]
        n -= len(table)
    return out


@dataclass(slots=True)
class Interval:
    """What was acknowledged during one timeline interval."""

    start: float  #: seconds since the run started
    records: int = 0
    bytes: int = 0
    failed: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Figures for one refresh of the live view."""

    elapsed_s: float
    records_sent: int
    records_acked: int
    records_failed: int
    in_flight: int
    records_per_s: float  #: over the last refresh window
    bytes_per_s: float  #: over the last refresh window
    retries: int
    throttles: int
    p50_ms: float
    p99_ms: float
    errors_by_code: dict[str, int]


class LoadStats:
    """Everything ``kpl load`` counts, fed with outcomes and ``now``.

    ``start`` is the moment of the first put; timeline intervals are ``interval_s`` wide
    (doubled whenever there would be more than ``max_intervals``). Each acknowledged
    record costs one histogram insertion, into its interval; the whole run's and the live
    view's percentiles are merges of intervals.
    """

    def __init__(self, start: float, *, interval_s: float = 1.0, max_intervals: int = 1800) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if max_intervals < 2:
            raise ValueError("max_intervals must be at least 2")
        self.start = start
        self.interval_s = interval_s
        self.max_intervals = max_intervals
        self.records_sent = 0
        self.bytes_sent = 0
        self.records_acked = 0
        self.bytes_acked = 0
        self.records_failed = 0
        self.retries = 0
        self.throttles = 0
        #: error codes of every failed attempt, retried or not
        self.errors_by_code: dict[str, int] = {}
        #: error codes of records that finally failed
        self.failures_by_code: dict[str, int] = {}
        self.timeline: list[Interval] = []
        self.last_outcome: float | None = None
        #: Latencies are measured for one record in this many (1: all of them).
        self.latency_every = 1
        #: Latencies measured (each weighted by the stride it was sampled at).
        self.latency_samples = 0
        # The interval outcomes go to until `_current_end` (a cache of _interval()).
        self._current: Interval | None = None
        self._current_end = start
        self._window_start = start
        self._window_acked = 0
        self._window_bytes = 0
        self._last_rates = (0.0, 0.0)

    def _interval(self, now: float) -> Interval:
        current = self._current
        if current is not None and self._current_end - self.interval_s <= now < self._current_end:
            return current
        index = max(0, int((now - self.start) / self.interval_s))
        while index >= self.max_intervals:
            # Long runs: halve the resolution rather than grow without bound.
            self._coarsen()
            index = max(0, int((now - self.start) / self.interval_s))
        timeline = self.timeline
        while len(timeline) <= index:
            timeline.append(Interval(start=len(timeline) * self.interval_s))
        current = timeline[index]
        if index == len(timeline) - 1:
            self._current = current
            self._current_end = self.start + (index + 1) * self.interval_s
        return current

    def _coarsen(self) -> None:
        merged: list[Interval] = []
        self.interval_s *= 2
        for i in range(0, len(self.timeline), 2):
            first = self.timeline[i]
            pair = Interval(
                start=first.start,
                records=first.records,
                bytes=first.bytes,
                failed=first.failed,
                latency=first.latency,
            )
            if i + 1 < len(self.timeline):
                second = self.timeline[i + 1]
                pair.records += second.records
                pair.bytes += second.bytes
                pair.failed += second.failed
                pair.latency.merge(second.latency)
            merged.append(pair)
        self.timeline = merged
        self._current = None

    def on_sent(self, size: int) -> None:
        """A record was handed to the producer."""
        self.records_sent += 1
        self.bytes_sent += size

    def on_sent_many(self, count: int, size: int) -> None:
        """``count`` records of ``size`` bytes in all were handed to the producer."""
        self.records_sent += count
        self.bytes_sent += size

    def on_acked_many(self, count: int, size: int, retries: int, now: float) -> None:
        """``count`` records of ``size`` bytes in all were acknowledged by ``now``, after
        ``retries`` retried attempts between them (their codes go to :meth:`on_attempts`).
        Their latencies, measured or sampled, go to :meth:`on_latency`."""
        self.records_acked += count
        self.bytes_acked += size
        self.retries += retries
        interval = self._interval(now)
        interval.records += count
        interval.bytes += size
        if self.last_outcome is None or now > self.last_outcome:
            self.last_outcome = now

    def on_attempts(self, attempt_codes: Sequence[str | None]) -> None:
        """Count the failed attempts among ``attempt_codes`` by code (retries are counted
        by :meth:`on_acked_many`)."""
        self._count_attempts(attempt_codes)

    def on_latency(self, latency_s: float, now: float, weight: int = 1) -> None:
        """One measured put -> acknowledged latency of a record acknowledged at ``now``,
        sampled as one record in ``weight`` (its weight in the percentiles, so that a
        stride that changed during the run leaves them unbiased)."""
        self._interval(now).latency.add(latency_s, weight)
        self.latency_samples += 1

    def _count_attempts(self, attempt_codes: Sequence[str | None]) -> None:
        for code in attempt_codes:
            if code is None:
                continue
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
            if code == THROTTLE_CODE:
                self.throttles += 1

    def on_acked(
        self, size: int, latency_s: float, attempt_codes: Sequence[str | None], now: float
    ) -> None:
        """A record was acknowledged; ``attempt_codes`` has one entry per attempt
        (``None`` for the successful one)."""
        self.records_acked += 1
        self.bytes_acked += size
        if len(attempt_codes) > 1:
            self.retries += len(attempt_codes) - 1
            self._count_attempts(attempt_codes)
        interval = self._interval(now)
        interval.records += 1
        interval.bytes += size
        interval.latency.add(latency_s)
        self.last_outcome = now

    def on_failed(self, code: str, attempt_codes: Sequence[str | None], now: float) -> None:
        """A record finally failed with ``code``."""
        self.records_failed += 1
        self.retries += max(0, len(attempt_codes) - 1)
        self._count_attempts(attempt_codes)
        self.failures_by_code[code] = self.failures_by_code.get(code, 0) + 1
        self._interval(now).failed += 1
        self.last_outcome = now

    @property
    def in_flight(self) -> int:
        """Records put whose outcome is not known yet."""
        return self.records_sent - self.records_acked - self.records_failed

    @property
    def latency(self) -> LatencyHistogram:
        """The whole run's latencies (a merge of every interval)."""
        total = LatencyHistogram()
        for interval in self.timeline:
            total.merge(interval.latency)
        return total

    def _recent_latency(self, since: float, now: float) -> LatencyHistogram:
        """Latencies of the intervals overlapping ``[since, now]``, else of the last
        interval that has any."""
        first = max(0, int((since - self.start) / self.interval_s))
        last = int((now - self.start) / self.interval_s)
        recent = LatencyHistogram()
        for interval in self.timeline[first : last + 1]:
            recent.merge(interval.latency)
        if recent.count == 0:
            for interval in reversed(self.timeline):
                if interval.latency.count:
                    return interval.latency
        return recent

    def snapshot(self, now: float, *, final: bool = False) -> Snapshot:
        """Figures for the live view: rates over the time since the previous snapshot,
        percentiles over the latest interval(s).

        ``final``: the run is over, so the rates are the whole run's averages (the time
        since the previous snapshot may be a sliver, whose rate means nothing)."""
        span = now - self._window_start
        if final:
            whole = max(1e-9, (self.last_outcome or now) - self.start)
            self._last_rates = (self.records_acked / whole, self.bytes_acked / whole)
        elif span > 0:
            self._last_rates = (
                (self.records_acked - self._window_acked) / span,
                (self.bytes_acked - self._window_bytes) / span,
            )
        recent = self._recent_latency(self._window_start, now)
        snap = Snapshot(
            elapsed_s=max(0.0, now - self.start),
            records_sent=self.records_sent,
            records_acked=self.records_acked,
            records_failed=self.records_failed,
            in_flight=self.in_flight,
            records_per_s=self._last_rates[0],
            bytes_per_s=self._last_rates[1],
            retries=self.retries,
            throttles=self.throttles,
            p50_ms=recent.percentile(50) * 1000,
            p99_ms=recent.percentile(99) * 1000,
            errors_by_code=dict(self.errors_by_code),
        )
        self._window_start = now
        self._window_acked = self.records_acked
        self._window_bytes = self.bytes_acked
        return snap


def stream_capacity(
    shards: int, scale: float | None = 1.0, *, enforced: bool | None = True
) -> dict[str, Any]:
    """What ``shards`` open shards take in writes: the service's per-shard limits (1,000
    records/s and 1 MiB/s, counted in Kinesis records: an aggregated record holds many
    user records) times ``scale``. ``scale=None``: the endpoint enforces no limits.
    ``enforced``: whether the endpoint is known to enforce them (``None``: unknown)."""
    if scale is None:
        return {"shards": shards, "enforced": False}
    return {
        "shards": shards,
        "enforced": enforced,
        "kinesis_records_per_s": round(shards * SHARD_WRITE_RECORDS_PER_SECOND * scale, 3),
        "bytes_per_s": round(shards * SHARD_WRITE_BYTES_PER_SECOND * scale, 3),
    }


def sample_every(records_per_s: float) -> int:
    """The latency sampling stride at ``records_per_s``: every record up to
    :data:`LATENCY_SAMPLES_PER_S` a second, else one in ``k``, keeping at least that many
    a second."""
    return max(1, int(records_per_s // LATENCY_SAMPLES_PER_S))


def merge_stats(parts: Sequence[LoadStats]) -> LoadStats:
    """One run's stats from those of several processes that ran it side by side.

    Their ``start`` values must share a clock (``time.monotonic`` is system-wide); each
    timeline interval lands in the merged one its start falls in, at the coarsest
    interval width of the parts.
    """
    if not parts:
        raise ValueError("nothing to merge")
    start = min(p.start for p in parts)
    width = max(p.interval_s for p in parts)
    merged = LoadStats(start, interval_s=width, max_intervals=max(p.max_intervals for p in parts))
    for part in parts:
        merged.records_sent += part.records_sent
        merged.bytes_sent += part.bytes_sent
        merged.records_acked += part.records_acked
        merged.bytes_acked += part.bytes_acked
        merged.records_failed += part.records_failed
        merged.retries += part.retries
        merged.throttles += part.throttles
        merged.latency_every = max(merged.latency_every, part.latency_every)
        merged.latency_samples += part.latency_samples
        for target, source in (
            (merged.errors_by_code, part.errors_by_code),
            (merged.failures_by_code, part.failures_by_code),
        ):
            for code, n in source.items():
                target[code] = target.get(code, 0) + n
        if part.last_outcome is not None and (
            merged.last_outcome is None or part.last_outcome > merged.last_outcome
        ):
            merged.last_outcome = part.last_outcome
        for iv in part.timeline:
            # The middle of the part's interval decides where it lands.
            index = max(0, int((part.start + iv.start + part.interval_s / 2 - start) / width))
            while len(merged.timeline) <= index:
                merged.timeline.append(Interval(start=len(merged.timeline) * width))
            target_iv = merged.timeline[index]
            target_iv.records += iv.records
            target_iv.bytes += iv.bytes
            target_iv.failed += iv.failed
            target_iv.latency.merge(iv.latency)
    return merged


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def latency_figures(hist: LatencyHistogram) -> dict[str, float]:
    """p50, p90, p99, max and mean of ``hist`` in milliseconds."""
    return {
        "p50": _ms(hist.percentile(50)),
        "p90": _ms(hist.percentile(90)),
        "p99": _ms(hist.percentile(99)),
        "max": _ms(hist.maximum),
        "mean": _ms(hist.mean),
    }


def summarize(
    stats: LoadStats,
    *,
    end: float,
    kinesis_records: int,
    put_records_calls: int,
    settings: Mapping[str, Any],
    interrupted: bool = False,
    process_cpu_s: float | None = None,
    generator_cpu_s: float | None = None,
) -> dict[str, Any]:
    """The run's summary: the JSON object of ``kpl load --json``.

    ``duration_s`` runs from the first put to ``end`` (every outcome known, or the run
    given up); rates are acknowledged records and bytes over it. ``latency_sample`` says
    how many records the percentiles come from: every acknowledged one, or a uniform
    sample of one in ``every``. ``process_cpu_s`` is the CPU time of the process(es)
    over the run (the embedded server's included), ``generator_cpu_s`` the part of it
    that the load generator itself spent (pacing, records, bookkeeping, the view).
    """
    duration = max(end - stats.start, 1e-9)
    lat = stats.latency
    every = stats.latency_every
    return {
        "records_sent": stats.records_sent,
        "records_acked": stats.records_acked,
        "records_failed": stats.records_failed,
        "records_unresolved": stats.in_flight,
        "bytes_acked": stats.bytes_acked,
        "duration_s": round(duration, 3),
        "records_per_s": round(stats.records_acked / duration, 1),
        "bytes_per_s": round(stats.bytes_acked / duration, 1),
        "latency_ms": latency_figures(lat),
        "latency_sample": {
            "kind": "all records" if every == 1 else "uniform sample",
            "every": every,
            "records": stats.latency_samples,
        },
        "retries": stats.retries,
        "throttles": stats.throttles,
        "errors_by_code": dict(sorted(stats.errors_by_code.items())),
        "failures_by_code": dict(sorted(stats.failures_by_code.items())),
        "kinesis_records": kinesis_records,
        "put_records_calls": put_records_calls,
        "interrupted": interrupted,
        "process_cpu_s": None if process_cpu_s is None else round(process_cpu_s, 3),
        "generator_cpu_s": None if generator_cpu_s is None else round(generator_cpu_s, 3),
        "settings": dict(settings),
    }


def timeline_rows(stats: LoadStats, end: float | None = None) -> list[dict[str, float]]:
    """The per-interval timeline as plain rows (for reports): the interval's middle in
    seconds since start, records/s, MB/s, p50/p99 latency in ms, failures/s.

    The last interval is cut at ``end`` (the run's end), so its rates are not diluted by
    the part of it that never happened; a last sliver shorter than half an interval is
    folded into the one before, so its few records do not read as a spike.
    """
    spans: list[tuple[float, float, Interval]] = []
    for iv in stats.timeline:
        width = stats.interval_s
        if end is not None:
            width = max(1e-9, min(width, end - stats.start - iv.start))
        spans.append((iv.start, width, iv))
    if len(spans) >= 2 and spans[-1][1] < stats.interval_s / 2:
        start, width, prev = spans[-2]
        _, tail_width, tail = spans.pop()
        merged = Interval(
            start=start,
            records=prev.records + tail.records,
            bytes=prev.bytes + tail.bytes,
            failed=prev.failed + tail.failed,
        )
        merged.latency.merge(prev.latency)
        merged.latency.merge(tail.latency)
        spans[-1] = (start, width + tail_width, merged)
    return [
        {
            "t_s": start + width / 2,
            "records_per_s": iv.records / width,
            "mb_per_s": iv.bytes / width / 1e6,
            "p50_ms": iv.latency.percentile(50) * 1000,
            "p99_ms": iv.latency.percentile(99) * 1000,
            "failed_per_s": iv.failed / width,
        }
        for start, width, iv in spans
    ]
