"""A small async control-plane client: one method per Kinesis action we use.

Not a general SDK — the producer, the CLI and the tests need to create streams, read
shard maps, reshard and read records back. Every call goes through a
:class:`kpl.transport.Transport`, so errors arrive already translated into the
:mod:`kpl.errors` tree, and a :class:`~kpl.transport.MockTransport` can stand in.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import random
from binascii import a2b_base64
from collections.abc import AsyncIterator, Mapping
from typing import Any

import cbor2
import orjson

from kpl.auth import CredentialProvider, Credentials
from kpl.errors import KinesisError, MalformedResponse
from kpl.protocol.eventstream import EventStreamDecoder, EventStreamError, Message
from kpl.transport import (
    CBOR_CONTENT_TYPE,
    CONTENT_TYPE,
    AioHttpTransport,
    StreamingTransport,
    Transport,
)

__all__ = ["KinesisClient", "ShardRange"]

#: An open shard as the producer's shard map wants it: (shard id, first hash key, last).
ShardRange = tuple[str, int, int]


def _epoch_millis(value: Any, immutable: bool) -> Any:
    """CBOR tag 1 as the service writes it: epoch milliseconds, returned in seconds."""
    if type(value) is bool or not isinstance(value, int | float):
        raise ValueError("a CBOR timestamp (tag 1) must hold a number")
    return value / 1000.0


_CBOR_TAGS = {1: _epoch_millis}


class KinesisClient:
    """Async client for the Kinesis Data Streams control plane and simple reads/writes.

    ``async with KinesisClient("http://127.0.0.1:4567") as client: ...`` — or pass a
    ``transport`` (then closing the client closes that transport too, unless
    ``owns_transport=False``). With ``max_attempts > 1`` a call failing with a retryable
    error (throttling, 5xx, network) is tried again after a jittered exponential backoff
    starting at ``backoff`` seconds; a retried PutRecord may then be stored twice.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        *,
        region: str | None = None,
        credentials: Credentials | CredentialProvider | None = None,
        transport: Transport | None = None,
        owns_transport: bool = True,
        max_connections: int = 10,
        connect_timeout: float = 6.0,
        request_timeout: float = 30.0,
        max_attempts: int = 1,
        backoff: float = 0.05,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.backoff = backoff
        if transport is None:
            transport = AioHttpTransport(
                endpoint_url,
                region=region,
                credentials=credentials,
                max_connections=max_connections,
                connect_timeout=connect_timeout,
                request_timeout=request_timeout,
            )
        self.transport = transport
        self._owns_transport = owns_transport
        #: Whether the transport takes a content type (CBOR) besides JSON.
        self.speaks_cbor = "content_type" in inspect.signature(transport.call).parameters

    async def __aenter__(self) -> KinesisClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the transport (when this client owns it)."""
        if self._owns_transport:
            await self.transport.close()

    # ------------------------------------------------------------------ generic

    async def call(self, action: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Invoke ``action`` with a JSON payload; return the parsed answer ({} if empty)."""
        body = await self._send(action, orjson.dumps(payload or {}), CONTENT_TYPE)
        if not body:
            return {}
        answer = orjson.loads(body)
        if not isinstance(answer, dict):
            raise TypeError(f"{action} answered with JSON {type(answer).__name__}, not an object")
        return answer

    async def call_cbor(
        self, action: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Invoke ``action`` in CBOR 1.1: blobs come back as bytes, timestamps (tag 1,
        epoch milliseconds) as epoch seconds; return the parsed answer ({} if empty)."""
        body = await self._send(action, cbor2.dumps(payload or {}), CBOR_CONTENT_TYPE)
        if not body:
            return {}
        try:
            answer = cbor2.loads(body, semantic_decoders=_CBOR_TAGS)
        except (cbor2.CBORDecodeError, ValueError, RecursionError, OverflowError) as error:
            raise TypeError(f"{action} answered with CBOR that does not parse: {error}") from None
        if not isinstance(answer, dict):
            raise TypeError(f"{action} answered with CBOR {type(answer).__name__}, not a map")
        return answer

    async def _send(self, action: str, body_out: bytes, content_type: str) -> bytes:
        """The answer's body, after retries as configured."""
        attempt = 1
        while True:
            try:
                if content_type == CONTENT_TYPE:
                    return await self.transport.call(action, body_out)
                return await self.transport.call(action, body_out, content_type)
            except KinesisError as error:
                if attempt >= self.max_attempts or not error.is_retryable:
                    raise
            # Full jitter: spreads concurrent callers (the AWS SDKs' standard mode).
            await asyncio.sleep(random.uniform(0, self.backoff * 2 ** (attempt - 1)))
            attempt += 1

    # ------------------------------------------------------------------ streams

    async def create_stream(
        self, stream_name: str, shard_count: int | None = 1, *, on_demand: bool = False
    ) -> None:
        """CreateStream: provisioned with ``shard_count`` shards, or on-demand."""
        payload: dict[str, Any] = {"StreamName": stream_name}
        if on_demand:
            payload["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
        else:
            if shard_count is None or shard_count < 1:
                raise ValueError(f"shard_count must be at least 1, got {shard_count}")
            payload["ShardCount"] = shard_count
        await self.call("CreateStream", payload)

    async def describe_stream_summary(
        self, stream_name: str, *, stream_arn: str | None = None
    ) -> dict[str, Any]:
        """DescribeStreamSummary's ``StreamDescriptionSummary`` (by ARN when given)."""
        payload = {"StreamARN": stream_arn} if stream_arn else {"StreamName": stream_name}
        answer = await self.call("DescribeStreamSummary", payload)
        summary: dict[str, Any] = answer["StreamDescriptionSummary"]
        return summary

    async def wait_for_active(self, stream_name: str, *, interval: float = 0.05) -> dict[str, Any]:
        """Poll until the stream is ACTIVE and return its summary.

        Bound the wait with ``async with asyncio.timeout(...)`` around the call.
        """
        while True:
            summary = await self.describe_stream_summary(stream_name)
            if summary.get("StreamStatus") == "ACTIVE":
                return summary
            # Polling a remote state: there is nothing to await but time.
            await asyncio.sleep(interval)

    async def delete_stream(
        self, stream_name: str, *, enforce_consumer_deletion: bool = False
    ) -> None:
        """DeleteStream."""
        payload: dict[str, Any] = {"StreamName": stream_name}
        if enforce_consumer_deletion:
            payload["EnforceConsumerDeletion"] = True
        await self.call("DeleteStream", payload)

    async def list_shards(
        self, stream_name: str, *, open_only: bool = True, stream_arn: str | None = None
    ) -> list[dict[str, Any]]:
        """Every shard of the stream (following NextToken); only open ones by default.

        A shard is open when its ``SequenceNumberRange`` has no ``EndingSequenceNumber``.
        """
        shards: list[dict[str, Any]] = []
        payload: dict[str, Any] = (
            {"StreamARN": stream_arn} if stream_arn else {"StreamName": stream_name}
        )
        while True:
            answer = await self.call("ListShards", payload)
            shards.extend(answer.get("Shards", ()))
            token = answer.get("NextToken")
            if not token:
                break
            # With a NextToken the stream must not be named again.
            payload = {"NextToken": token}
        if open_only:
            shards = [
                s for s in shards if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
            ]
        return shards

    async def shard_ranges(
        self, stream_name: str, *, stream_arn: str | None = None
    ) -> list[ShardRange]:
        """The open shards as (shard id, starting hash key, ending hash key), sorted."""
        shards = await self.list_shards(stream_name, stream_arn=stream_arn)
        ranges = [
            (
                s["ShardId"],
                int(s["HashKeyRange"]["StartingHashKey"]),
                int(s["HashKeyRange"]["EndingHashKey"]),
            )
            for s in shards
        ]
        ranges.sort(key=lambda r: r[1])
        return ranges

    # ------------------------------------------------------------------ records

    async def put_record(
        self,
        stream_name: str,
        data: bytes,
        partition_key: str,
        explicit_hash_key: str | None = None,
    ) -> dict[str, Any]:
        """PutRecord: ``{"ShardId", "SequenceNumber", ...}``."""
        payload: dict[str, Any] = {
            "StreamName": stream_name,
            "Data": base64.b64encode(data).decode("ascii"),
            "PartitionKey": partition_key,
        }
        if explicit_hash_key is not None:
            payload["ExplicitHashKey"] = explicit_hash_key
        return await self.call("PutRecord", payload)

    async def get_shard_iterator(
        self,
        stream_name: str,
        shard_id: str,
        iterator_type: str = "TRIM_HORIZON",
        *,
        starting_sequence_number: str | None = None,
        timestamp: float | None = None,
    ) -> str:
        """GetShardIterator: the iterator string."""
        payload: dict[str, Any] = {
            "StreamName": stream_name,
            "ShardId": shard_id,
            "ShardIteratorType": iterator_type,
        }
        if starting_sequence_number is not None:
            payload["StartingSequenceNumber"] = starting_sequence_number
        if timestamp is not None:
            payload["Timestamp"] = timestamp
        answer = await self.call("GetShardIterator", payload)
        iterator: str = answer["ShardIterator"]
        return iterator

    async def get_records(
        self, shard_iterator: str, limit: int | None = None, *, cbor: bool = False
    ) -> dict[str, Any]:
        """GetRecords, with each record's ``Data`` as bytes.

        With ``cbor`` the call goes in CBOR 1.1 (when the transport :attr:`speaks_cbor`),
        whose answer carries ``Data`` as raw bytes: no base64 to decode and a quarter
        fewer bytes to receive, which is what large records (KPL aggregates) gain from.
        For small records JSON parses faster.
        """
        payload: dict[str, Any] = {"ShardIterator": shard_iterator}
        if limit is not None:
            payload["Limit"] = limit
        if cbor and self.speaks_cbor:
            answer = await self.call_cbor("GetRecords", payload)
            for record in answer.get("Records", ()):
                if not isinstance(record.get("Data"), bytes):
                    raise TypeError("GetRecords answered in CBOR with a record without byte Data")
            return answer
        answer = await self.call("GetRecords", payload)
        for record in answer.get("Records", ()):
            # Lenient like base64.b64decode (the service sends padded standard base64).
            record["Data"] = a2b_base64(record["Data"])
        return answer

    async def read_shard(
        self, stream_name: str, shard_id: str, *, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Every record in the shard from TRIM_HORIZON up to now (until a call is empty
        at the tip, or the closed shard's end)."""
        iterator: str | None = await self.get_shard_iterator(stream_name, shard_id)
        records: list[dict[str, Any]] = []
        while iterator:
            answer = await self.get_records(iterator, limit)
            got = answer.get("Records", [])
            records.extend(got)
            iterator = answer.get("NextShardIterator")
            if not got and answer.get("MillisBehindLatest", 0) == 0:
                break
        return records

    # ------------------------------------------------------------------ resharding

    async def split_shard(
        self, stream_name: str, shard_id: str, new_starting_hash_key: int | str
    ) -> None:
        """SplitShard at ``new_starting_hash_key``."""
        await self.call(
            "SplitShard",
            {
                "StreamName": stream_name,
                "ShardToSplit": shard_id,
                "NewStartingHashKey": str(new_starting_hash_key),
            },
        )

    async def merge_shards(self, stream_name: str, shard_id: str, adjacent_shard_id: str) -> None:
        """MergeShards of two adjacent shards."""
        await self.call(
            "MergeShards",
            {
                "StreamName": stream_name,
                "ShardToMerge": shard_id,
                "AdjacentShardToMerge": adjacent_shard_id,
            },
        )

    async def update_shard_count(
        self, stream_name: str, target_shard_count: int, scaling_type: str = "UNIFORM_SCALING"
    ) -> dict[str, Any]:
        """UpdateShardCount: ``{"CurrentShardCount", "TargetShardCount", ...}``."""
        return await self.call(
            "UpdateShardCount",
            {
                "StreamName": stream_name,
                "TargetShardCount": target_shard_count,
                "ScalingType": scaling_type,
            },
        )

    # ------------------------------------------------------------------ enhanced fan-out

    async def register_stream_consumer(
        self, stream_arn: str, consumer_name: str
    ) -> dict[str, Any]:
        """RegisterStreamConsumer: the ``Consumer`` (name, ARN, status, creation time)."""
        answer = await self.call(
            "RegisterStreamConsumer", {"StreamARN": stream_arn, "ConsumerName": consumer_name}
        )
        consumer: dict[str, Any] = answer["Consumer"]
        return consumer

    async def describe_stream_consumer(
        self,
        *,
        consumer_arn: str | None = None,
        stream_arn: str | None = None,
        consumer_name: str | None = None,
    ) -> dict[str, Any]:
        """DescribeStreamConsumer (by ARN, or by stream ARN and name): its description."""
        payload = _consumer_payload(consumer_arn, stream_arn, consumer_name)
        answer = await self.call("DescribeStreamConsumer", payload)
        description: dict[str, Any] = answer["ConsumerDescription"]
        return description

    async def deregister_stream_consumer(
        self,
        *,
        consumer_arn: str | None = None,
        stream_arn: str | None = None,
        consumer_name: str | None = None,
    ) -> None:
        """DeregisterStreamConsumer (by ARN, or by stream ARN and name)."""
        payload = _consumer_payload(consumer_arn, stream_arn, consumer_name)
        await self.call("DeregisterStreamConsumer", payload)

    @contextlib.asynccontextmanager
    async def subscribe_to_shard(
        self,
        consumer_arn: str,
        shard_id: str,
        starting_position: Mapping[str, Any],
        *,
        read_timeout: float = 30.0,
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """SubscribeToShard: yields the subscription's ``SubscribeToShardEvent`` payloads
        (each record's ``Data`` decoded to bytes) until the service ends it.

        Refusals (``ResourceInUseException``, ...) raise before anything is yielded; an
        exception message in the stream raises its :class:`KinesisError` where it comes;
        a damaged stream raises :class:`~kpl.errors.MalformedResponse`. Needs a
        :class:`~kpl.transport.StreamingTransport` (the default transport is one).
        """
        transport = self.transport
        if not isinstance(transport, StreamingTransport):
            raise TypeError(f"SubscribeToShard needs a streaming transport, not {transport!r}")
        body = orjson.dumps({
            "ConsumerARN": consumer_arn,
            "ShardId": shard_id,
            "StartingPosition": dict(starting_position),
        })
        async with transport.stream("SubscribeToShard", body, read_timeout=read_timeout) as raw:
            yield _subscription_events(raw)


async def _subscription_events(raw: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The ``SubscribeToShardEvent`` payloads of a SubscribeToShard answer's chunks."""
    decoder = EventStreamDecoder()
    first = True
    async for chunk in raw:
        try:
            messages = decoder.feed(chunk)
        except EventStreamError as error:
            raise MalformedResponse(f"SubscribeToShard: {error}") from error
        for message in messages:
            event = _event(message, first)
            first = False
            if event is not None:
                yield event
    if decoder.pending:
        raise MalformedResponse(
            f"SubscribeToShard: the stream ended inside a message ({decoder.pending} bytes "
            "of it received)"
        )


def _event(message: Message, first: bool) -> dict[str, Any] | None:
    """One message's event payload; ``None`` for the initial response and unknown events."""
    headers = message.headers
    kind = headers.get(":message-type")
    if kind == "exception" or kind == "error":
        code = headers.get(":exception-type", headers.get(":error-code"))
        text = ""
        try:
            parsed = orjson.loads(message.payload) if message.payload else {}
        except orjson.JSONDecodeError:
            parsed = {}
        if isinstance(parsed, dict):
            text = str(parsed.get("message", parsed.get("Message", "")))
        raise KinesisError.for_code(str(code or "InternalFailure"), text or str(code))
    event_type = headers.get(":event-type")
    if first:
        if event_type != "initial-response":
            raise MalformedResponse(
                f"SubscribeToShard: the first event is {event_type!r}, not initial-response"
            )
        return None
    if event_type != "SubscribeToShardEvent":
        return None
    try:
        payload = orjson.loads(message.payload)
        for record in payload.get("Records", ()):
            record["Data"] = base64.b64decode(record["Data"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise MalformedResponse(f"SubscribeToShard: an unreadable event ({error})") from error
    if not isinstance(payload, dict):
        raise MalformedResponse("SubscribeToShard: an event that is not a JSON object")
    return payload


def _consumer_payload(
    consumer_arn: str | None, stream_arn: str | None, consumer_name: str | None
) -> dict[str, Any]:
    """A stream consumer named by its ARN, or by its stream's ARN and its name."""
    payload: dict[str, Any] = {}
    if consumer_arn is not None:
        payload["ConsumerARN"] = consumer_arn
    if stream_arn is not None:
        payload["StreamARN"] = stream_arn
    if consumer_name is not None:
        payload["ConsumerName"] = consumer_name
    return payload
