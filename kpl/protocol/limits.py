"""Published limits of Kinesis Data Streams, shared by the producer and the server.

Figures from the service model (botocore's ``kinesis/2013-12-02/service-2.json``) and
the service's documented quotas. Sizes are bytes; rates are per second.
"""

from __future__ import annotations

from typing import Final

KIB: Final = 1024
MIB: Final = 1024 * 1024

#: Partition keys are 1-256 Unicode characters.
MAX_PARTITION_KEY_LENGTH: Final = 256
#: Stream names are 1-128 characters of ``[a-zA-Z0-9_.-]``.
MAX_STREAM_NAME_LENGTH: Final = 128

#: A record's data (plus partition key) is at most 1 MiB unless the stream raised its
#: maximum record size (``UpdateMaxRecordSize``, 1024-10240 KiB).
DEFAULT_MAX_RECORD_SIZE: Final = 1 * MIB
MIN_MAX_RECORD_SIZE_KIB: Final = 1024
MAX_MAX_RECORD_SIZE_KIB: Final = 10240

#: PutRecords: 1-500 entries, at most 5 MiB (10 MiB once a stream allows larger records).
PUT_RECORDS_MAX_ENTRIES: Final = 500
PUT_RECORDS_MAX_BYTES: Final = 5 * MIB
PUT_RECORDS_MAX_BYTES_LARGE: Final = 10 * MIB

#: Per-shard write limits.
SHARD_WRITE_BYTES_PER_SECOND: Final = 1 * MIB
SHARD_WRITE_RECORDS_PER_SECOND: Final = 1000
#: Per-shard read limits.
SHARD_READ_BYTES_PER_SECOND: Final = 2 * MIB
SHARD_READ_CALLS_PER_SECOND: Final = 5
GET_RECORDS_MAX_LIMIT: Final = 10_000
GET_RECORDS_MAX_BYTES: Final = 10 * MIB
#: SubscribeToShard: one call a second per consumer and shard.
SUBSCRIBE_TO_SHARD_CALLS_PER_SECOND: Final = 1

#: Shard iterators expire after five minutes.
SHARD_ITERATOR_TTL_SECONDS: Final = 300.0

#: Retention: 24 hours by default, 24-8760 hours.
DEFAULT_RETENTION_HOURS: Final = 24
MIN_RETENTION_HOURS: Final = 24
MAX_RETENTION_HOURS: Final = 8760
