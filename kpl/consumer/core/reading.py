"""Reading one shard, sans IO: when to call GetRecords, where to start, what to deliver.

Theory of operation:

- **Pacing** (:class:`ReadPacer`). A shard serves at most 5 GetRecords calls and 2 MiB
  a second to all the readers of an application; only the worker holding the shard's
  lease reads it, so pacing the one reader keeps the application within the limit. Calls
  are spaced by at least 1/5 s from the previous call's start. Bytes go through a bucket
  of one second's worth, refilled at 2 MiB/s; an answer may take it below zero (one call
  can return up to 10 MiB) and the next call then waits until the debt is paid.
  Within those limits a reader that is behind (``MillisBehindLatest`` > 0) reads again at
  once; one that is caught up waits ``idle_time_between_reads``. A throttle or a failed
  call backs off exponentially with jitter (the random source is injected), and the
  first good answer ends the back-off.
- **Positions** (:func:`starting_position`, :class:`ShardCursor`). A lease's checkpoint
  is where its shard resumes: a sentinel (TRIM_HORIZON, LATEST, AT_TIMESTAMP) is an
  iterator type; a sequence number resumes AT_SEQUENCE_NUMBER of that Kinesis record,
  whose sub-records at or below the checkpoint's sub-sequence number were processed and
  are skipped, so a restart neither repeats nor loses part of an aggregate. SHARD_END
  means there is nothing left to read. After the first answer, a reader whose iterator
  expired resumes AFTER_SEQUENCE_NUMBER of the last Kinesis record it received (every
  user record of a received Kinesis record is handed on together).
- **Delivery** (:meth:`ShardCursor.take`). Kinesis records become user records
  (KPL aggregates taken apart) tagged with their shard and arrival time. A sub-record of
  an aggregate whose hash key lies outside the shard it was read from is dropped: a
  producer that aggregated against an outdated shard map sends it again to the right
  shard. So is one whose explicit hash key is not valid (it belongs to no shard).
  Sub-records keep their index in the aggregate as sub-sequence number, so checkpoints
  stay exact whether or not some were dropped. Data that starts like an aggregate but
  fails its checksum, does not parse, has a key that is not UTF-8, or points outside its
  key tables is a plain record, as the format says (and is counted in
  ``malformed_aggregates``).
- **Wire format** (:attr:`ShardCursor.wants_cbor`, :meth:`ShardCursor.limit`).
  GetRecords answers come in CBOR, with the records' data as raw bytes, or JSON, with
  it in base64. Decoding base64 costs per byte, CBOR's maps per record: CBOR is asked
  for while the last answer's records averaged at least :data:`CBOR_FROM_RECORD_SIZE`
  bytes (KPL aggregates are tens of kilobytes), JSON otherwise. Until a reader has seen
  a record it asks in CBOR for at most :data:`PROBE_RECORDS`: a backlog of aggregates
  (where the format matters most) fills an answer's 10 MB with far fewer, and a
  backlog of small records costs one short answer in the slower format before JSON.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import md5
from typing import Any, Final

from google.protobuf.message import DecodeError

from kpl.consumer.core.lineage import ShardInfo
from kpl.consumer.records import AggregateRun, UserRecord, UserRecords, built_user_record
from kpl.protocol.aggregation import DIGEST_SIZE, MAGIC, AggregatedRecordMessage
from kpl.protocol.hashing import MAX_HASH_KEY, parse_explicit_hash_key, partition_key_hash
from kpl.protocol.limits import SHARD_READ_BYTES_PER_SECOND, SHARD_READ_CALLS_PER_SECOND

__all__ = [
    "AFTER_SEQUENCE_NUMBER",
    "AT_SEQUENCE_NUMBER",
    "CBOR_FROM_RECORD_SIZE",
    "PROBE_RECORDS",
    "ReadPacer",
    "ShardCursor",
    "StartingPosition",
    "starting_position",
]

AT_SEQUENCE_NUMBER: Final = "AT_SEQUENCE_NUMBER"
AFTER_SEQUENCE_NUMBER: Final = "AFTER_SEQUENCE_NUMBER"
_SENTINELS: Final = frozenset({"TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"})
_SHARD_END: Final = "SHARD_END"
_MIN_AGGREGATE: Final = len(MAGIC) + DIGEST_SIZE + 1
#: The mean record size (bytes of data) from which the next GetRecords asks for CBOR.
CBOR_FROM_RECORD_SIZE: Final = 1024
#: GetRecords' limit until a reader has seen how large its shard's records are.
PROBE_RECORDS: Final = 1000


#: Partition keys whose place (in this shard or not) a shard reader remembers: a
#: stream's keys repeat, and each is otherwise an MD5 and a comparison of 128-bit numbers.
_HASH_CACHE_SIZE: Final = 100_000


@dataclass(frozen=True, slots=True)
class StartingPosition:
    """Where to take a shard iterator (GetShardIterator's arguments)."""

    iterator_type: str
    sequence_number: str | None = None
    #: For AT_TIMESTAMP: epoch seconds.
    timestamp: float | None = None
    #: Sub-records of the record at ``sequence_number`` up to this index are skipped.
    skip_through: int | None = None


def starting_position(
    checkpoint: str, sub_sequence_number: int = 0, *, timestamp: float | None = None
) -> StartingPosition | None:
    """Where a shard resumes from its lease's checkpoint; ``None`` at SHARD_END."""
    if checkpoint == _SHARD_END:
        return None
    if checkpoint in _SENTINELS:
        if checkpoint == "AT_TIMESTAMP" and timestamp is None:
            raise ValueError("an AT_TIMESTAMP checkpoint needs a timestamp")
        return StartingPosition(
            checkpoint, timestamp=timestamp if checkpoint == "AT_TIMESTAMP" else None
        )
    if not checkpoint.isdigit():
        raise ValueError(f"not a checkpoint: {checkpoint!r}")
    return StartingPosition(AT_SEQUENCE_NUMBER, checkpoint, skip_through=sub_sequence_number)


class ReadPacer:
    """When one shard's reader may call GetRecords next (times on the caller's clock)."""

    def __init__(
        self,
        *,
        idle_time_between_reads: float,
        calls_per_second: float = SHARD_READ_CALLS_PER_SECOND,
        bytes_per_second: float = SHARD_READ_BYTES_PER_SECOND,
        backoff_base: float = 0.25,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if idle_time_between_reads < 0:
            raise ValueError("idle_time_between_reads must be >= 0")
        self.idle_time_between_reads = idle_time_between_reads
        self._spacing = 1.0 / calls_per_second
        self._byte_rate = float(bytes_per_second)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()
        self._last_call: float | None = None
        self._bytes = self._byte_rate  # a full second's worth to start with
        self._bytes_at: float | None = None
        self._failures = 0
        self._next = float("-inf")

    @property
    def next_read_at(self) -> float:
        """The earliest time of the next call."""
        return self._next

    def delay(self, now: float) -> float:
        """Seconds to wait before the next call (0 when it may go now)."""
        return max(0.0, self._next - now)

    def on_call(self, now: float) -> None:
        """A call starts now."""
        self._last_call = now
        self._refill(now)

    def on_answer(self, now: float, *, byte_count: int, millis_behind_latest: int) -> float:
        """An answer of ``byte_count`` bytes came; returns the time of the next call."""
        self._failures = 0
        self._refill(now)
        self._bytes -= byte_count
        wait = 0.0 if millis_behind_latest > 0 else self.idle_time_between_reads
        self._next = max(now + wait, self._limits_allow(now))
        return self._next

    def on_throttled(self, now: float) -> float:
        """The call was throttled (ProvisionedThroughputExceeded); returns the next call's time."""
        return self._back_off(now)

    def on_failure(self, now: float) -> float:
        """The call failed in a way a retry may fix; returns the next call's time."""
        return self._back_off(now)

    def _back_off(self, now: float) -> float:
        self._failures += 1
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (self._failures - 1))
        # Full jitter over the upper half: readers throttled together spread out.
        self._next = max(now + ceiling * self._rng.uniform(0.5, 1.0), self._limits_allow(now))
        return self._next

    def _refill(self, now: float) -> None:
        if self._bytes_at is not None:
            elapsed = max(0.0, now - self._bytes_at)
            self._bytes = min(self._byte_rate, self._bytes + elapsed * self._byte_rate)
        self._bytes_at = now

    def _limits_allow(self, now: float) -> float:
        at = now
        if self._last_call is not None:
            at = max(at, self._last_call + self._spacing)
        if self._bytes < 0:
            at = max(at, now - self._bytes / self._byte_rate)
        return at


class ShardCursor:
    """One shard's position and the user records of its GetRecords answers."""

    def __init__(self, shard: ShardInfo, start: StartingPosition) -> None:
        self.shard = shard
        self.start = start
        #: The last Kinesis record received (``None`` before the first).
        self.last_sequence_number: str | None = None
        self._skip_at = start.sequence_number if start.skip_through is not None else None
        self._skip_through = start.skip_through if start.skip_through is not None else -1
        self._whole_space = shard.starting_hash_key == 0 and shard.ending_hash_key == MAX_HASH_KEY
        self._key_cache: dict[str, bool] = {}
        #: Kinesis records that carried the aggregate's magic and checksum but not a
        #: well-formed body (each delivered whole, as plain data).
        self.malformed_aggregates = 0
        #: Whether the next GetRecords should ask for CBOR (see the module doc).
        self.wants_cbor = True
        self._sized = False

    def limit(self, max_records: int) -> int:
        """The next GetRecords' ``Limit``: ``max_records``, or fewer until records were
        seen (see the module doc)."""
        return max_records if self._sized else min(max_records, PROBE_RECORDS)

    @property
    def position(self) -> StartingPosition:
        """Where a new iterator must start (after an expired one, or a lost connection)."""
        if self.last_sequence_number is None:
            return self.start
        return StartingPosition(AFTER_SEQUENCE_NUMBER, self.last_sequence_number)

    def take(self, records: Iterable[Mapping[str, Any]]) -> UserRecords:
        """The user records to deliver from GetRecords ``records`` (``Data`` as bytes)."""
        runs: list[UserRecord | AggregateRun] = []
        shard_id = self.shard.shard_id
        count = size = 0
        for record in records:
            sequence_number = str(record["SequenceNumber"])
            data = record["Data"]
            count += 1
            size += len(data)
            arrival = record.get("ApproximateArrivalTimestamp")
            arrival_ts = float(arrival) if arrival is not None else None
            skip_through = -1
            if self._skip_at is not None:
                if sequence_number == self._skip_at:
                    skip_through = self._skip_through
                # Only the checkpointed record itself can be partly done.
                self._skip_at = None
            self.last_sequence_number = sequence_number
            if len(data) >= _MIN_AGGREGATE and data[:4] == MAGIC:
                run = self._aggregate(data, sequence_number, skip_through, arrival_ts)
                if run is not None:
                    if run.data:
                        runs.append(run)
                    continue
            if skip_through < 0:
                runs.append(
                    built_user_record(
                        str(record["PartitionKey"]),
                        data,
                        record.get("ExplicitHashKey"),
                        sequence_number,
                        0,
                        False,
                        shard_id,
                        arrival_ts,
                    )
                )
        if count:
            self.wants_cbor = size >= CBOR_FROM_RECORD_SIZE * count
            self._sized = True
        return UserRecords(shard_id, runs)

    def _aggregate(
        self, data: bytes, sequence_number: str, skip_through: int, arrival_ts: float | None
    ) -> AggregateRun | None:
        """The user records of a KPL aggregated record to deliver, or ``None`` when
        ``data`` is not one (a bad checksum, a body that does not parse, a key that is
        not UTF-8, an index outside its table)."""
        body = data[len(MAGIC) : -DIGEST_SIZE]
        if md5(body).digest() != data[-DIGEST_SIZE:]:
            return None
        message = AggregatedRecordMessage()
        try:
            message.ParseFromString(body)
        except DecodeError:
            self.malformed_aggregates += 1
            return None
        keys: list[str] = list(message.partition_key_table)
        for key in keys:
            if type(key) is not str:  # protobuf hands out a key that is not UTF-8 as bytes
                self.malformed_aggregates += 1
                return None
        explicit: list[str] = list(message.explicit_hash_key_table)
        subs = message.records
        out_keys: list[str] = []
        out_data: list[bytes] = []
        try:
            if explicit or skip_through >= 0:
                return self._aggregate_in_full(
                    keys, explicit, subs, sequence_number, skip_through, arrival_ts
                )
            # The KPL's usual aggregate: no explicit hash keys, nothing to skip. An index
            # outside the key table raises IndexError from the lookups below.
            add_key = out_keys.append
            add_data = out_data.append
            in_range = self._keys_in_range(keys)
            if in_range is None:  # every key of the table belongs here
                for sub in subs:
                    add_key(keys[sub.partition_key_index])
                    add_data(sub.data)
                return AggregateRun(sequence_number, arrival_ts, out_keys, out_data, None, None)
            numbers: list[int] = []
            index = -1
            for sub in subs:
                index += 1
                key_index = sub.partition_key_index
                if in_range[key_index]:
                    add_key(keys[key_index])
                    add_data(sub.data)
                    numbers.append(index)
            return AggregateRun(sequence_number, arrival_ts, out_keys, out_data, numbers, None)
        except IndexError:
            self.malformed_aggregates += 1
            return None

    def _aggregate_in_full(
        self,
        keys: list[str],
        explicit: list[str],
        subs: Any,
        sequence_number: str,
        skip_through: int,
        arrival_ts: float | None,
    ) -> AggregateRun:
        """Any aggregate: explicit hash keys, sub-records skipped after a restart (an index
        outside its table raises IndexError, even in a skipped sub-record)."""
        key_in_range = self._keys_in_range(keys) or [True] * len(keys)
        explicit_in_range = self._explicit_keys_in_range(explicit)
        out_keys: list[str] = []
        out_data: list[bytes] = []
        numbers: list[int] = []
        out_explicit: list[str | None] = []
        for index, sub in enumerate(subs):
            key_index = sub.partition_key_index
            key = keys[key_index]
            ehk: str | None = None
            if explicit and sub.HasField("explicit_hash_key_index"):
                ehk = explicit[sub.explicit_hash_key_index]
                kept = explicit_in_range[sub.explicit_hash_key_index]
            else:
                kept = key_in_range[key_index]
            if index <= skip_through or not kept:
                continue
            out_keys.append(key)
            out_data.append(sub.data)
            numbers.append(index)
            out_explicit.append(ehk)
        return AggregateRun(
            sequence_number,
            arrival_ts,
            out_keys,
            out_data,
            numbers,
            out_explicit if explicit else None,
        )

    def _keys_in_range(self, keys: list[str]) -> list[bool] | None:
        """For each partition key of a key table: whether its hash is in this shard;
        ``None`` when all are."""
        if self._whole_space:
            return None
        cache = self._key_cache
        out: list[bool | None] = list(map(cache.get, keys))
        if None in out:
            low, high = self.shard.starting_hash_key, self.shard.ending_hash_key
            if len(cache) + len(keys) > _HASH_CACHE_SIZE:
                cache.clear()
            for i, kept in enumerate(out):
                if kept is None:
                    key = keys[i]
                    kept = out[i] = cache[key] = low <= partition_key_hash(key) <= high
        if all(out):
            return None
        return out  # type: ignore[return-value]

    def _explicit_keys_in_range(self, explicit: list[str]) -> list[bool]:
        """For each explicit hash key of a table: whether it is valid and in this shard."""
        if self._whole_space:
            return [True] * len(explicit)
        low, high = self.shard.starting_hash_key, self.shard.ending_hash_key
        out: list[bool] = []
        for text in explicit:
            try:
                out.append(low <= parse_explicit_hash_key(text) <= high)
            except ValueError:
                out.append(False)  # belongs to no shard: never delivered
        return out
