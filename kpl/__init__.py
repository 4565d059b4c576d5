"""kpl: an asyncio producer library for Kinesis-style data streams.

``async with Producer("my-stream", endpoint_url=...) as producer:`` then
``future = await producer.put(data, partition_key=...)``; see :class:`Producer`.
``async with Consumer("my-stream", application="app", endpoint_url=...) as consumer:``
then ``async for batch in consumer: ...``; see :class:`Consumer`.
"""

from __future__ import annotations

from kpl import errors
from kpl.auth import Credentials, NoCredentialsError
from kpl.batch import BatchResult
from kpl.client import KinesisClient
from kpl.config import ProducerConfig
from kpl.consumer import (
    Batch,
    Consumer,
    ConsumerConfig,
    ConsumerError,
    ConsumerHooks,
    DuplicateWorkerId,
    LeaseLost,
    UserRecord,
    deaggregate,
    deaggregate_records,
)
from kpl.core.results import Attempt, RecordResult
from kpl.errors import (
    BufferFull,
    InvalidPartitionKey,
    KinesisError,
    NetworkError,
    ProducerClosed,
    ProvisionedThroughputExceededException,
    RecordExpired,
    RecordFailed,
    RecordTooLarge,
    RequestTimeout,
    ResourceNotFoundException,
    ValidationException,
)
from kpl.producer import Producer
from kpl.runner import run
from kpl.transport import AioHttpTransport, MockTransport, Transport

__all__ = [
    "AioHttpTransport",
    "Attempt",
    "Batch",
    "BatchResult",
    "BufferFull",
    "Consumer",
    "ConsumerConfig",
    "ConsumerError",
    "ConsumerHooks",
    "Credentials",
    "DuplicateWorkerId",
    "InvalidPartitionKey",
    "KinesisClient",
    "KinesisError",
    "LeaseLost",
    "MockTransport",
    "NetworkError",
    "NoCredentialsError",
    "Producer",
    "ProducerClosed",
    "ProducerConfig",
    "ProvisionedThroughputExceededException",
    "RecordExpired",
    "RecordFailed",
    "RecordResult",
    "RecordTooLarge",
    "RequestTimeout",
    "ResourceNotFoundException",
    "Transport",
    "UserRecord",
    "ValidationException",
    "deaggregate",
    "deaggregate_records",
    "errors",
    "run",
]
