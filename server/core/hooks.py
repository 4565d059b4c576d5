"""Seams where per-shard throughput limits and fault injection plug into the engine.

Issue 3 implements these; until then the engine is built with ``throughput=None`` and
``faults=None`` and skips the calls entirely (one ``is None`` test per request, not per
record). Both are sans-IO: they get ``now`` and the engine's ``random.Random``.

Where the engine consults them (``server/core/engine.py``):

* ``Engine.put_record`` / ``Engine.put_records``: for every entry, after routing it to a
  shard and before giving it a sequence number, ``throughput.admit_write(...)``; a
  ``False`` fails that entry with ``ProvisionedThroughputExceededException`` (the whole
  call for PutRecord). Then ``faults.entry_error(...)`` may fail the entry with a code.
* ``Engine.get_records``: ``throughput.admit_read(...)`` before reading (``False`` is a
  ``ProvisionedThroughputExceededException``), then ``throughput.record_read(...)`` with
  the bytes returned.
* ``Engine.handle``: ``throughput.admit_control(action, ...)`` for control-plane calls
  (``False`` is ``LimitExceededException``).
* The web layer (``server/web/app.py``, ``_dispatch``) asks ``faults.request_fault``
  before running an action, for whole-request errors and added latency.
"""

from __future__ import annotations

import random
from typing import Protocol

__all__ = ["FaultInjector", "RequestFault", "ThroughputGate"]


class ThroughputGate(Protocol):
    """Per-shard read/write accounting and control-plane rates (issue 3)."""

    def admit_write(
        self, stream_name: str, shard_id: str, records: int, size: int, now: float
    ) -> bool:
        """Take ``records`` records of ``size`` bytes (data + partition key) from the
        shard's write budget; ``False`` (and take nothing) if that exceeds it."""
        ...

    def admit_read(self, stream_name: str, shard_id: str, now: float) -> bool:
        """Count one GetRecords call on the shard; ``False`` if over the call or byte rate."""
        ...

    def record_read(self, stream_name: str, shard_id: str, size: int, now: float) -> None:
        """Charge the bytes a GetRecords call returned to the shard's read budget."""
        ...

    def admit_control(self, action: str, stream_name: str | None, now: float) -> bool:
        """Count one control-plane call; ``False`` if over the service's rate for it.

        ``stream_name`` keys stream-scoped rates; GetShardIterator passes
        ``"<stream>/<shard id>"`` so its rate is per shard (``forget_stream`` drops those too).
        """
        ...

    def forget_stream(self, stream_name: str) -> None:
        """Drop the accounting of a deleted stream."""
        ...


class RequestFault(Protocol):
    """What fault injection decided for one request."""

    delay_seconds: float
    """Latency to add before answering (the web layer sleeps it)."""
    error_code: str | None
    """A wire ``__type`` to answer with instead of running the action, or ``None``."""


class FaultInjector(Protocol):
    """Injected failures for testing producers (issue 3)."""

    def entry_error(self, rng: random.Random) -> str | None:
        """For one PutRecords entry: an error code to fail it with, or ``None``."""
        ...

    def request_fault(self, action: str, rng: random.Random) -> RequestFault | None:
        """For one request: latency and/or a whole-request error, or ``None``."""
        ...
