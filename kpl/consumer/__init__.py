"""The reading side: a KCL-class consumer, and user records back out of Kinesis records."""

from kpl.consumer.consumer import Batch, Consumer, ConsumerConfig
from kpl.consumer.errors import ConsumerError, LeaseLost
from kpl.consumer.records import UserRecord, deaggregate, deaggregate_records

__all__ = [
    "Batch",
    "Consumer",
    "ConsumerConfig",
    "ConsumerError",
    "LeaseLost",
    "UserRecord",
    "deaggregate",
    "deaggregate_records",
]
