"""Records: PutRecord and PutRecords write them, GetShardIterator and GetRecords read them.

Theory of operation
-------------------
Writes: a record goes to the open shard whose hash-key range holds its hash key (MD5 of
the partition key, or the explicit hash key), found by bisecting the stream's sorted range
starts. Each shard hands out sequence numbers in the service's layout, the next sequence
index with the arrival second (``server.core.seqnum``), with a non-decreasing arrival
time, and the records of one call are appended to storage per shard in one batch. Every
whole-request refusal (sizes, DryRun) comes before any entry takes a number; then each
entry passes the throughput gate and fault injection on its own, and a refused entry fails
alone (PutRecords) or fails the call (PutRecord).

PutRecords is the hot path: :meth:`Records.put_records_raw` checks the parsed body's
entries inline and runs the generic validator only when in doubt, so its errors read
exactly as for every other action.

Reads: shard iterators are self-contained signed tokens (``server.core.iterators``), so
reading keeps no per-iterator state. Retention is applied to a shard as it is read, and a
reader at the end of a closed shard gets its ``ChildShards`` instead of a next iterator.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from typing import Any

from kpl.protocol.hashing import EXPLICIT_HASH_KEY_RE, MAX_HASH_KEY, partition_key_hash
from kpl.protocol.limits import (
    GET_RECORDS_MAX_BYTES,
    GET_RECORDS_MAX_LIMIT,
    MAX_PARTITION_KEY_LENGTH,
    MIB,
    PUT_RECORDS_MAX_BYTES,
    PUT_RECORDS_MAX_BYTES_LARGE,
)
from server.core.errors import (
    DryRunOperationException,
    InvalidArgumentException,
    ProvisionedThroughputExceededException,
    ResourceNotFoundException,
    ValidationException,
    for_code,
)
from server.core.hooks import FaultInjector, ThroughputGate
from server.core.iterators import IteratorCodec, IteratorState
from server.core.render import child_shards, ms
from server.core.seqnum import INDEX_UNIT, arrival_part, parse_sequence_number
from server.core.shapes import DATA
from server.core.streams import DATA_STATES, Shard, Stream, StreamTable, resolve_shard_id
from server.core.validation import constraint_error, decode_blob, validate
from server.storage.base import StoredRecord

__all__ = ["Records"]

#: GetShardIterator reads a shard id as the service does: the digits after one dash (or
#: bare digits), so ``shardId-1`` is ``shardId-000000000001``; anything else is unknown.
_STAND_IN_ENTRIES = [{"Data": "", "PartitionKey": "k"}]


def _record_too_large(
    path: str, data: bytes, key_bytes: int, max_size: int
) -> ValidationException:
    """The refusal of a record whose data plus UTF-8 partition key exceed ``max_size``.

    A data blob that alone exceeds the limit gets the service's own words (captured
    from AWS in public bug reports). For data that fits alone but not with its key we
    found no capture of the service's answer (only mocks, which reuse the data-length
    text with the data-only limit), so that message is ours: the same exception and
    shape, naming both sizes and the limit.
    """
    if len(data) > max_size:
        rule = f"Member must have length less than or equal to {max_size}"
    else:
        rule = (
            f"Member's length plus the partition key's UTF-8 length ({len(data)} + "
            f"{key_bytes} = {len(data) + key_bytes} bytes) must be less than or equal "
            f"to {max_size}"
        )
    return constraint_error(path, DATA, data, rule)


class Records:
    """The record actions over the engine's stream table.

    ``throughput`` and ``faults`` are the seams of ``server.core.hooks`` (``None``: not
    consulted); ``iterators`` signs and reads shard iterators.
    """

    def __init__(
        self,
        table: StreamTable,
        rng: random.Random,
        iterators: IteratorCodec,
        *,
        throughput: ThroughputGate | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.table = table
        self.storage = table.storage
        self.rng = rng
        self.iterators = iterators
        self.throughput = throughput
        self.faults = faults
        self._account = table.account

    # -- writes ---------------------------------------------------------------------

    def _explicit_hash_key(self, value: str) -> int:
        number = int(value)
        if number > MAX_HASH_KEY:
            raise InvalidArgumentException(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: "
                f"[0, 2^128-1]. Specified value was {value}"
            )
        return number

    def _throttled(self, stream: Stream, shard: Shard) -> str:
        return (
            f"Rate exceeded for shard {shard.meta.shard_id} in stream {stream.meta.name} "
            f"under account {self._account}."
        )

    def put_record(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """PutRecord: one record, optionally ordered after SequenceNumberForOrdering."""
        data: bytes = request["Data"]
        key: str = request["PartitionKey"]
        explicit = request.get("ExplicitHashKey")
        # A hash key out of range needs no lookup: refused even for a stream that is absent.
        hash_key = (
            self._explicit_hash_key(explicit) if explicit is not None else partition_key_hash(key)
        )
        stream = self.table.data_stream(request, now)
        max_size = stream.meta.max_record_size_kib * 1024
        key_bytes = len(key) if key.isascii() else len(key.encode())
        if len(data) + key_bytes > max_size:
            raise _record_too_large("data", data, key_bytes, max_size)
        shard = stream.route_shards[bisect_right(stream.route_starts, hash_key) - 1]
        size = len(data) + key_bytes
        if request.get("DryRun"):
            raise DryRunOperationException()
        gate = self.throughput
        if gate is not None and not gate.admit_write(
            stream.meta.name, shard.meta.shard_id, 1, size, now
        ):
            raise ProvisionedThroughputExceededException(self._throttled(stream, shard))
        if self.faults is not None:
            code = self.faults.entry_error(self.rng)
            if code is not None:
                raise for_code(code)(
                    self._throttled(stream, shard)
                    if code == ProvisionedThroughputExceededException.code
                    else "Internal service failure."
                )
        ordering = request.get("SequenceNumberForOrdering")
        if ordering is not None:
            parsed = parse_sequence_number(int(ordering))
            if parsed is None:
                raise InvalidArgumentException(
                    f"ExclusiveMinimumSequenceNumber {ordering} used in PutRecord on stream "
                    f"{stream.meta.name} under account {self._account} is invalid."
                )
            shard.order_after(parsed)
        arrival = ms(now)
        seq = shard.next_seq + arrival_part(arrival)
        shard.next_seq += INDEX_UNIT
        shard.last_seq = seq
        if arrival < shard.last_arrival:
            arrival = shard.last_arrival
        shard.last_arrival = arrival
        self.storage.append(stream.meta.name, shard.meta.shard_id, [(seq, arrival, key, data)])
        self.table.shard_changed(stream.meta.name, shard.meta.shard_id)
        answer = {"ShardId": shard.meta.shard_id, "SequenceNumber": str(seq)}
        if stream.meta.encryption_type != "NONE":
            answer["EncryptionType"] = stream.meta.encryption_type
        return answer

    def put_records(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """PutRecords from an already validated request (see :meth:`put_records_raw`)."""
        entries = [
            (e["Data"], e["PartitionKey"], e.get("ExplicitHashKey")) for e in request["Records"]
        ]
        return self._put_entries(request, entries, now)

    def put_records_raw(self, body: Any, now: float) -> dict[str, Any]:
        """PutRecords' hot path: check entries inline, fall back to full validation.

        The inline checks only decide "certainly valid"; on any doubt the generic
        validator runs over the whole body, so errors read exactly as for other actions.
        """
        entries: list[tuple[bytes, str, str | None]] | None = None
        records = body.get("Records") if type(body) is dict else None
        if type(records) is list and 0 < len(records) <= 500:
            entries = []
            append = entries.append
            for entry in records:
                if type(entry) is not dict:
                    entries = None
                    break
                b64 = entry.get("Data")
                key = entry.get("PartitionKey")
                explicit = entry.get("ExplicitHashKey")
                if (
                    type(b64) is not str
                    or type(key) is not str
                    or not 0 < len(key) <= MAX_PARTITION_KEY_LENGTH
                    or (
                        explicit is not None
                        and (
                            type(explicit) is not str
                            or not EXPLICIT_HASH_KEY_RE.fullmatch(explicit)
                        )
                    )
                ):
                    entries = None
                    break
                data = decode_blob(b64)
                if data is None:
                    entries = None
                    break
                append((data, key, explicit))
        if entries is None:
            request = validate("PutRecords", body)
            return self.put_records(request, now)
        # The entries are fine; validate the other members with one stand-in entry.
        rest = {k: v for k, v in body.items() if k != "Records"}
        rest["Records"] = _STAND_IN_ENTRIES
        request = validate("PutRecords", rest)
        return self._put_entries(request, entries, now)

    def _put_entries(
        self,
        request: dict[str, Any],
        entries: list[tuple[bytes, str, str | None]],
        now: float,
    ) -> dict[str, Any]:
        # A hash key out of range needs no lookup: refused even for a stream that is absent.
        for _, _, explicit in entries:
            if explicit is not None and len(explicit) > 38:
                self._explicit_hash_key(explicit)
        stream = self.table.data_stream(request, now)
        meta = stream.meta
        max_size = meta.max_record_size_kib * 1024
        total = 0
        # Every whole-request refusal comes before any entry takes a sequence number.
        for i, (data, key, _) in enumerate(entries, 1):
            size = len(data) + (len(key) if key.isascii() else len(key.encode()))
            if size > max_size:
                raise _record_too_large(
                    f"records.{i}.member.data", data, size - len(data), max_size
                )
            total += size
        request_cap = PUT_RECORDS_MAX_BYTES if max_size <= MIB else PUT_RECORDS_MAX_BYTES_LARGE
        if total > request_cap:
            raise InvalidArgumentException(
                f"Records size exceeds {request_cap // MIB} MB limit"
            )
        if request.get("DryRun"):
            raise DryRunOperationException()
        starts = stream.route_starts
        shards = stream.route_shards
        single = shards[0] if len(shards) == 1 else None
        arrival = ms(now)
        stamp = arrival_part(arrival)
        name = meta.name
        gate = self.throughput
        faults = self.faults
        results: list[dict[str, str]] = []
        batches: dict[Shard, list[StoredRecord]] = {}
        failed = 0
        for data, key, explicit in entries:
            if single is not None and explicit is None:
                shard = single
            else:
                hash_key = (
                    self._explicit_hash_key(explicit)
                    if explicit is not None
                    else partition_key_hash(key)
                )
                shard = shards[bisect_right(starts, hash_key) - 1]
            if gate is not None or faults is not None:
                code = self._entry_fault(gate, faults, name, shard, data, key, now)
                if code is not None:
                    failed += 1
                    message = (
                        self._throttled(stream, shard)
                        if code == "ProvisionedThroughputExceededException"
                        else "Internal service failure."
                    )
                    results.append({"ErrorCode": code, "ErrorMessage": message})
                    continue
            seq = shard.next_seq + stamp
            shard.next_seq += INDEX_UNIT
            batch = batches.get(shard)
            if batch is None:
                batch = batches[shard] = []
            batch.append((seq, arrival, key, data))
            results.append({"SequenceNumber": str(seq), "ShardId": shard.meta.shard_id})
        for shard, batch in batches.items():
            shard.last_seq = batch[-1][0]
            if arrival < shard.last_arrival:
                # Keep arrivals non-decreasing per shard even if the clock stepped back.
                batch = [(s, shard.last_arrival, k, d) for s, _, k, d in batch]
            shard.last_arrival = batch[-1][1]
            self.storage.append(name, shard.meta.shard_id, batch)
            self.table.shard_changed(name, shard.meta.shard_id)
        answer: dict[str, Any] = {"FailedRecordCount": failed, "Records": results}
        if meta.encryption_type != "NONE":
            answer["EncryptionType"] = meta.encryption_type
        return answer

    def _entry_fault(
        self,
        gate: ThroughputGate | None,
        faults: FaultInjector | None,
        stream_name: str,
        shard: Shard,
        data: bytes,
        key: str,
        now: float,
    ) -> str | None:
        """Throughput and fault injection for one PutRecords entry: an error code, or ``None``."""
        if gate is not None and not gate.admit_write(
            stream_name, shard.meta.shard_id, 1, len(data) + len(key.encode()), now
        ):
            return "ProvisionedThroughputExceededException"
        if faults is not None:
            return faults.entry_error(self.rng)
        return None

    # -- reads ----------------------------------------------------------------------

    def _iterator_shard(self, request: dict[str, Any], now: float) -> tuple[Stream, Shard]:
        """GetShardIterator's stream and shard, refused with the service's messages.

        The stream first: a missing one is ``Shard ... does not exist`` (the service words
        it that way here, as kinesalite recorded); then a shard id that cannot name a shard
        is ``Could not find shard``, and a shard the stream lacks ``... does not exist``.
        """
        name = self.table.stream_name(request)
        text: str = request["ShardId"]
        shard_id = resolve_shard_id(text)
        stream = self.table.find(name, now)
        if stream is not None and stream.meta.status in DATA_STATES:
            if shard_id is None:
                raise ResourceNotFoundException(
                    f"Could not find shard {text} in stream {name} under account "
                    f"{self._account}."
                )
            self.table.expire_closed_shards(stream, now)
            shard = stream.shards.get(shard_id)
            if shard is not None:
                return stream, shard
        raise ResourceNotFoundException(
            f"Shard {shard_id or text} in stream {name} under account {self._account} "
            "does not exist"
        )

    def start_position(
        self,
        stream: Stream,
        shard: Shard,
        kind: str,
        seq_text: str | None,
        timestamp: float | None,
        now: float,
        action: str,
    ) -> int:
        """The sequence number a reader starting at ``kind`` reads first.

        Shared by GetShardIterator and SubscribeToShard (``action`` names the call in the
        service's messages); refuses a number of another shard or stream.
        """
        shard_id = shard.meta.shard_id
        name = stream.meta.name
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if seq_text is None:
                raise InvalidArgumentException(
                    "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
                    "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no "
                    f"StartingSequenceNumber. Request specified {kind} and no "
                    "StartingSequenceNumber."
                )
            seq = int(seq_text)
            parsed = parse_sequence_number(seq)
            if parsed is None:
                raise InvalidArgumentException(
                    f"StartingSequenceNumber {seq_text} used in {action} on shard "
                    f"{shard_id} in stream {name} under account {self._account} is invalid."
                )
            if parsed.shard_index != shard.meta.index:
                raise InvalidArgumentException(
                    f"Invalid StartingSequenceNumber. It encodes shardId-{parsed.shard_index:012d}"
                    f", while it was used in a call to a shard with {shard_id}"
                )
            if not shard.owns(parsed):
                raise InvalidArgumentException(
                    f"StartingSequenceNumber {seq_text} used in {action} on shard "
                    f"{shard_id} in stream {name} under account {self._account} is invalid "
                    "because it did not come from this stream."
                )
            position = seq if kind == "AT_SEQUENCE_NUMBER" else seq + 1
        elif seq_text is not None:
            raise InvalidArgumentException(
                "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
                "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no "
                f"StartingSequenceNumber. Request specified {kind} and also a "
                "StartingSequenceNumber."
            )
        elif kind == "TRIM_HORIZON":
            position = shard.base
        elif kind == "LATEST":
            position = shard.next_seq
        else:  # AT_TIMESTAMP
            if timestamp is None:
                raise InvalidArgumentException(
                    "Must specify timestampInMillis parameter for iterator of type "
                    "AT_TIMESTAMP. Current request has no timestamp parameter."
                )
            if timestamp > now:
                raise InvalidArgumentException(
                    "The timestampInMillis parameter cannot be greater than the "
                    f"currentTimestampInMillis. timestampInMillis: {int(timestamp * 1000)}, "
                    f"currentTimestampInMillis: {int(now * 1000)}"
                )
            found = self.storage.sequence_number_at(name, shard_id, timestamp)
            position = shard.next_seq if found is None else found
        if timestamp is not None and kind != "AT_TIMESTAMP":
            raise InvalidArgumentException(
                "Must specify timestampInMillis parameter only for iterator of type "
                f"AT_TIMESTAMP. Current request has timestamp parameter with type {kind}."
            )
        return position

    def get_shard_iterator(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """GetShardIterator: all five iterator types."""
        stream, shard = self._iterator_shard(request, now)
        shard_id = shard.meta.shard_id
        name = stream.meta.name
        self.table.trim(stream, shard, now)
        position = self.start_position(
            stream, shard, request["ShardIteratorType"], request.get("StartingSequenceNumber"),
            request.get("Timestamp"), now, "GetShardIterator",
        )
        if request.get("DryRun"):
            raise DryRunOperationException()
        gate = self.throughput
        if gate is not None and not gate.admit_control(
            "GetShardIterator", f"{name}/{shard_id}", now
        ):
            raise ProvisionedThroughputExceededException(self._throttled(stream, shard))
        token = self.iterators.encode(
            IteratorState(name, shard_id, position, int(now * 1000), stream.created_ms)
        )
        return {"ShardIterator": token}

    def get_records(self, request: dict[str, Any], now: float) -> dict[str, Any]:
        """GetRecords: up to Limit records (10 MiB) from the iterator's position."""
        state = self.iterators.decode(request["ShardIterator"], now)
        stream = self.table.find(state.stream_name, now)
        if stream is not None:
            self.table.expire_closed_shards(stream, now)
        if (
            stream is None
            or stream.created_ms != state.stream_created_ms
            or stream.meta.status not in DATA_STATES
            or state.shard_id not in stream.shards
        ):
            raise ResourceNotFoundException(
                f"Shard {state.shard_id} in stream {state.stream_name} under account "
                f"{self._account} does not exist"
            )
        shard = stream.shards[state.shard_id]
        name = stream.meta.name
        if request.get("DryRun"):
            raise DryRunOperationException()
        gate = self.throughput
        if gate is not None and not gate.admit_read(name, state.shard_id, now):
            raise ProvisionedThroughputExceededException(self._throttled(stream, shard))
        self.table.trim(stream, shard, now)
        limit: int = request.get("Limit", GET_RECORDS_MAX_LIMIT)
        stored = self.storage.read(
            name, state.shard_id, state.position, limit, GET_RECORDS_MAX_BYTES
        )
        records = [
            {
                "SequenceNumber": str(seq),
                "ApproximateArrivalTimestamp": arrival,
                "Data": data,
                "PartitionKey": key,
            }
            for seq, arrival, key, data in stored
        ]
        if gate is not None:
            gate.record_read(
                name, state.shard_id, sum(len(r[3]) + len(r[2]) for r in stored), now
            )
        last = self.storage.last_sequence_number(name, state.shard_id)
        position = stored[-1][0] + 1 if stored else state.position
        caught_up = last is None or position > last
        result: dict[str, Any] = {
            "Records": records,
            "MillisBehindLatest": 0
            if caught_up or not stored
            else max(0, int((now - stored[-1][1]) * 1000)),
        }
        if caught_up and not shard.meta.is_open:
            shards = (s.meta for s in stream.shards.values())
            result["ChildShards"] = child_shards(shards, state.shard_id)
        else:
            result["NextShardIterator"] = self.iterators.encode(
                IteratorState(name, state.shard_id, position, int(now * 1000), stream.created_ms)
            )
        return result
