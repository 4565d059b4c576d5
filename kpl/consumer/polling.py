"""Polling retrieval: one shard's records with GetShardIterator and GetRecords.

Calls are paced by :class:`~kpl.consumer.core.reading.ReadPacer` (the shard's 5 calls/s
and 2 MiB/s; at once when behind, ``idle_time_between_reads`` when caught up).
Throttles and retryable failures back off; an expired iterator is taken again from the
cursor's position (after the last Kinesis record received). The shard has ended when an
answer has no ``NextShardIterator``.
"""

from __future__ import annotations

from typing import Any

import anyio

from kpl.client import KinesisClient
from kpl.consumer.config import ConsumerConfig
from kpl.consumer.core.reading import ReadPacer, ShardCursor, StartingPosition
from kpl.consumer.retrieval import Deliver
from kpl.errors import (
    ExpiredIteratorException,
    KinesisError,
    ProvisionedThroughputExceededException,
)

__all__ = ["PollingRetrieval"]


class PollingRetrieval:
    """Reads shards of ``stream`` with GetRecords (a :class:`~kpl.consumer.retrieval.Retrieval`)."""

    def __init__(self, client: KinesisClient, stream: str, config: ConsumerConfig) -> None:
        self._client = client
        self.stream = stream
        self.config = config

    async def aclose(self) -> None:
        """Nothing to release: every call is over when ``read`` returns."""

    def metrics(self) -> dict[str, Any]:
        """The mode only (the readers count the rest)."""
        return {"mode": "polling"}

    async def _iterator(self, shard_id: str, position: StartingPosition) -> str:
        return await self._client.get_shard_iterator(
            self.stream,
            shard_id,
            position.iterator_type,
            starting_sequence_number=position.sequence_number,
            timestamp=position.timestamp,
        )

    async def read(self, cursor: ShardCursor, deliver: Deliver) -> None:
        """Read ``cursor``'s shard until its end, handing each answer to ``deliver``."""
        config = self.config
        shard_id = cursor.shard.shard_id
        pacer = ReadPacer(idle_time_between_reads=config.idle_time_between_reads)
        client = self._client
        iterator: str | None = None
        while True:
            delay = pacer.delay(anyio.current_time())
            if delay > 0:
                await anyio.sleep(delay)
            if iterator is None:
                try:
                    iterator = await self._iterator(shard_id, cursor.position)
                except ProvisionedThroughputExceededException:
                    pacer.on_throttled(anyio.current_time())
                    continue
                except KinesisError as error:
                    if not error.is_retryable:
                        raise
                    pacer.on_failure(anyio.current_time())
                    continue
            pacer.on_call(anyio.current_time())
            try:
                answer = await client.get_records(
                    iterator, cursor.limit(config.max_records), cbor=cursor.wants_cbor
                )
            except ProvisionedThroughputExceededException:
                pacer.on_throttled(anyio.current_time())
                continue
            except ExpiredIteratorException:
                iterator = None  # a new one from the last record received
                continue
            except KinesisError as error:
                if not error.is_retryable:
                    raise
                pacer.on_failure(anyio.current_time())
                continue
            raw = answer.get("Records") or []
            millis = int(answer.get("MillisBehindLatest") or 0)
            size = 0
            for record in raw:
                size += len(record["Data"])
            pacer.on_answer(anyio.current_time(), byte_count=size, millis_behind_latest=millis)
            await deliver(raw, size, millis)
            iterator = answer.get("NextShardIterator")
            if iterator is None:
                return
