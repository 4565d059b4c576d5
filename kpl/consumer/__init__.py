"""The reading side: user records back out of Kinesis records."""

from kpl.consumer.records import UserRecord, deaggregate, deaggregate_records

__all__ = ["UserRecord", "deaggregate", "deaggregate_records"]
