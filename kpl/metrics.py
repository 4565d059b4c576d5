"""The producer's and the consumer's metrics in a prometheus-client registry.

The KPL's metric names are the source: a counter ``UserRecordsPut`` is exposed as
``kpl_user_records_put_total``, a level such as ``UserRecordsPending`` as the gauge
``kpl_user_records_pending``, a time in milliseconds (``BufferingTime``) as
``kpl_buffering_time_milliseconds``, and ``ErrorsByCode.<code>`` as
``kpl_errors_by_code_total{code="<code>"}``. Every series has the ``stream_name`` label,
and ``shard_id`` when a source reports per shard (names of the form
``<Name>.<shard id>``, shard ids starting ``shardId-``).

Nothing is counted twice and nothing runs on the producer's hot path: the collector
reads the source (``Producer.metrics``) when the registry is scraped.

The consumer's numbers (``Consumer.metrics``) take the KCL's names, and every series
also has the labels ``application`` and ``worker_id``:

- ``kpl_millis_behind_latest{shard_id}`` (gauge, KCL ``MillisBehindLatest``): how far
  the shard's last GetRecords answer was behind the tip of the shard;
- ``kpl_records_processed_total{shard_id}`` (KCL ``RecordsProcessed``) and
  ``kpl_data_bytes_processed_total{shard_id}`` (KCL ``DataBytesProcessed``): user records
  and their data bytes delivered to the application, for the shards held now;
- ``kpl_malformed_aggregates_total{shard_id}``: records that carried the KPL's
  aggregation header and checksum but did not decode, delivered as plain data instead;
- ``kpl_current_leases`` (gauge, KCL ``CurrentLeases``): leases this worker holds;
- ``kpl_taken_leases_total``, ``kpl_stolen_leases_total`` and ``kpl_lost_leases_total``
  (KCL ``TakenLeases``, ``StolenLeases``, ``LostLeases``): leases taken (stolen ones
  included), stolen from another worker, and lost to another worker since the start;
- ``kpl_checkpoints_total``: checkpoints written to the lease store.

``register_producer(producer)`` registers a producer, ``register_consumer(consumer)`` a
consumer; ``register_metrics(source, ...)`` any callable returning KPL-named numbers.
``serve(registry, port)`` serves a registry over HTTP; ``serve_producer`` and
``serve_consumer`` serve one source (``kpl load --metrics-port``, ``kpl consume
--metrics-port``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "COUNTERS",
    "MetricsCollector",
    "consumer_metrics",
    "register_consumer",
    "register_metrics",
    "register_producer",
    "serve",
    "serve_consumer",
    "serve_producer",
    "snake_case",
]

#: KPL metrics that only grow (exposed as counters); every other name is a gauge.
COUNTERS: Final = frozenset(
    {
        "UserRecordsReceived",
        "UserRecordsPut",
        "UserRecordsDataPut",
        "UserRecordsFailed",
        "UserRecordExpired",
        "KinesisRecordsPut",
        "KinesisRecordsDataPut",
        "PutRecordsRequests",
        "AllErrors",
        "ShardMapMispredictions",
        "ShardMapRefreshes",
        "RecordsProcessed",
        "RecordsRead",
        "BytesRead",
        "GetRecordsCalls",
        "Checkpoints",
        "DataBytesProcessed",
        "MalformedAggregates",
        "TakenLeases",
        "StolenLeases",
        "LostLeases",
    }
)
#: Metrics the KPL reports in milliseconds.
_MILLISECONDS: Final = frozenset({"BufferingTime", "RequestTime"})
_BY_CODE: Final = "ErrorsByCode."


def snake_case(name: str) -> str:
    """``PutRecords.TotalRecords`` -> ``put_records_total_records`` (CloudWatch and KPL
    names to Prometheus ones)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.replace(".", "_")).lower()


class _Named(Protocol):
    stream_name: str

    def metrics(self) -> Mapping[str, float]: ...


class _ConsumerLike(Protocol):
    stream: str
    application: str

    @property
    def config(self) -> Any: ...

    def metrics(self) -> Mapping[str, Any]: ...


