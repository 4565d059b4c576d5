"""Mispredictions: a Kinesis record that landed on another shard than the map predicted.

Theory of operation
-------------------
The service places a Kinesis record by its own hash key, so a record is always stored;
a misprediction only means our shard map is out of date (a reshard). The core then asks
for one map refresh (never a storm) and, for an *aggregated* record, decides per
sub-record, since a consumer drops sub-records whose hash key lies outside the shard the
record landed on:

- the answering shard is in our map: sub-records whose hash keys it owns are delivered
  (at the sub-sequence number they had); the others are sent again, each with a
  ``Mispredicted`` attempt;
- the answering shard is unknown to our map: nothing can be decided yet. The
  sub-records are held *unverified* until a map that knows the shard arrives (then as
  above), or the refresh fails (then all are sent again: a possible duplicate beats a
  possible loss). A map that still does not know the shard lags behind the service:
  they stay held and another refresh is asked for.

With ``preserve_order`` a record sent again must not be overtaken by newer records of
its key, so ``reorder`` tells the core to send nothing until a new map routes every held
record again in put() order.

:class:`Mispredictions` owns the unverified records and the ``reorder`` flag; it returns
decisions, and the core settles and routes. The ``Mispredicted`` attempt is built by
:func:`mispredicted_attempt` only.
"""

from __future__ import annotations

from collections.abc import Iterable

from kpl.core.records import ARRIVAL, HASH, UserRecord
from kpl.core.results import Attempt
from kpl.core.shard_map import ShardMap

__all__ = ["MISPREDICTED", "Mispredictions", "Placed", "mispredicted_attempt"]

#: The error code of the attempt a user record gets when it was sent in a Kinesis
#: record that landed on a shard not owning its hash key.
MISPREDICTED = "Mispredicted"

#: A sub-record and where its Kinesis record landed:
#: (record, shard id, sequence number, sub-sequence number, the successful attempt).
Placed = tuple[UserRecord, str, str, int, Attempt]


def mispredicted_attempt(ok: Attempt, now: float, message: str) -> Attempt:
    """The failed attempt of a user record whose Kinesis record (stored with ``ok``)
    landed where a consumer would not read it."""
    return Attempt(ok.started, now, False, MISPREDICTED, message)


def _outside(shard_id: str) -> str:
    return f"aggregated record landed on {shard_id}, outside this record's hash key"


class Mispredictions:
    """Sub-records held until a map confirms them, and whether order must be restored."""

    __slots__ = ("preserve", "reorder", "unverified")

    def __init__(self, preserve_order: bool) -> None:
        self.preserve = preserve_order
        #: Delivered to a shard our map did not know.
        self.unverified: list[Placed] = []
        #: preserve_order only: records of a mispredicted aggregate must be sent again, so
        #: nothing is sent until a new map puts every held record back in put() order.
        self.reorder = False

    def landed(
        self,
        items: list[UserRecord],
        shard_id: str,
        sequence: str,
        ok: Attempt,
        now: float,
        shard_map: ShardMap | None,
    ) -> tuple[list[Placed], list[tuple[UserRecord, Attempt]]]:
        """An aggregated record of ``items`` landed on ``shard_id``, not the predicted
        shard: the sub-records delivered, and those to send again with their attempt.
        Both are empty when the shard is unknown (the sub-records are then held)."""
        index = shard_map.index_of(shard_id) if shard_map is not None else -1
        if shard_map is None or index < 0:
            for sub, record in enumerate(items):
                self.unverified.append((record, shard_id, sequence, sub, ok))
            self.reorder = self.preserve
            return [], []
        start, end = shard_map.range_of(index)
        delivered: list[Placed] = []
        again: list[tuple[UserRecord, Attempt]] = []
        for sub, record in enumerate(items):
            if start <= record[HASH] <= end:
                delivered.append((record, shard_id, sequence, sub, ok))
            else:
                # Sent but not kept where a consumer would read it: a failed try.
                again.append((record, mispredicted_attempt(ok, now, _outside(shard_id))))
        if again and self.preserve:
            # Newer records of these keys wait behind them: hold everything until the
            # refreshed map, which routes every held record again in put() order.
            self.reorder = True
        return delivered, again

    def confirm(
        self, shard_map: ShardMap, now: float
    ) -> tuple[list[Placed], list[tuple[UserRecord, Attempt]]]:
        """A new map: the held sub-records it shows delivered, and those to send again.

        The ones whose shard it does not know stay held (it lags behind the service:
        sending again would store a duplicate); the caller then asks for another map.
        """
        delivered: list[Placed] = []
        again: list[tuple[UserRecord, Attempt]] = []
        held, self.unverified = self.unverified, []
        for item in held:
            record, shard_id, _sequence, _sub, ok = item
            index = shard_map.index_of(shard_id)
            if index < 0:
                self.unverified.append(item)
                continue
            start, end = shard_map.range_of(index)
            if start <= record[HASH] <= end:
                delivered.append(item)
            else:
                again.append((record, mispredicted_attempt(ok, now, _outside(shard_id))))
        if self.unverified:
            self.reorder = self.preserve
        return delivered, again

    def give_up(self, error: BaseException, now: float) -> list[tuple[UserRecord, Attempt]]:
        """The refresh failed: every held sub-record is sent again, with its attempt."""
        held, self.unverified = self.unverified, []
        return [
            (
                record,
                mispredicted_attempt(
                    ok, now,
                    f"landed on unknown shard {shard_id}; shard map refresh failed: {error}",
                ),
            )
            for record, shard_id, _sequence, _sub, ok in held
        ]

    def expire(self, horizon: float) -> list[UserRecord]:
        """Take out the held sub-records that arrived at or before ``horizon``."""
        old = [u[0] for u in self.unverified if u[0][ARRIVAL] <= horizon]
        if old:
            self.unverified = [u for u in self.unverified if u[0][ARRIVAL] > horizon]
        return old

    def take_all(self) -> Iterable[UserRecord]:
        """Take out every held sub-record."""
        held, self.unverified = self.unverified, []
        return [u[0] for u in held]
