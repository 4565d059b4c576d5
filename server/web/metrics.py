"""The server's CloudWatch metrics (``AWS/Kinesis``) as Prometheus families on ``/metrics``.

Naming: ``kinesis_`` + the snake_case CloudWatch name (``PutRecords.TotalRecords`` ->
``kinesis_put_records_total_records``), counters end in ``_total``, latencies are
histograms in seconds; stream-level families have the label ``stream_name``, the
SubscribeToShard ones ``consumer_name`` too. Shard-level metrics have their own families,
``kinesis_shard_`` + the name, labelled ``stream_name`` and ``shard_id``, so summing a
family never counts a record twice; like the service, they are kept only for the metrics a
stream enabled (:meth:`ServerMetrics.set_shard_level_metrics`, what
EnableEnhancedMonitoring sets).

What counts (from each call's parsed request and answer, told by the observing
middleware): ``Incoming*`` and ``*.Bytes`` count the data of records accepted (base64
decoded), ``*.Success`` the calls that succeeded; a PutRecords entry failing with
``ProvisionedThroughputExceededException`` is a throttled record and a
``WriteProvisionedThroughputExceeded``, a throttled GetRecords call a
``ReadProvisionedThroughputExceeded``. ``IteratorAgeMilliseconds`` is a gauge: the age
of the last record the latest GetRecords returned (0 when it returned none at the tip).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from kpl.metrics import snake_case
from server.core.actions import Action
from server.core.errors import KinesisError, ProvisionedThroughputExceededException
from server.core.shapes import SHARD_LEVEL_METRIC_NAMES

__all__ = ["CONTENT_TYPE_LATEST", "SHARD_LEVEL_METRICS", "ServerMetrics", "snake_case"]

#: The shard-level metric names EnableEnhancedMonitoring accepts (besides ``ALL``).
SHARD_LEVEL_METRICS: Final = SHARD_LEVEL_METRIC_NAMES

_THROTTLED = ProvisionedThroughputExceededException.code
_SHARD_IN_MESSAGE = re.compile(r"shard (shardId-\d+)")
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)


def _base64_sizes(texts: list[str]) -> int:
    """The decoded size of base64 strings, in C loops (a PutRecords call has 500)."""
    padding = sum(map(str.count, texts, repeat("="), repeat(-2)))
    return sum(map(len, texts)) * 3 // 4 - padding


def _data_size(entry: Any) -> int:
    """The decoded size of a request entry's base64 ``Data`` (0 when malformed)."""
    data = entry.get("Data") if isinstance(entry, dict) else None
    if not isinstance(data, str):
        return 0
    return len(data) * 3 // 4 - (2 if data.endswith("==") else 1 if data.endswith("=") else 0)


