"""A lease table in a SQLite file: the embedded default, shared by the workers of one host.

Every write is one conditional statement (``UPDATE ... WHERE lease_counter = ?``,
``INSERT ... ON CONFLICT DO NOTHING``, ``DELETE ... WHERE lease_counter = ?``) in its own
transaction, so SQLite's write lock makes each compare-and-set atomic across threads
and processes. The file is in WAL mode: readers (listings) never block the writer, and a
writer waits up to ``timeout`` for another process's write to finish.

SQLite calls block, so they run on one thread owned by the store (a connection is used by
the thread that made it); the event loop only awaits their results.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from kpl.consumer.errors import LeaseStoreError, LeaseStoreUnavailable
from kpl.consumer.leases.base import Lease

__all__ = ["SQLiteLeaseStore"]

T = TypeVar("T")

_COLUMNS = (
    "lease_key, lease_owner, lease_counter, checkpoint, checkpoint_sub_sequence_number, "
    "owner_switches_since_checkpoint, parent_shard_ids, pending_checkpoint, "
    "pending_checkpoint_sub_sequence_number, pending_checkpoint_state"
)

_CREATE = """
CREATE TABLE IF NOT EXISTS leases (
    lease_key TEXT PRIMARY KEY NOT NULL,
    lease_owner TEXT,
    lease_counter INTEGER NOT NULL,
    checkpoint TEXT NOT NULL,
    checkpoint_sub_sequence_number INTEGER NOT NULL DEFAULT 0,
    owner_switches_since_checkpoint INTEGER NOT NULL DEFAULT 0,
    parent_shard_ids TEXT NOT NULL DEFAULT '[]',
    pending_checkpoint TEXT,
    pending_checkpoint_sub_sequence_number INTEGER NOT NULL DEFAULT 0,
    pending_checkpoint_state BLOB
)
"""

# Columns a table made by an older schema may lack, added by initialize().
_ADDED_COLUMNS = {
    "pending_checkpoint_sub_sequence_number": "INTEGER NOT NULL DEFAULT 0",
    "pending_checkpoint_state": "BLOB",
}

# Only Lease's columns are set, so columns another tool added to the table are kept.
_REPLACE = """
UPDATE leases SET lease_owner = ?, lease_counter = ?, checkpoint = ?,
    checkpoint_sub_sequence_number = ?, owner_switches_since_checkpoint = ?,
    parent_shard_ids = ?, pending_checkpoint = ?, pending_checkpoint_sub_sequence_number = ?,
    pending_checkpoint_state = ?
