"""Enhanced fan-out retrieval: a registered stream consumer and SubscribeToShard.

The application's workers share one stream consumer, named after the application
(:attr:`~kpl.consumer.ConsumerConfig.consumer_name` to choose another). Each worker finds
it or registers it when it starts: workers racing to register all end up with the one
that exists (a second registration is refused with ``ResourceInUseException`` and the
loser looks it up), and every worker waits until it is ACTIVE.

Each held shard is read through a chain of subscriptions kept by a
:class:`~kpl.consumer.core.subscribing.SubscriptionCursor`: started from the lease's
checkpoint, renewed from the last ``ContinuationSequenceNumber`` whenever the service ends
one (every five minutes), retried with back-off when refused (``ResourceInUseException``:
the previous holder's subscription is still live, as right after a lease changed hands)
or when it fails (an exception event, a dropped or silent connection, a damaged frame);
an event without a continuation is the shard's end. A consumer deregistered meanwhile is
registered again. Cancelling a read (a lost lease) closes its connection at once.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Final

import anyio

from kpl.client import KinesisClient
from kpl.consumer.config import ConsumerConfig
from kpl.consumer.core.reading import ShardCursor
from kpl.consumer.core.subscribing import SubscriptionCursor
from kpl.consumer.retrieval import Deliver
from kpl.errors import KinesisError, ResourceInUseException, ResourceNotFoundException
from kpl.transport import StreamingTransport

__all__ = ["FanOutRetrieval"]

logger = logging.getLogger("kpl.consumer")

#: How long registering (or finding) the stream consumer may take before it is an error.
REGISTER_TIMEOUT_S: Final = 120.0
#: Between two looks at a consumer that is not ACTIVE yet.
_STATUS_POLL_S: Final = 0.05
_STATUS_POLL_MAX_S: Final = 1.0
#: A subscription silent this long is taken for dead (the service sends an event at
#: least every few seconds, records or not).
READ_TIMEOUT_S: Final = 30.0


class FanOutRetrieval:
    """Reads shards of ``stream`` through SubscribeToShard (a
    :class:`~kpl.consumer.retrieval.Retrieval`)."""

    def __init__(
        self,
        client: KinesisClient,
        stream: str,
        config: ConsumerConfig,
        consumer_name: str,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self.stream = stream
        self.config = config
        self.consumer_name = consumer_name
        self._rng = rng if rng is not None else random.Random()
        self._arn: str | None = None
        self._lock = anyio.Lock()
        #: Subscriptions asked for, and those refused or failed.
        self.subscriptions = 0
        self.failures = 0
        #: The shards with a subscription open now.
        self.live: set[str] = set()

    @property
    def consumer_arn(self) -> str | None:
        """The stream consumer's ARN, once registered or found."""
        return self._arn

    async def aclose(self) -> None:
        """Nothing to release: the subscriptions close with their reads."""

    def metrics(self) -> dict[str, Any]:
        """The consumer's ARN, subscriptions asked for, refused or failed, open now."""
        return {
            "mode": "fanout",
            "consumer_arn": self._arn,
            "subscriptions": self.subscriptions,
            "failures": self.failures,
            "open": len(self.live),
        }

    async def register(self) -> str:
        """Find or register the stream consumer and wait until it is ACTIVE; its ARN.

        Raises ``TypeError`` at once when the client's transport cannot stream.
        """
        transport = self._client.transport
        if not isinstance(transport, StreamingTransport):
            raise TypeError(
                f"retrieval='fanout' needs a transport that streams (SubscribeToShard), "
                f"not {transport!r}"
            )
        async with self._lock:
            if self._arn is None:
                with anyio.fail_after(REGISTER_TIMEOUT_S):
                    self._arn = await self._find_or_register()
            return self._arn

    async def _consumer_gone(self, arn: str) -> bool:
        """Whether the consumer ``arn`` no longer exists (then it is registered again,
        once for all the shards that noticed)."""
        async with self._lock:
            if self._arn != arn:
                return True  # another shard's reader noticed first
            try:
                found = await self._client.describe_stream_consumer(consumer_arn=arn)
            except ResourceNotFoundException:
                found = {}
            if found.get("ConsumerStatus") == "ACTIVE":
                return False
            self._arn = None
        await self.register()
        return True

    async def _stream_arn(self) -> str:
        # Workers starting together share DescribeStreamSummary's account-wide rate:
        # a refusal is waited out, not fatal.
        pause = _STATUS_POLL_S
        while True:
            try:
                summary = await self._client.describe_stream_summary(self.stream)
            except KinesisError as error:
                if not error.is_retryable:
                    raise
            else:
                arn: str = summary["StreamARN"]
                return arn
            await anyio.sleep(pause * self._rng.uniform(0.5, 1.5))
            pause = min(_STATUS_POLL_MAX_S, pause * 2)

    async def _find_or_register(self) -> str:
        client = self._client
        stream_arn = await self._stream_arn()
        name = self.consumer_name
        pause = _STATUS_POLL_S
        while True:
            try:
                found = await client.describe_stream_consumer(
                    stream_arn=stream_arn, consumer_name=name
                )
            except ResourceNotFoundException:
                try:
                    found = await client.register_stream_consumer(stream_arn, name)
                except ResourceInUseException:
                    # Registered by another worker meanwhile (or the stream is being
                    # updated): look again.
                    found = {}
                except KinesisError as error:
                    if not error.is_retryable:
                        raise
                    found = {}
            except KinesisError as error:
                if not error.is_retryable:
                    raise
                found = {}
            if found.get("ConsumerStatus") == "ACTIVE":
                arn: str = found["ConsumerARN"]
                logger.info("stream consumer %s of %s is ACTIVE", name, self.stream)
                return arn
            # CREATING (wait), DELETING (it goes away, then is registered again), or a
            # retryable refusal.
            await anyio.sleep(pause)
            pause = min(_STATUS_POLL_MAX_S, pause * 2)

    async def read(self, cursor: ShardCursor, deliver: Deliver) -> None:
        """Read ``cursor``'s shard until its end through successive subscriptions."""
        shard_id = cursor.shard.shard_id
        position = SubscriptionCursor(cursor.position, rng=self._rng)
        client = self._client
        while True:
            delay = position.delay(anyio.current_time())
            if delay > 0:
                await anyio.sleep(delay)
            arn = await self.register()
            events = 0
            try:
                self.subscriptions += 1
                position.on_subscribe(anyio.current_time())
                async with client.subscribe_to_shard(
                    arn, shard_id, position.starting_position(), read_timeout=READ_TIMEOUT_S
                ) as stream:
                    self.live.add(shard_id)
                    async for event in stream:
                        events += 1
                        records = event.get("Records") or []
                        size = 0
                        for record in records:
                            size += len(record["Data"])
                        millis = int(event.get("MillisBehindLatest") or 0)
                        ended = position.on_event(event)
                        await deliver(records, size, millis)
                        if ended:
                            return
            except ResourceNotFoundException as error:
                # A deregistered consumer is registered again; a shard or stream that
                # is gone fails the read.
                if not await self._consumer_gone(arn):
                    raise
                self.failures += 1
                logger.warning("subscription to %s: %s; registering again", shard_id, error)
                position.on_failure(anyio.current_time())
                continue
            except KinesisError as error:
                if not error.is_retryable:
                    raise
                self.failures += 1
                level = logging.DEBUG if isinstance(error, ResourceInUseException) else logging.INFO
                logger.log(level, "subscription to %s: %s; subscribing again", shard_id, error)
                position.on_failure(anyio.current_time())
                continue
            finally:
                self.live.discard(shard_id)
            if events == 0:
                # Ended before its first event (taken over at once): not a busy loop.
                position.on_failure(anyio.current_time())