class ServerMetrics:
    """The ``AWS/Kinesis`` metrics of one server, in their own registry.

    ``clock`` gives ``now`` (epoch seconds) for iterator ages; ``iterator_shard`` names
    the stream and shard a GetRecords iterator reads (``None`` when it cannot tell).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        iterator_shard: Callable[[str], tuple[str, str] | None],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._iterator_shard = iterator_shard
        self._shard_level: dict[str, frozenset[str]] = {}
        # Per stream: the PutRecords families' children (a labels() lookup costs a lock).
        self._put_records_children: dict[str, tuple[Any, ...]] = {}
        stream = ("stream_name",)
        consumer = ("stream_name", "consumer_name")
        shard = ("stream_name", "shard_id")

        def counter(name: str, text: str, labels: tuple[str, ...] = stream) -> Counter:
            return Counter(f"kinesis_{snake_case(name)}", text, labels, registry=self.registry)

        def latency(name: str, text: str) -> Histogram:
            return Histogram(
                f"kinesis_{snake_case(name)}_seconds", text, stream,
                buckets=_LATENCY_BUCKETS, registry=self.registry,
            )

        def gauge(name: str, text: str, labels: tuple[str, ...] = stream) -> Gauge:
            return Gauge(f"kinesis_{snake_case(name)}", text, labels, registry=self.registry)

        self.incoming_bytes = counter("IncomingBytes", "Bytes put to the stream")
        self.incoming_records = counter("IncomingRecords", "Records put to the stream")
        self.put_record_bytes = counter("PutRecord.Bytes", "Bytes put by PutRecord")
        self.put_record_latency = latency("PutRecord.Latency", "PutRecord latency")
        self.put_record_success = counter("PutRecord.Success", "Successful PutRecord calls")
        self.put_records_bytes = counter("PutRecords.Bytes", "Bytes put by PutRecords")
        self.put_records_latency = latency("PutRecords.Latency", "PutRecords latency")
        self.put_records_success = counter(
            "PutRecords.Success", "PutRecords calls with at least one record put"
        )
        self.put_records_total = counter(
            "PutRecords.TotalRecords", "Records sent in PutRecords calls"
        )
        self.put_records_successful = counter(
            "PutRecords.SuccessfulRecords", "PutRecords records put"
        )
        self.put_records_failed = counter(
            "PutRecords.FailedRecords", "PutRecords records failed by an internal error"
        )
        self.put_records_throttled = counter(
            "PutRecords.ThrottledRecords", "PutRecords records throttled"
        )
        self.get_records_bytes = counter("GetRecords.Bytes", "Bytes returned by GetRecords")
        self.get_records_records = counter(
            "GetRecords.Records", "Records returned by GetRecords"
        )
        self.get_records_latency = latency("GetRecords.Latency", "GetRecords latency")
        self.get_records_success = counter("GetRecords.Success", "Successful GetRecords calls")
        self.get_records_iterator_age = gauge(
            "GetRecords.IteratorAgeMilliseconds",
            "Age of the last record returned by the latest GetRecords call",
        )
        self.write_throttled = counter(
            "WriteProvisionedThroughputExceeded", "Records refused by the shards' write limits"
        )
        self.read_throttled = counter(
            "ReadProvisionedThroughputExceeded", "GetRecords calls refused by read limits"
        )
        self.subscribe_rate_exceeded = counter(
            "SubscribeToShard.RateExceeded", "SubscribeToShard calls over the rate", consumer
        )
        self.subscribe_success = counter(
            "SubscribeToShard.Success", "Successful SubscribeToShard calls", consumer
        )
        self.subscribe_event_bytes = counter(
            "SubscribeToShardEvent.Bytes", "Bytes sent in subscription events", consumer
        )
        self.subscribe_event_records = counter(
            "SubscribeToShardEvent.Records", "Records sent in subscription events", consumer
        )
        self.subscribe_event_success = counter(
            "SubscribeToShardEvent.Success", "Subscription events sent", consumer
        )
        self.subscribe_millis_behind = gauge(
            "SubscribeToShardEvent.MillisBehindLatest",
            "MillisBehindLatest of the latest subscription event", consumer,
        )
        self.shard = {
            name: (
                Gauge(f"kinesis_shard_{snake_case(name)}", f"Shard-level {name}", shard,
                      registry=self.registry)
                if name == "IteratorAgeMilliseconds"
                else Counter(f"kinesis_shard_{snake_case(name)}", f"Shard-level {name}", shard,
                             registry=self.registry)
            )
            for name in SHARD_LEVEL_METRICS
        }

    # -- enhanced monitoring ------------------------------------------------------------

    def set_shard_level_metrics(self, stream_name: str, metrics: Iterable[str]) -> None:
        """Keep exactly ``metrics`` (names of :data:`SHARD_LEVEL_METRICS`, or ``ALL``)
        per shard for ``stream_name``; an empty set stops them and drops their series."""
        names = set(metrics)
        if "ALL" in names:
            names = set(SHARD_LEVEL_METRICS)
        unknown = names - set(SHARD_LEVEL_METRICS)
        if unknown:
            raise ValueError(f"unknown shard-level metric {sorted(unknown)[0]!r}")
        old = self._shard_level.get(stream_name, frozenset())
        for name in old - names:
            self._drop_series(self.shard[name], stream_name)
        if names:
            self._shard_level[stream_name] = frozenset(names)
        else:
            self._shard_level.pop(stream_name, None)

    def shard_level_metrics(self, stream_name: str) -> frozenset[str]:
        """The shard-level metrics enabled for ``stream_name``."""
        return self._shard_level.get(stream_name, frozenset())

    @staticmethod
    def _drop_series(family: Counter | Gauge, stream_name: str) -> None:
        shard_ids = {
            sample.labels["shard_id"]
            for metric in family.collect()
            for sample in metric.samples
            if sample.labels.get("stream_name") == stream_name and "shard_id" in sample.labels
        }
        for shard_id in shard_ids:
            family.remove(stream_name, shard_id)

    def _shard_inc(self, stream: str, shard_id: str, name: str, amount: float) -> None:
        if name in self._shard_level.get(stream, ()):
            family = self.shard[name]
            if isinstance(family, Gauge):
                family.labels(stream, shard_id).set(amount)
            else:
                family.labels(stream, shard_id).inc(amount)

    # -- one call ---------------------------------------------------------------------

    def observe_call(
        self,
        action: Action,
        request: Any,
        answer: Any,
        error: KinesisError | None,
        latency_seconds: float,
    ) -> None:
        """Count one answered call (the observing middleware's hook)."""
        if not isinstance(request, dict):
            return
        name = action.name
        if name == "PutRecords":
            self._put_records(request, answer, error, latency_seconds)
        elif name == "PutRecord":
            self._put_record(request, answer, error, latency_seconds)
        elif name == "GetRecords":
            self._get_records(request, answer, error, latency_seconds)
        elif name == "SubscribeToShard":
            self._subscribe(request, error)
        elif error is not None:
            return
        elif name in ("EnableEnhancedMonitoring", "DisableEnhancedMonitoring"):
            # The answer names the stream and its metrics after the change.
            self.set_shard_level_metrics(answer["StreamName"], answer["DesiredShardLevelMetrics"])
        elif name == "DeleteStream":
            stream = self._stream(request)
            if stream is not None:  # a stream of that name starts with none enabled
                self.set_shard_level_metrics(stream, ())

    @staticmethod
    def _stream(request: dict[str, Any]) -> str | None:
        stream = request.get("StreamName")
        if isinstance(stream, str):
            return stream
        arn = request.get("StreamARN") or request.get("ConsumerARN")
        if isinstance(arn, str) and ":stream/" in arn:
            return arn.partition(":stream/")[2].partition("/")[0]
        return None

    def _put_record(
        self, request: dict[str, Any], answer: Any, error: KinesisError | None, latency: float
    ) -> None:
        stream = self._stream(request)
        if stream is None:
            return
        self.put_record_latency.labels(stream).observe(latency)
        if error is not None:
            if error.error_code == _THROTTLED:
                self.write_throttled.labels(stream).inc()
                found = _SHARD_IN_MESSAGE.search(error.message)
                if found:
                    self._shard_inc(stream, found[1], "WriteProvisionedThroughputExceeded", 1)
            return
        size = _data_size(request)
        self.put_record_success.labels(stream).inc()
        self.put_record_bytes.labels(stream).inc(size)
        self.incoming_bytes.labels(stream).inc(size)
        self.incoming_records.labels(stream).inc()
        shard_id = answer.get("ShardId") if isinstance(answer, dict) else None
        if isinstance(shard_id, str):
            self._shard_inc(stream, shard_id, "IncomingBytes", size)
            self._shard_inc(stream, shard_id, "IncomingRecords", 1)

    def _put_records(
        self, request: dict[str, Any], answer: Any, error: KinesisError | None, latency: float
    ) -> None:
        stream = self._stream(request)
        entries = request.get("Records")
        if stream is None or not isinstance(entries, list):
            return
        children = self._put_records_children.get(stream)
        if children is None:
            children = self._put_records_children[stream] = tuple(
                family.labels(stream)
                for family in (
                    self.put_records_latency, self.put_records_total,
                    self.put_records_successful, self.put_records_failed,
                    self.put_records_throttled, self.write_throttled, self.put_records_bytes,
                    self.incoming_bytes, self.incoming_records, self.put_records_success,
                )
            )
        (latency_child, total, successful, failed_c, throttled_c, write_throttled, bytes_c,
         incoming_bytes, incoming_records, success) = children
        latency_child.observe(latency)
        results = answer.get("Records") if isinstance(answer, dict) else None
        if error is not None or not isinstance(results, list):
            return
        if not answer.get("FailedRecordCount") and not self._shard_level.get(stream):
            # Every entry was put (and so was valid): its Data is a base64 string.
            put, failed, throttled = len(results), 0, 0
            size = _base64_sizes([entry["Data"] for entry in entries])
        else:
            put, size, throttled, failed = self._put_records_entries(stream, entries, results)
        total.inc(len(results))
        successful.inc(put)
        failed_c.inc(failed)
        throttled_c.inc(throttled)
        write_throttled.inc(throttled)
        bytes_c.inc(size)
        incoming_bytes.inc(size)
        incoming_records.inc(put)
        if put:
            success.inc()

    def _put_records_entries(
        self, stream: str, entries: list[Any], results: list[Any]
    ) -> tuple[int, int, int, int]:
        """Records put, their bytes, records throttled and records failed otherwise,
        entry by entry (counting shard-level metrics where enabled)."""
        put = size = throttled = failed = 0
        for entry, result in zip(entries, results, strict=False):
            code = result.get("ErrorCode")
            if code is None:
                put += 1
                entry_size = _data_size(entry)
                size += entry_size
                self._shard_inc(stream, result["ShardId"], "IncomingBytes", entry_size)
                self._shard_inc(stream, result["ShardId"], "IncomingRecords", 1)
            elif code == _THROTTLED:
                throttled += 1
                found = _SHARD_IN_MESSAGE.search(result.get("ErrorMessage", ""))
                if found:
                    self._shard_inc(stream, found[1], "WriteProvisionedThroughputExceeded", 1)
            else:
                failed += 1
        return put, size, throttled, failed

    def _get_records(
        self, request: dict[str, Any], answer: Any, error: KinesisError | None, latency: float
    ) -> None:
        token = request.get("ShardIterator")
        where = self._iterator_shard(token) if isinstance(token, str) else None
        if where is None:
            return
        stream, shard_id = where
        self.get_records_latency.labels(stream).observe(latency)
        if error is not None:
            if error.error_code == _THROTTLED:
                self.read_throttled.labels(stream).inc()
                self._shard_inc(stream, shard_id, "ReadProvisionedThroughputExceeded", 1)
            return
        records = answer.get("Records", []) if isinstance(answer, dict) else []
        size = sum(len(record["Data"]) for record in records)
        age = (
            max(0.0, (self._clock() - records[-1]["ApproximateArrivalTimestamp"]) * 1000.0)
            if records
            else float(answer.get("MillisBehindLatest", 0)) if isinstance(answer, dict) else 0.0
        )
        self.get_records_success.labels(stream).inc()
        self.get_records_bytes.labels(stream).inc(size)
        self.get_records_records.labels(stream).inc(len(records))
        self.get_records_iterator_age.labels(stream).set(age)
        self._shard_inc(stream, shard_id, "OutgoingBytes", size)
        self._shard_inc(stream, shard_id, "OutgoingRecords", len(records))
        self._shard_inc(stream, shard_id, "IteratorAgeMilliseconds", age)

    def _subscribe(self, request: dict[str, Any], error: KinesisError | None) -> None:
        arn = request.get("ConsumerARN")
        stream = self._stream(request)
        if stream is None or not isinstance(arn, str):
            return
        consumer = arn.rpartition("/consumer/")[2].partition(":")[0]
        if error is None:
            self.subscribe_success.labels(stream, consumer).inc()
        elif error.error_code in ("LimitExceededException", _THROTTLED):
            self.subscribe_rate_exceeded.labels(stream, consumer).inc()

    def observe_subscription_event(
        self, consumer_arn: str, records: list[dict[str, Any]], millis_behind_latest: int
    ) -> None:
        """Count one SubscribeToShardEvent written to a subscriber (its records carry
        their ``Data`` as bytes)."""
        stream = consumer_arn.partition(":stream/")[2].partition("/")[0]
        consumer = consumer_arn.rpartition("/consumer/")[2].partition(":")[0]
        self.subscribe_event_success.labels(stream, consumer).inc()
        self.subscribe_event_records.labels(stream, consumer).inc(len(records))
        self.subscribe_event_bytes.labels(stream, consumer).inc(
            sum(len(record["Data"]) for record in records)
        )
        self.subscribe_millis_behind.labels(stream, consumer).set(millis_behind_latest)

    def exposition(self) -> bytes:
        """The Prometheus text of every family."""
        return generate_latest(self.registry)
