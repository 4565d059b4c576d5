"""Recovery's judgement: an interrupted write versus damage, and what start-up reports.

Theory of operation
-------------------
At start-up every unreadable byte range of a shard's log is one of two things:

* a **torn tail**: the last write, interrupted, so never acknowledged. It runs to the
  end of the shard's *last* segment and looks like a write that stopped: fewer bytes
  than a frame header, a frame header whose length runs past the end of the file, or
  zero bytes from a page boundary to the end (pages that never reached the disk). It is
  truncated with an INFO line and nothing else;
* **damage**: anything else — a complete frame whose CRC fails, bytes that are no frame,
  damage in a segment that has a later one, a segment missing from the middle of the
  numbering or from its end (the shard's high-water mark names the highest segment it
  ever had), a missing or unreadable high-water mark, a shard directory the metadata
  lists but the disk lacks. Damage may have held acknowledged records: each is a
  :class:`Finding` logged as a WARNING with the shard, the byte range and how many
  records were lost, counted in :class:`RecoveryReport` (which the metrics read), and
  its bytes stay where they are (reads skip them; a last segment ending in damage is
  sealed and appends go to a new segment).

A stream whose metadata is missing or unreadable is **quarantined**: its directory moves
to ``quarantine/`` with every file, a WARNING names it, and the other streams serve.

Sequence numbers never repeat whatever is lost: a shard's high-water mark is raised a
block ahead of its records and made durable with them, and new numbers go above it. When
the mark itself is lost, numbering jumps :data:`LOST_MARK_JUMP` above what is left, more
than any shard can ever have issued.

Nothing here does IO: these are pure functions of bytes and a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.core.seqnum import INDEX_UNIT
from server.storage.durable.format import HEADER_SIZE, MAGIC

__all__ = ["LOST_MARK_JUMP", "PAGE_BYTES", "RESERVE", "Finding", "RecoveryReport", "is_torn"]

#: The high-water mark runs this far ahead of a shard's last record: 2**30 sequence
#: indexes (a number's per-record index counts in units of ``INDEX_UNIT``), so it is
#: rewritten once per ~10**9 records; a restart skips at most that many indexes.
RESERVE = 2**30 * INDEX_UNIT
#: How far numbering jumps when a shard's mark is lost: 2**48 indexes, more than 1,000
#: records a second for 8,000 years; the index space (2**64) allows 65,536 such jumps.
LOST_MARK_JUMP = 2**48 * INDEX_UNIT
#: The unit in which a file's pages reach the disk.
PAGE_BYTES = 4096
_MAX_PAYLOAD = 64 * 1024 * 1024


def is_torn(buf: bytes, start: int) -> bool:
    """Whether ``buf[start:]`` (damage running to the end of a last segment) is a torn write."""
    size = len(buf)
    tail = buf[start:]
    if size - start < HEADER_SIZE or not tail.strip(b"\0"):
        return True
    # Zeros from a page boundary to the end: pages of the write that never got written.
    nonzero_end = start + len(tail.rstrip(b"\0"))
    if -(-nonzero_end // PAGE_BYTES) * PAGE_BYTES < size:
        return True
    # One frame header whose length runs past the end: a write cut short. (A complete
    # frame that fails its checks is damage, whatever follows it.)
    if buf[start : start + 2] != MAGIC:
        return False
    length = int.from_bytes(buf[start + 2 : start + 6], "little")
    return length <= _MAX_PAYLOAD and start + HEADER_SIZE + length > size


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing recovery (or ``--check``) found wrong in the data directory."""

    kind: str
    """``torn`` (cut quietly), ``damaged``, ``missing-segments``, ``mark``, ``missing-shard``,
    ``quarantined`` or ``secret``."""
    where: str
    """The file or directory, relative to the data directory."""
    detail: str
    """What is wrong, in words."""
    start: int = 0
    end: int = 0
    """The byte range, for damaged and torn bytes."""
    records_lost: int = 0
    """Records known to be unreadable (a lower bound when ``exact`` is false)."""
    exact: bool = True

    @property
    def is_damage(self) -> bool:
        """Whether this may have cost acknowledged data (everything but a torn tail)."""
        return self.kind != "torn"

    def describe(self) -> str:
        """One line for the log or ``--check``."""
        if self.kind in ("torn", "damaged"):
            where = f"{self.where} bytes {self.start}-{self.end}"
        else:
            where = self.where
        if self.kind in ("quarantined", "torn", "secret"):
            lost = ""
        elif self.exact:
            lost = f"; {self.records_lost} records lost"
        elif self.records_lost:
            lost = f"; at least {self.records_lost} records lost"
        else:
            lost = "; an unknown number of records lost"
        return f"{where}: {self.detail}{lost}"


@dataclass(slots=True)
class RecoveryReport:
    """Everything recovery found, in order; the counts the metrics expose."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def damage(self) -> list[Finding]:
        """The findings that may have cost acknowledged data (not torn tails)."""
        return [f for f in self.findings if f.is_damage]

    @property
    def records_lost(self) -> int:
        """Records known lost to damage (a lower bound where a count is unknown)."""
        return sum(f.records_lost for f in self.findings if f.is_damage)

    @property
    def quarantined(self) -> list[str]:
        """The stream directories set aside."""
        return [f.where for f in self.findings if f.kind == "quarantined"]
