"""Lease stores behind one compare-and-set protocol: memory, sqlite, dynamodb.

:func:`open_lease_store` turns a lease store URL into a store:

- ``memory://NAME``: in this process; stores of the same NAME share a table (tests).
- ``sqlite:///PATH``: a SQLite file shared by the workers of one host (``sqlite:///x.db``
  is relative to the current directory, ``sqlite:////var/lib/x.db`` absolute).
- ``dynamodb://TABLE[?endpoint_url=URL&region=REGION]``: a DynamoDB table shared by a
  fleet, with the KCL's item schema; the endpoint otherwise follows botocore
  (``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL``, the region's default).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from kpl.consumer.errors import InvalidLeaseStoreURL, LeaseStoreError
from kpl.consumer.leases.base import Lease, LeaseStore
from kpl.consumer.leases.memory import MemoryLeaseStore

__all__ = ["Lease", "LeaseStore", "MemoryLeaseStore", "open_lease_store"]

# DynamoDB's rule for table names.
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def open_lease_store(url: str) -> LeaseStore:
    """The lease store ``url`` names; nothing is opened before ``initialize()``.

    Raises :class:`~kpl.consumer.errors.InvalidLeaseStoreURL` for a URL that names no
    store or names one wrongly.
    """
    parts = urlsplit(url)
    opener = _OPENERS.get(parts.scheme.lower())
    if opener is None:
        known = ", ".join(f"{scheme}://" for scheme in sorted(_OPENERS))
        raise InvalidLeaseStoreURL(url, f"the scheme must be one of {known}")
    if parts.fragment:
        raise InvalidLeaseStoreURL(url, "a lease store URL has no #fragment")
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        if parts.query:
            raise InvalidLeaseStoreURL(url, f"cannot parse the query {parts.query!r}") from None
        query = {}
    return opener(url, parts.netloc, parts.path, query)


def _no_query(url: str, query: dict[str, str], allowed: frozenset[str] = frozenset()) -> None:
    unknown = sorted(query.keys() - allowed)
    if unknown:
        hint = f" (known: {', '.join(sorted(allowed))})" if allowed else ""
        raise InvalidLeaseStoreURL(url, f"unknown parameter(s) {', '.join(unknown)}{hint}")


def _memory(url: str, netloc: str, path: str, query: dict[str, str]) -> LeaseStore:
    _no_query(url, query)
    if path not in ("", "/"):
        raise InvalidLeaseStoreURL(url, "write memory://NAME, with no path")
    return MemoryLeaseStore(netloc or None)


def _sqlite(url: str, netloc: str, path: str, query: dict[str, str]) -> LeaseStore:
    _no_query(url, query)
    if netloc:
        raise InvalidLeaseStoreURL(
            url, f"write sqlite:///PATH (three slashes); {netloc!r} reads as a host"
        )
    file = path[1:]
    if not file or file.endswith("/"):
        raise InvalidLeaseStoreURL(url, "no database file named after sqlite:///")
    from kpl.consumer.leases.sqlite import SQLiteLeaseStore

    return SQLiteLeaseStore(file)


def _dynamodb(url: str, netloc: str, path: str, query: dict[str, str]) -> LeaseStore:
    _no_query(url, query, frozenset({"endpoint_url", "region"}))
    if not _TABLE_NAME.fullmatch(netloc):
        raise InvalidLeaseStoreURL(
            url, "the table name must be 3-255 characters of A-Z a-z 0-9 _ . -"
        )
    if path not in ("", "/"):
        raise InvalidLeaseStoreURL(url, "write dynamodb://TABLE, with no path")
    endpoint_url = query.get("endpoint_url") or None
    if endpoint_url is not None and urlsplit(endpoint_url).scheme not in ("http", "https"):
        raise InvalidLeaseStoreURL(url, f"endpoint_url {endpoint_url!r} is not an http(s) URL")
    try:
        from kpl.consumer.leases.dynamodb import DynamoDBLeaseStore
    except ImportError as error:
        raise LeaseStoreError(
            f"the dynamodb:// lease store needs aiobotocore: pip install 'kpl[aws]' ({error})"
        ) from error
    return DynamoDBLeaseStore(netloc, endpoint_url=endpoint_url, region=query.get("region") or None)


_OPENERS: dict[str, Callable[[str, str, str, dict[str, str]], LeaseStore]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "dynamodb": _dynamodb,
}
