"""Seams where per-shard throughput limits and fault injection plug into the engine.

An engine built with ``throughput=None`` and ``faults=None`` skips the calls entirely
(one ``is None`` test per request, not per record). Both are sans-IO: they get ``now``
and the engine's ``random.Random``.

Where the engine consults them:

* ``Records.put_record`` / ``Records.put_records`` (``server/core/records.py``): for
  every entry, after routing it to a shard and before giving it a sequence number,
  ``throughput.admit_write(...)``; a ``False`` fails that entry with
  ``ProvisionedThroughputExceededException`` (the whole call for PutRecord). Then
  ``faults.entry_error(...)`` may fail the entry with a code.
* ``Records.get_records``: ``throughput.admit_read(...)`` before reading (``False`` is a
  ``ProvisionedThroughputExceededException``), then ``throughput.record_read(...)`` with
  the bytes returned.
* ``Engine.handle`` (``server/core/engine.py``): ``throughput.admit_control(action, ...)``
  for control-plane calls, the actions the registry (``server/core/actions.py``) files
  as management events (``False`` is ``LimitExceededException``);
  ``Records.get_shard_iterator`` does the same per shard (``False`` is
  ``ProvisionedThroughputExceededException``).
* ``Subscription.poll`` (``server/core/subscription.py``): ``throughput.fanout_wait(...)``
  before reading for a SubscribeToShard event, ``throughput.record_fanout(...)`` after.
* The web layer (``server/web/app.py``, ``dispatch``) asks ``faults.request_fault``
  before running an action, for whole-request errors and added latency.
"""

from __future__ import annotations

import random
from typing import Protocol

__all__ = ["FaultInjector", "RequestFault", "ThroughputGate"]


class ThroughputGate(Protocol):
    """Per-shard read/write accounting and control-plane rates."""

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

    def fanout_wait(self, consumer_arn: str, shard_id: str, now: float) -> float:
        """Seconds until a registered consumer may be sent more of a shard (0.0: now)."""
        ...

    def record_fanout(self, consumer_arn: str, shard_id: str, size: int, now: float) -> None:
        """Charge the bytes a SubscribeToShard event carried to the consumer's own budget."""
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
    """Injected failures for testing producers."""

    def entry_error(self, rng: random.Random) -> str | None:
        """For one PutRecords entry: an error code to fail it with, or ``None``."""
        ...

    def request_fault(self, action: str, rng: random.Random) -> RequestFault | None:
        """For one request: latency and/or a whole-request error, or ``None``."""
        ...
