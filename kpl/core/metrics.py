"""The producer core's counters, and the KPL-named metrics computed from them.

The core bumps plain integer and float slots as records move (never per user record on
the fast path: per Kinesis record, per request, per answer); :meth:`ProducerMetrics.as_dict`
turns them into the KPL's metric names, averages included, on demand. Gauges that are
the core's own state (records pending, bytes buffered, requests in flight) are passed in.
"""

from __future__ import annotations

__all__ = ["ProducerMetrics"]


class ProducerMetrics:
    """Cumulative counters of one :class:`~kpl.core.pipeline.ProducerCore`."""

    __slots__ = (
        "buffered_n",
        "buffering",
        "completed",
        "data_put",
        "errors",
        "errors_by_code",
        "expired",
        "failed",
        "kdata_put",
        "krecords_put",
        "mispredicted",
        "put",
        "refreshes",
        "request_krecords",
        "request_time",
        "requests",
        "responses",
        "retries",
    )

    def __init__(self) -> None:
        #: User records delivered, and their data + partition key bytes.
        self.put = 0
        self.data_put = 0
        #: Kinesis records delivered, and their data + partition key bytes.
        self.krecords_put = 0
        self.kdata_put = 0
        #: PutRecords requests handed out, and the Kinesis records in them.
        self.requests = 0
        self.request_krecords = 0
        #: Answers (responses or errors) and the seconds they took in total.
        self.responses = 0
        self.request_time = 0.0
        #: Seconds user records waited from put() to their first send, and how many.
        self.buffering = 0.0
        self.buffered_n = 0
        #: Failed tries of completed user records, and the completed records.
        self.retries = 0
        self.completed = 0
        #: User records failed (expired ones included), and expired.
        self.failed = 0
        self.expired = 0
        #: Failed entries and failed requests, in total and by error code.
        self.errors = 0
        self.errors_by_code: dict[str, int] = {}
        #: Kinesis records that landed on another shard than predicted.
        self.mispredicted = 0
        #: ListShards calls asked for.
        self.refreshes = 0

    def error(self, code: str) -> None:
        """Count one failed entry or request with ``code``."""
        self.errors += 1
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1

    def as_dict(
        self, received: int, pending: int, buffered_bytes: int, in_flight: int
    ) -> dict[str, float]:
        """Counters and averages under the KPL's metric names (times in milliseconds)."""
        completed = self.completed
        metrics: dict[str, float] = {
            "UserRecordsReceived": received,
            "UserRecordsPending": pending,
            "UserRecordsPut": self.put,
            "UserRecordsDataPut": self.data_put,
            "UserRecordsFailed": self.failed,
            "UserRecordExpired": self.expired,
            "KinesisRecordsPut": self.krecords_put,
            "KinesisRecordsDataPut": self.kdata_put,
            "PutRecordsRequests": self.requests,
            "AllErrors": self.errors,
            "RetriesPerRecord": self.retries / completed if completed else 0.0,
            "BufferingTime": 1000.0 * self.buffering / self.buffered_n
            if self.buffered_n
            else 0.0,
            "RequestTime": 1000.0 * self.request_time / self.responses
            if self.responses
            else 0.0,
            "UserRecordsPerKinesisRecord": self.put / self.krecords_put
            if self.krecords_put
            else 0.0,
            "KinesisRecordsPerPutRecordsRequest": self.request_krecords / self.requests
            if self.requests
            else 0.0,
            "ShardMapMispredictions": self.mispredicted,
            "ShardMapRefreshes": self.refreshes,
            "InFlightRequests": in_flight,
            "BufferedBytes": buffered_bytes,
        }
        for code, count in sorted(self.errors_by_code.items()):
            metrics[f"ErrorsByCode.{code}"] = count
        return metrics
