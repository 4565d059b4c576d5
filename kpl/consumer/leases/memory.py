"""A lease table in this process's memory: for tests and single-process experiments.

Stores opened with the same name share one table, so several coordinators in one
process (and one test) can contend for the same leases. Every call completes without
yielding to the event loop, so each compare-and-set is atomic by construction.
"""

from __future__ import annotations

import weakref

from kpl.consumer.errors import LeaseStoreError
from kpl.consumer.leases.base import Lease

__all__ = ["MemoryLeaseStore"]


class _Table:
    """The shared rows; kept alive by the stores that use it."""

    def __init__(self) -> None:
        self.rows: dict[str, Lease] = {}


# Named tables live while at least one store uses them, as an in-memory database would.
_TABLES: weakref.WeakValueDictionary[str, _Table] = weakref.WeakValueDictionary()


class MemoryLeaseStore:
    """A :class:`~kpl.consumer.leases.base.LeaseStore` in memory.

    ``name`` shares the table with every other open store of that name in this
    process; without one the table is private to this store.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        table = _TABLES.get(name) if name else None
        if table is None:
            table = _Table()
            if name:
                _TABLES[name] = table
        self._table: _Table | None = table

    def _rows(self) -> dict[str, Lease]:
        if self._table is None:
            raise LeaseStoreError("the memory lease store is closed")
        return self._table.rows

    async def initialize(self) -> None:
        """Nothing to create: the table exists from the start."""
        self._rows()

    async def list_leases(self) -> list[Lease]:
        """Every lease, in key order."""
        rows = self._rows()
        return [rows[key] for key in sorted(rows)]

    async def get_lease(self, lease_key: str) -> Lease | None:
        """One lease, or ``None``."""
        return self._rows().get(lease_key)

    async def create_lease(self, lease: Lease) -> bool:
        """Store ``lease`` unless its key exists."""
        rows = self._rows()
        if lease.lease_key in rows:
            return False
        rows[lease.lease_key] = lease
        return True

    async def replace_lease(self, lease: Lease, expected_counter: int) -> bool:
        """Store ``lease`` if the stored counter is ``expected_counter``."""
        rows = self._rows()
        stored = rows.get(lease.lease_key)
        if stored is None or stored.lease_counter != expected_counter:
            return False
        rows[lease.lease_key] = lease
        return True

    async def delete_lease(self, lease_key: str, expected_counter: int) -> bool:
        """Delete the lease if its counter is ``expected_counter``."""
        rows = self._rows()
        stored = rows.get(lease_key)
        if stored is None or stored.lease_counter != expected_counter:
            return False
        del rows[lease_key]
        return True

    async def close(self) -> None:
        """Stop using the table (it goes away with the last store using it)."""
        self._table = None
