"""The reading side: a KCL-class consumer, and user records back out of Kinesis records."""

from kpl.consumer.checkpoints import PendingCheckpoint, PreparedCheckpoint
from kpl.consumer.consumer import Batch, Consumer, ConsumerConfig
from kpl.consumer.errors import ConsumerError, DuplicateWorkerId, LeaseLost
from kpl.consumer.hooks import ConsumerHooks, ShardStarted
from kpl.consumer.records import UserRecord, deaggregate, deaggregate_records

__all__ = [
    "Batch",
    "Consumer",
    "ConsumerConfig",
    "ConsumerError",
    "ConsumerHooks",
    "DuplicateWorkerId",
    "LeaseLost",
    "PendingCheckpoint",
    "PreparedCheckpoint",
    "ShardStarted",
    "UserRecord",
    "deaggregate",
    "deaggregate_records",
]