class MetricsCollector(Collector):
    """A prometheus-client collector reading one source of KPL-named metrics per scrape."""

    def __init__(
        self,
        source: Callable[[], Mapping[str, float]],
        stream_name: str,
        prefix: str = "kpl",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._source = source
        self._stream = stream_name
        self._prefix = prefix
        self._labels = dict(labels or {})

    def _family(self, name: str) -> tuple[str, bool]:
        base = f"{self._prefix}_{snake_case(name)}"
        if name in COUNTERS:
            return base, True
        if name in _MILLISECONDS:
            return base + "_milliseconds", False
        return base, False

    def _read(self) -> dict[str, float]:
        # A scrape may run on the HTTP server's thread while the producer's loop updates
        # its counters: a dict that changed size mid-copy is read again.
        for _ in range(5):
            try:
                return dict(self._source())
            except RuntimeError:
                continue
        return dict(self._source())

    def collect(self) -> Iterator[Metric]:
        """One family per metric name, samples labelled by stream (and shard)."""
        families: dict[str, Any] = {}
        for key, number in self._read().items():
            labels = {**self._labels, "stream_name": self._stream}
            name = key
            if key.startswith(_BY_CODE):
                name, labels["code"] = "ErrorsByCode", key[len(_BY_CODE) :]
                family_name, counter = f"{self._prefix}_errors_by_code", True
            else:
                head, _, tail = key.rpartition(".")
                if head and tail.startswith("shardId-"):
                    name, labels["shard_id"] = head, tail
                family_name, counter = self._family(name)
            family = families.get(family_name)
            if family is None:
                kind = CounterMetricFamily if counter else GaugeMetricFamily
                family = kind(family_name, f"KPL metric {name}", labels=sorted(labels))
                families[family_name] = family
            family.add_metric([labels[label] for label in sorted(labels)], float(number))
        yield from families.values()


def register_metrics(
    source: Callable[[], Mapping[str, float]],
    *,
    stream_name: str,
    prefix: str = "kpl",
    labels: Mapping[str, str] | None = None,
    registry: CollectorRegistry | None = None,
) -> MetricsCollector:
    """Register ``source`` (KPL-named numbers) in ``registry`` (default: the global one);
    ``labels`` are added to every series."""
    collector = MetricsCollector(source, stream_name, prefix, labels)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector


def register_producer(
    producer: _Named, registry: CollectorRegistry | None = None
) -> MetricsCollector:
    """Register a :class:`~kpl.Producer`'s metrics (read through ``producer.metrics()``)."""
    return register_metrics(
        producer.metrics, stream_name=producer.stream_name, registry=registry
    )


#: The consumer's lease counts by their KCL names (``Checkpoints`` has no KCL counterpart).
_LEASE_NAMES: Final = {
    "held": "CurrentLeases",
    "taken": "TakenLeases",
    "stolen": "StolenLeases",
    "lost": "LostLeases",
    "checkpoints": "Checkpoints",
}


def consumer_metrics(consumer: _ConsumerLike) -> dict[str, float]:
    """``consumer.metrics()`` under the KCL's names, per shard as ``<Name>.<shard id>``."""
    numbers = consumer.metrics()
    flat: dict[str, float] = {}
    for shard_id, shard in numbers["shards"].items():
        flat[f"MillisBehindLatest.{shard_id}"] = shard["millis_behind_latest"]
        flat[f"RecordsProcessed.{shard_id}"] = shard["records"]
        flat[f"DataBytesProcessed.{shard_id}"] = shard["bytes"]
        flat[f"MalformedAggregates.{shard_id}"] = shard["malformed_aggregates"]
    leases = numbers["leases"]
    for key, name in _LEASE_NAMES.items():
        if key in leases:
            flat[name] = leases[key]
    return flat


def register_consumer(
    consumer: _ConsumerLike, registry: CollectorRegistry | None = None
) -> MetricsCollector:
    """Register a :class:`~kpl.consumer.Consumer`'s metrics (read through
    ``consumer.metrics()`` at each scrape), labelled with its application and worker."""
    return register_metrics(
        lambda: consumer_metrics(consumer),
        stream_name=consumer.stream,
        labels={"application": consumer.application, "worker_id": consumer.config.worker_id},
        registry=registry,
    )


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``registry`` on ``http://host:port/metrics`` from a background thread;
    returns a function that stops it."""
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


def serve_producer(producer: _Named, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve one producer's metrics in a registry of their own (``kpl load
    --metrics-port``); a port that cannot be bound is a :class:`ValueError` saying so."""
    registry = CollectorRegistry()
    register_producer(producer, registry)
    return _serve_own(registry, port, host)


def serve_consumer(
    consumer: _ConsumerLike, port: int, host: str = "127.0.0.1"
) -> Callable[[], None]:
    """Serve one consumer's metrics in a registry of their own (``kpl consume
    --metrics-port``); a port that cannot be bound is a :class:`ValueError` saying so."""
    registry = CollectorRegistry()
    register_consumer(consumer, registry)
    return _serve_own(registry, port, host)


def _serve_own(registry: CollectorRegistry, port: int, host: str) -> Callable[[], None]:
    try:
        return serve(registry, port, host)
    except OSError as error:
        raise ValueError(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}"
        ) from None
