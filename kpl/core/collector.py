"""Collection: Kinesis records -> PutRecords requests within the service's limits.

A PutRecords request holds 1-``max_count`` entries (at most 500) whose sizes — data plus
partition key, as the service counts them — add up to at most ``max_size`` (5 MiB, or
10 MiB for streams that allow larger records). :class:`Collector` is the arithmetic:
``try_add(size)`` returns False (changing nothing) when the entry would break a limit;
the first entry always fits, since a single record is bounded by ``max_record_size``.

:func:`put_records_body` renders the JSON 1.1 body with orjson from entries that already
hold base64 data (rendered once per Kinesis record, reused by every retry).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

__all__ = ["Collector", "put_records_body"]


class Collector:
    """Counts one PutRecords request being filled: entries and bytes."""

    __slots__ = ("count", "max_count", "max_size", "size")

    def __init__(self, max_count: int, max_size: int) -> None:
        self.max_count = max_count
        self.max_size = max_size
        self.count = 0
        self.size = 0

    def try_add(self, size: int) -> bool:
        """Count one more entry of ``size`` bytes, or return False when it does not fit."""
        if self.count >= self.max_count or (self.count and self.size + size > self.max_size):
            return False
        self.count += 1
        self.size += size
        return True

    def full(self, next_size: int = 1) -> bool:
        """Whether no entry of ``next_size`` bytes would fit any more."""
        return self.count >= self.max_count or self.size + next_size > self.max_size

    def reset(self) -> None:
        """Start a new request."""
        self.count = 0
        self.size = 0


def put_records_body(
    stream_name: str, stream_arn: str | None, entries: Sequence[dict[str, str]]
) -> bytes:
    """The PutRecords JSON body: ``StreamARN`` when known, else ``StreamName``."""
    if stream_arn is not None:
        return orjson.dumps({"Records": entries, "StreamARN": stream_arn})
    return orjson.dumps({"Records": entries, "StreamName": stream_name})
