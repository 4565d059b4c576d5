"""The bulk add: the records of one ``put_many()`` call into the core, per shard at once.

Theory of operation
-------------------
:func:`add_many` gives each record exactly what ``ProducerCore.add`` would give it, called
for each in turn: the same handle, sequence number, arrival, shard, aggregate and bytes.
What it saves is the per-record overhead around that work:

- the records are checked already (``kpl.core.admission.validate_many``), so no type,
  key or size test is repeated per record;
- every partition key is looked up in the core's key cache by one C-driven ``map``, and
  the records' sizes summed the same way; only keys missing from the cache go through
  the core's own lookup (MD5, binary search);
- records are grouped by predicted shard, so each group is appended to its shard's open
  aggregate in call order by one tight loop that keeps the aggregate's state in local
  variables and only encodes; the aggregate's columns (handles, arrivals, sequence
  numbers) are extended once per group, since within one call handles and sequence
  numbers follow the record's index and every record arrives at the same ``now``.

Whatever the loop does not take (no map or a map being refreshed, no predicted shard,
no open aggregate, a full one, a record or a key table beyond the precomputed field
headers) goes through the core's general routing as one record tuple, exactly as
``add()``'s slow path sends it; the loop then resumes with the shard's new aggregate.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import add, itemgetter
from struct import Struct, pack
from typing import TYPE_CHECKING

from kpl.protocol.aggregation import DATA_HEADERS as _DATA_HEADERS
from kpl.protocol.aggregation import PARTITION_KEY_INDEX_FIELDS as _INDEX_FIELDS
from kpl.protocol.aggregation import RECORD_HEADERS as _RECORD_HEADERS

if TYPE_CHECKING:
    from kpl.core.collector import Shard
    from kpl.core.pipeline import ProducerCore

__all__ = ["add_many"]

_key_bytes = itemgetter(0)
# An arrival in the layout of OpenAggregate.arrivals (array "d"); seqs are array "q".
_pack_double = Struct("d").pack
_shard_of = itemgetter(3)
# Key-cache entries: (UTF-8 bytes, hash key, key-table entry, predicted shard or None).
_KeyEntry = tuple[bytes, int, bytes, "Shard | None"]


def add_many(
    core: ProducerCore,
    datas: Sequence[bytes],
    keys: Sequence[str],
    first_handle: int,
    now: float,
    sizes: list[int] | None = None,
) -> None:
    """Buffer checked records without explicit hash keys: ``datas[i]`` (bytes) with
    partition key ``keys[i]`` (a valid str) gets handle ``first_handle + i``; ``sizes``
    (when given) holds each record's data + UTF-8 key bytes."""
    n = len(datas)
    if not n:
        return
    seq0 = core._seq
    core._seq = seq0 + n
    hits: list[_KeyEntry | None] = list(map(core._key_cache.get, keys))
    if None in hits:
        key_entry = core._key_entry
        for i, hit in enumerate(hits):
            if hit is None:
                hits[i] = key_entry(keys[i])
    entries: list[_KeyEntry] = hits  # type: ignore[assignment]
    if sizes is None:
        # Data + partition key bytes of each record (what the budget and the service count).
        sizes = list(map(add, map(len, datas), map(len, map(_key_bytes, entries))))
    core._sure_room = 0  # the records' room is taken without add()'s count
    core.buffered_records += n
    core.buffered_bytes += sum(sizes)
    if not core._fresh:
        route = core._route
        for i, (data, key, entry) in enumerate(zip(datas, keys, entries, strict=True)):
            route((data, key, None, entry[1], first_handle + i, now, seq0 + i + 1, sizes[i]),
                  now)
        return
    # Group by predicted shard, in call order within each (a dict of lists: measured
    # faster than a keyed sort for a few shards).
    runs: dict[Shard | None, list[int]] = {}
    get_run = runs.get
    for i, shard in enumerate(map(_shard_of, entries)):
        run = get_run(shard)
        if run is None:
            runs[shard] = [i]
        else:
            run.append(i)
    for shard, run in runs.items():
        _add_run(core, shard, run, datas, keys, entries, sizes, first_handle, seq0 + 1, now)


def _add_run(
    core: ProducerCore,
    shard: Shard | None,
    run: list[int],
    datas: Sequence[bytes],
    keys: Sequence[str],
    entries: list[_KeyEntry],
    sizes: list[int],
    first_handle: int,
    first_seq: int,
    now: float,
) -> None:
    """Records ``run`` (indexes in call order), all predicted for ``shard``."""
    route = core._route
    end = len(run)
    j = 0
    while j < end:
        agg = shard.agg if shard is not None else None
        if agg is None:
            i = run[j]
            route((datas[i], keys[i], None, entries[i][1], first_handle + i, now,
                   first_seq + i, sizes[i]), now)
            j += 1
            continue
        # The aggregate's state in locals; the same exact size arithmetic and the same
        # pieces as the core's add() fast path.
        pk_table = agg._pk_index
        pk_parts = agg._pk_parts
        parts = agg._parts
        size = agg.size
        limit = agg.max_size
        stop = min(end, j + agg.max_count - agg.count)
        k = j
        while k < stop:
            i = run[k]
            data = datas[i]
            length = len(data)
            key = keys[i]
            pk_index = pk_table.get(key)
            if pk_index is None:
                pk_index = len(pk_table)
                key_entry = entries[i][2]
                grow = len(key_entry)
            else:
                grow = 0
            body = 4 + length + (length >= 0x80) + (pk_index >= 0x80)
            new_size = size + grow + 2 + body + (body >= 0x80)
            if new_size > limit or length >= 0x3F00 or pk_index >= 0x4000:
                break
            if grow:
                pk_table[key] = pk_index
                pk_parts.append(key_entry)
            parts += (_RECORD_HEADERS[body], _INDEX_FIELDS[pk_index], _DATA_HEADERS[length],
                      data)
            size = new_size
            k += 1
        if k > j:
            taken = run[j:k]
            agg.size = size
            agg.count += k - j
            agg.user_bytes += sum(map(sizes.__getitem__, taken))
            agg.items.extend(map(add, taken, repeat(first_handle)))
            # The arrays' own extend() converts item by item; packed bytes go in at once.
            agg.arrivals.frombytes(_pack_double(now) * (k - j))
            agg.seqs.frombytes(pack(f"{k - j}q", *map(add, taken, repeat(first_seq))))
        if k < end:
            # Full, or beyond the fast path: the general routing seals and starts anew.
            i = run[k]
            route((datas[i], keys[i], None, entries[i][1], first_handle + i, now,
                   first_seq + i, sizes[i]), now)
            k += 1
        j = k