WHERE lease_key = ? AND lease_counter = ?
"""

_INSERT = f"""
INSERT INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (lease_key) DO NOTHING
"""


def _row(lease: Lease) -> tuple[Any, ...]:
    return (
        lease.lease_key,
        lease.lease_owner,
        lease.lease_counter,
        lease.checkpoint,
        lease.checkpoint_sub_sequence_number,
        lease.owner_switches_since_checkpoint,
        json.dumps(sorted(lease.parent_shard_ids)),
        lease.pending_checkpoint,
        lease.pending_checkpoint_sub_sequence_number,
        lease.pending_checkpoint_state,
    )


def _lease(row: tuple[Any, ...]) -> Lease:
    return Lease(
        lease_key=row[0],
        lease_owner=row[1],
        lease_counter=row[2],
        checkpoint=row[3],
        checkpoint_sub_sequence_number=row[4],
        owner_switches_since_checkpoint=row[5],
        parent_shard_ids=frozenset(json.loads(row[6])),
        pending_checkpoint=row[7],
        pending_checkpoint_sub_sequence_number=row[8],
        pending_checkpoint_state=None if row[9] is None else bytes(row[9]),
    )


class _Connection:
    """The store's connection, used only on the store's thread.

    Kept apart from the store so that work queued on the thread never holds the store
    itself: a store dropped unclosed is then collected (and warns) where it was dropped.
    """

    def __init__(self, path: Path, timeout: float, name: str) -> None:
        self.path = path
        self.timeout = timeout
        self.name = name
        self.connection: sqlite3.Connection | None = None

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self.connection is None:
                self.connection = self._connect()
            return work(self.connection)
        except sqlite3.OperationalError as error:
            text = str(error).lower()
            if "locked" in text or "busy" in text:
                raise LeaseStoreUnavailable(f"{self.name}: {error}") from error
            raise LeaseStoreError(f"{self.name}: {error}") from error
        except sqlite3.Error as error:
            raise LeaseStoreError(f"{self.name}: {error}") from error

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _connect(self) -> sqlite3.Connection:
        # Autocommit: every statement is its own transaction, so each conditional
        # write takes SQLite's write lock for exactly one compare-and-set.
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=True
        )
        try:
            # WAL stays set in the file: only its first user switches (which takes a lock
            # that workers starting together would otherwise contend for).
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            # Durable at checkpoints, not at every commit: a lost write after a power cut
            # re-delivers records, which at-least-once allows.
            connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            connection.close()
            raise
        return connection


class SQLiteLeaseStore:
    """A :class:`~kpl.consumer.leases.base.LeaseStore` in the SQLite file at ``path``.

    ``timeout`` bounds how long a write waits for another process's write; past it the
    call raises :class:`~kpl.consumer.errors.LeaseStoreUnavailable`.
    """

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self._connection = _Connection(self.path, timeout, repr(self))
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteLeaseStore({str(self.path)!r})"

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise LeaseStoreError(f"{self!r} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="kpl-sqlite-leases")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._connection.run, work)

    async def initialize(self) -> None:
        """Create the file and the table when they do not exist yet."""

        def create(connection: sqlite3.Connection) -> None:
            connection.execute(_CREATE)
            present = {row[1] for row in connection.execute("PRAGMA table_info(leases)")}
            for column, declaration in _ADDED_COLUMNS.items():
                if column in present:
                    continue
                try:
                    connection.execute(f"ALTER TABLE leases ADD COLUMN {column} {declaration}")
                except sqlite3.OperationalError as error:
                    # Another worker starting at the same time added it first.
                    if "duplicate column" not in str(error).lower():
                        raise

        await self._call(create)

    async def list_leases(self) -> list[Lease]:
        """Every lease, in key order."""

        def select(connection: sqlite3.Connection) -> list[Lease]:
            rows = connection.execute(f"SELECT {_COLUMNS} FROM leases ORDER BY lease_key")
            return [_lease(row) for row in rows]

        return await self._call(select)

    async def get_lease(self, lease_key: str) -> Lease | None:
        """One lease, or ``None``."""

        def select(connection: sqlite3.Connection) -> Lease | None:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM leases WHERE lease_key = ?", (lease_key,)
            ).fetchone()
            return None if row is None else _lease(row)

        return await self._call(select)

    async def create_lease(self, lease: Lease) -> bool:
        """Store ``lease`` unless its key exists."""
        row = _row(lease)
        return await self._call(lambda c: c.execute(_INSERT, row).rowcount == 1)

    async def replace_lease(self, lease: Lease, expected_counter: int) -> bool:
        """Store ``lease`` if the stored counter is ``expected_counter``."""
        key, *values = _row(lease)
        parameters = (*values, key, expected_counter)
        return await self._call(lambda c: c.execute(_REPLACE, parameters).rowcount == 1)

    async def delete_lease(self, lease_key: str, expected_counter: int) -> bool:
        """Delete the lease if its counter is ``expected_counter``."""
        statement = "DELETE FROM leases WHERE lease_key = ? AND lease_counter = ?"
        parameters = (lease_key, expected_counter)
        return await self._call(lambda c: c.execute(statement, parameters).rowcount == 1)

    def __del__(self) -> None:
        # An open store holds a connection (a lock holder on the file) and a thread.
        executor = getattr(self, "_executor", None)
        if executor is not None:
            warnings.warn(f"{self!r} was not closed", ResourceWarning, stacklevel=1)
            # The connection belongs to the store's thread: it closes it there, last.
            executor.submit(self._connection.close)
            executor.shutdown(wait=False)

    async def close(self) -> None:
        """Close the connection and stop the store's thread."""
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return

        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._connection.close)
        finally:
            executor.shutdown(wait=False)
