"""The action registry: every action the service models, and what each one is.

One :class:`Action` per action, in :data:`ACTIONS`, is the only place an action's facts
are written down; every other part of the server reads them from here:

* ``handler``: the engine part and method that answers it (``"records.put_record"``),
  read by ``Engine`` to build its dispatch; ``None`` for an action the service models
  but this server does not answer (the web layer answers ``UnknownOperationException``,
  as for a target the service does not know).
* ``input``: its input shape, members in the model's order, read by ``validation``;
  ``validates_itself`` marks a handler that takes the parsed body and validates it only
  when its own quick checks are in doubt (PutRecords' hot path).
* ``durable``: its effect must be on stable storage before the answer (the web layer
  awaits the storage's group commit).
* ``read_only``: it changes nothing a client can observe.
* ``category``: CloudTrail's ``eventCategory``, ``Data`` for PutRecord, PutRecords,
  GetRecords, GetShardIterator and SubscribeToShard, ``Management`` for every other
  action (the control plane).
* ``control_rate``: the published call rate, read by ``throughput``.
* ``iam_action``: the IAM action name a policy uses (``kinesis:PutRecords``).

Control-plane calls (management events) are counted against their ``control_rate`` by the
engine before they run; a data call's rate, if it has one, is applied by the part that
knows its key (GetShardIterator: per shard, once the shard is known, answered with
``ProvisionedThroughputExceededException``). The rates are the ones the service model
documents for each operation (botocore ``data/kinesis/2013-12-02/service-2.json``,
operation documentation), not scaled by ``--limits-scale``:

=====================  ========  =========  ==============================================
action                 per sec.  scope      model text
=====================  ========  =========  ==============================================
CreateStream           5         account    "limit of five transactions per second per account"
DeleteStream           5         account    same
ListStreams            5         account    same
SplitShard             5         account    same
MergeShards            5         account    same
AddTagsToStream        5         account    same
RemoveTagsFromStream   5         account    same
ListTagsForStream      5         account    same
DescribeStream         10        account    "limit of 10 transactions per second per account"
UpdateShardCount       10        account    "Make over 10 TPS. TPS over 10 will trigger ..."
DescribeStreamSummary  20        account    "limit of 20 transactions per second per account"
ListShards             1000      stream     "limit of 1000 transactions per second per data
                                            stream" (older docs said 100; the model wins)
DescribeLimits         1         account    "limit of one transaction per second per account"
GetShardIterator       5         shard      "limit of five transactions per second per
                                            account per open shard"
RegisterStreamConsumer 5         account    "limit of five transactions per second per
                                            account"
DeregisterStreamCons.  5         stream     "limit of five transactions per second per
                                            stream"
DescribeStreamConsumer 20        stream     "limit of 20 transactions per second per stream"
ListStreamConsumers    5         stream     "limit of 5 transactions per second per stream"
SubscribeToShard       1         consumer,  "one call to SubscribeToShard per second per
                                 shard      registered consumer per shard"
=====================  ========  =========  ==============================================

Retention and max-record-size updates, encryption, stream mode, enhanced monitoring and
resource policies document no call rate (encryption documents 25 changes per rolling
24 hours, which this server does not count) and are not limited; nor are the actions
this server does not answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from server.core.shapes import (
    ARN_ID_MEMBERS,
    BOOLEAN,
    CONSUMER_ARN,
    CONSUMER_NAME,
    DATA,
    DRY_RUN_MEMBERS,
    HASH_KEY,
    LIST_SHARDS_STREAM,
    MAX_RECORD_SIZE_KIB,
    NEXT_TOKEN,
    PARTITION_KEY,
    RESOURCE_ARN,
    SEQUENCE_NUMBER,
    SHARD_ID,
    SHARD_LEVEL_METRICS,
    STREAM_ARN,
    STREAM_ID,
    STREAM_MEMBERS,
    STREAM_NAME,
    TAG_KEY,
    TAG_MAP,
    TIMESTAMP,
    Shape,
    integer,
    structure,
    text,
)

__all__ = [
    "ACCOUNT",
    "ACTIONS",
    "BY_TARGET",
    "STREAM",
    "TARGET_PREFIX",
    "Action",
    "ControlRate",
    "EventCategory",
]

#: ``X-Amz-Target`` is this prefix plus the action name.
TARGET_PREFIX: Final = "Kinesis_20131202."
#: A control rate counted once for the whole account.
ACCOUNT: Final = "account"
#: A control rate counted per stream (or per ``"<stream>/<shard id>"`` key).
STREAM: Final = "stream"


#: How the consumer actions but Register and List name a consumer: by ARN, or by stream
#: ARN and name (the engine refuses neither).
CONSUMER_REF = structure(
    ("StreamARN", STREAM_ARN), ("ConsumerName", CONSUMER_NAME), ("ConsumerARN", CONSUMER_ARN),
    ("StreamId", STREAM_ID),
)

#: Start/StopStreamEncryption's input.
ENCRYPTION = structure(
    *STREAM_MEMBERS,
    ("EncryptionType", Shape("string", required=True, enum=("NONE", "KMS"))),
    ("KeyId", text(1, 2048).req()),
    *ARN_ID_MEMBERS,
)
#: Enable/DisableEnhancedMonitoring's input.
MONITORING = structure(
    *STREAM_MEMBERS, ("ShardLevelMetrics", SHARD_LEVEL_METRICS), *ARN_ID_MEMBERS
)


class EventCategory(StrEnum):
    """CloudTrail's ``eventCategory`` of an action's events."""

    DATA = "Data"
    MANAGEMENT = "Management"


@dataclass(frozen=True, slots=True)
class ControlRate:
    """A control-plane call rate: ``per_second`` calls, counted per account or per stream."""

    per_second: float
    scope: str = ACCOUNT


@dataclass(frozen=True, slots=True)
class Action:
    """What the server knows of one action (see the module docstring for who reads what)."""

    name: str
    """The operation name, as in ``X-Amz-Target`` after the prefix."""
    read_only: bool
    """True when the action changes nothing a client can observe."""
    durable: bool
    """True when its effect must reach stable storage before the answer."""
    category: EventCategory = EventCategory.MANAGEMENT
    """CloudTrail's ``eventCategory``: ``Data`` for record traffic, else ``Management``."""
    handler: str | None = None
    """``"<engine part>.<method>"`` answering the action; ``None``: not answered."""
    input: Shape | None = None
    """The request's shape, for validation; ``None`` for an action not answered."""
    control_rate: ControlRate | None = None
    """The published call rate, or ``None`` when this server does not limit it."""
    validates_itself: bool = False
    """The handler gets the parsed body unvalidated (it runs validation when in doubt)."""
    validated_handler: str | None = None
    """For an action that validates itself: the method taking a request validated
    elsewhere (``Engine.validate``)."""
    iam_action: str = field(init=False)
    """The IAM action a policy names to allow or deny the call (``kinesis:PutRecords``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "iam_action", f"kinesis:{self.name}")

    @property
    def target(self) -> str:
        """The ``X-Amz-Target`` header value naming this action."""
        return TARGET_PREFIX + self.name

    @property
    def implemented(self) -> bool:
        """True when the engine answers this action."""
        return self.handler is not None

    @property
    def control_plane(self) -> bool:
        """True for management calls: rate-limited by the engine before they run."""
        return self.category is EventCategory.MANAGEMENT


def _read(
    name: str,
    handler: str | None = None,
    *,
    input: Shape | None = None,
    category: EventCategory = EventCategory.MANAGEMENT,
    control_rate: ControlRate | None = None,
) -> Action:
    """An action that changes nothing, so has nothing to make durable."""
    return Action(
        name, read_only=True, durable=False, category=category, handler=handler,
        input=input, control_rate=control_rate,
    )


def _write(
    name: str,
    handler: str | None = None,
    *,
    input: Shape | None = None,
    category: EventCategory = EventCategory.MANAGEMENT,
    control_rate: ControlRate | None = None,
    validates_itself: bool = False,
    validated_handler: str | None = None,
) -> Action:
    """An action that changes state, durable before its answer."""
    return Action(
        name, read_only=False, durable=True, category=category, handler=handler,
        input=input, control_rate=control_rate, validates_itself=validates_itself,
        validated_handler=validated_handler,
    )


_TABLE: tuple[Action, ...] = (
    # -- answered: streams, tags, retention, limits (server.core.control) --------------
    _write(
        "CreateStream", "control.create_stream", control_rate=ControlRate(5),
        input=structure(
            ("StreamName", STREAM_NAME.req()),
            ("ShardCount", integer(1)),
            ("StreamModeDetails", structure(
                ("StreamMode", Shape("string", required=True, enum=("PROVISIONED", "ON_DEMAND"))),
            )),
            ("Tags", TAG_MAP),
            ("WarmThroughputMiBps", integer(0)),
            ("MaxRecordSizeInKiB", MAX_RECORD_SIZE_KIB),
            ("RecordDistributionStrategy", Shape("string", enum=("AUTO", "USER_PARTITION_KEY"))),
        ),
    ),
    _write(
        "DeleteStream", "control.delete_stream", control_rate=ControlRate(5),
        input=structure(*STREAM_MEMBERS, ("EnforceConsumerDeletion", BOOLEAN), *ARN_ID_MEMBERS),
    ),
    _read(
        "DescribeStream", "control.describe_stream", control_rate=ControlRate(10),
        input=structure(
            *STREAM_MEMBERS, ("Limit", integer(1, 10000)), ("ExclusiveStartShardId", SHARD_ID),
            *ARN_ID_MEMBERS,
        ),
    ),
    _read(
        "DescribeStreamSummary", "control.describe_stream_summary", control_rate=ControlRate(20),
        input=structure(*STREAM_MEMBERS, *ARN_ID_MEMBERS),
    ),
    _read(
        "ListStreams", "control.list_streams", control_rate=ControlRate(5),
        input=structure(
            ("Limit", integer(1, 10000)), ("ExclusiveStartStreamName", STREAM_NAME),
            ("NextToken", NEXT_TOKEN),
        ),
    ),
    _read(
        "ListShards", "control.list_shards", control_rate=ControlRate(1000, STREAM),
        input=structure(
            ("StreamName", LIST_SHARDS_STREAM),
            ("NextToken", NEXT_TOKEN),
            ("ExclusiveStartShardId", SHARD_ID),
            ("MaxResults", integer(1, 10000)), ("StreamCreationTimestamp", TIMESTAMP),
            ("ShardFilter", structure(
                ("Type", Shape("string", required=True, enum=(
                    "AFTER_SHARD_ID", "AT_TRIM_HORIZON", "FROM_TRIM_HORIZON", "AT_LATEST",
                    "AT_TIMESTAMP", "FROM_TIMESTAMP",
                ))),
                ("ShardId", SHARD_ID),
                ("Timestamp", TIMESTAMP),
            )),
            *ARN_ID_MEMBERS,
        ),
    ),
    _write(
        "AddTagsToStream", "control.add_tags_to_stream", control_rate=ControlRate(5),
        input=structure(*STREAM_MEMBERS, ("Tags", TAG_MAP.req()), *ARN_ID_MEMBERS),
    ),
    _write(
        "RemoveTagsFromStream", "control.remove_tags_from_stream", control_rate=ControlRate(5),
        input=structure(
            *STREAM_MEMBERS,
            ("TagKeys", Shape("list", required=True, min=1, max=50, member=TAG_KEY)),
            *ARN_ID_MEMBERS,
        ),
    ),
    _read(
        "ListTagsForStream", "control.list_tags_for_stream", control_rate=ControlRate(5),
        input=structure(
            *STREAM_MEMBERS, ("ExclusiveStartTagKey", TAG_KEY), ("Limit", integer(1, 50)),
            *ARN_ID_MEMBERS,
        ),
    ),
    _write(
        "IncreaseStreamRetentionPeriod", "control.increase_stream_retention_period",
        input=structure(
            *STREAM_MEMBERS, ("RetentionPeriodHours", integer().req()), *ARN_ID_MEMBERS
        ),
    ),
    _write(
        "DecreaseStreamRetentionPeriod", "control.decrease_stream_retention_period",
        input=structure(
            *STREAM_MEMBERS, ("RetentionPeriodHours", integer().req()), *ARN_ID_MEMBERS
        ),
    ),
    _read(
        "DescribeLimits", "control.describe_limits", control_rate=ControlRate(1),
        input=structure(),
    ),
    _write(
        "UpdateMaxRecordSize", "control.update_max_record_size",
        input=structure(*ARN_ID_MEMBERS, ("MaxRecordSizeInKiB", MAX_RECORD_SIZE_KIB.req())),
    ),
    # -- answered: record writes and reads (server.core.records) -----------------------
    _write(
        "PutRecord", "records.put_record", category=EventCategory.DATA,
        input=structure(
            *STREAM_MEMBERS, ("Data", DATA.req()), ("PartitionKey", PARTITION_KEY.req()),
            ("ExplicitHashKey", HASH_KEY), ("SequenceNumberForOrdering", SEQUENCE_NUMBER),
            *ARN_ID_MEMBERS, *DRY_RUN_MEMBERS,
        ),
    ),
    _write(
        "PutRecords", "records.put_records_raw", category=EventCategory.DATA, validates_itself=True,
        validated_handler="records.put_records",
        input=structure(
            ("Records", Shape("list", required=True, min=1, max=500, member=structure(
                ("Data", DATA.req()), ("ExplicitHashKey", HASH_KEY),
                ("PartitionKey", PARTITION_KEY.req()),
                member_str="com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry",
            ))),
            *STREAM_MEMBERS, *ARN_ID_MEMBERS, *DRY_RUN_MEMBERS,
        ),
    ),
    _read(
        "GetShardIterator", "records.get_shard_iterator", category=EventCategory.DATA,
        # Keyed "<stream>/<shard id>" by the records part: per shard.
        control_rate=ControlRate(5, STREAM),
        input=structure(
            *STREAM_MEMBERS, ("ShardId", SHARD_ID.req()),
            ("ShardIteratorType", Shape("string", required=True, enum=(
                "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON", "LATEST",
                "AT_TIMESTAMP",
            ))),
            ("StartingSequenceNumber", SEQUENCE_NUMBER), ("Timestamp", TIMESTAMP), *ARN_ID_MEMBERS,
            *DRY_RUN_MEMBERS,
        ),
    ),
    _read(
        "GetRecords", "records.get_records", category=EventCategory.DATA,
        input=structure(
            ("ShardIterator", text(1, 512).req()), ("Limit", integer(1, 10000)), *ARN_ID_MEMBERS,
            *DRY_RUN_MEMBERS,
        ),
    ),
    # -- answered: resharding (server.core.resharder) -----------------------------------
    _write(
        "SplitShard", "resharding.split_shard", control_rate=ControlRate(5),
        input=structure(
            *STREAM_MEMBERS, ("ShardToSplit", SHARD_ID.req()),
            ("NewStartingHashKey", HASH_KEY.req()),
            *ARN_ID_MEMBERS,
        ),
    ),
    _write(
        "MergeShards", "resharding.merge_shards", control_rate=ControlRate(5),
        input=structure(
            *STREAM_MEMBERS, ("ShardToMerge", SHARD_ID.req()),
            ("AdjacentShardToMerge", SHARD_ID.req()),
            *ARN_ID_MEMBERS,
        ),
    ),
    _write(
        "UpdateShardCount", "resharding.update_shard_count", control_rate=ControlRate(10),
        input=structure(
            *STREAM_MEMBERS, ("TargetShardCount", integer(1).req()),
            ("ScalingType", Shape("string", required=True, enum=("UNIFORM_SCALING",))),
            *ARN_ID_MEMBERS,
        ),
    ),
    # -- answered: enhanced fan-out (server.core.consumers) ------------------------------
    _write(
        "RegisterStreamConsumer", "consumers.register_stream_consumer",
        control_rate=ControlRate(5),
        input=structure(
            ("StreamARN", STREAM_ARN.req()), ("ConsumerName", CONSUMER_NAME.req()),
            ("StreamId", STREAM_ID), ("Tags", TAG_MAP),
        ),
    ),
    _write(
        "DeregisterStreamConsumer", "consumers.deregister_stream_consumer",
        control_rate=ControlRate(5, STREAM), input=CONSUMER_REF,
    ),
    _read(
        "DescribeStreamConsumer", "consumers.describe_stream_consumer",
        control_rate=ControlRate(20, STREAM), input=CONSUMER_REF,
    ),
    _read(
        "ListStreamConsumers", "consumers.list_stream_consumers",
        control_rate=ControlRate(5, STREAM),
        input=structure(
            ("StreamARN", STREAM_ARN.req()), ("NextToken", NEXT_TOKEN),
            ("MaxResults", integer(1, 10000)), ("StreamCreationTimestamp", TIMESTAMP),
            ("StreamId", STREAM_ID),
        ),
    ),
    _read(
        "SubscribeToShard", "consumers.subscribe_to_shard", category=EventCategory.DATA,
        # Keyed "<stream>/<consumer ARN>/<shard id>" by the consumers part.
        control_rate=ControlRate(1, STREAM),
        input=structure(
            ("ConsumerARN", CONSUMER_ARN.req()), ("StreamId", STREAM_ID),
            ("ShardId", SHARD_ID.req()),
            ("StartingPosition", structure(
                ("Type", Shape("string", required=True, enum=(
                    "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON", "LATEST",
                    "AT_TIMESTAMP",
                ))),
                ("SequenceNumber", SEQUENCE_NUMBER), ("Timestamp", TIMESTAMP),
            ).req()),
            *DRY_RUN_MEMBERS,
        ),
    ),
    # -- answered: stream settings (server.core.settings) --------------------------------
    _write(
        "StartStreamEncryption", "settings.start_stream_encryption", input=ENCRYPTION,
    ),
    _write(
        "StopStreamEncryption", "settings.stop_stream_encryption", input=ENCRYPTION,
    ),
    _write(
        "UpdateStreamMode", "settings.update_stream_mode",
        input=structure(
            ("StreamARN", STREAM_ARN.req()), ("StreamId", STREAM_ID),
            ("StreamModeDetails", structure(
                ("StreamMode", Shape("string", required=True, enum=("PROVISIONED", "ON_DEMAND"))),
            ).req()),
            ("WarmThroughputMiBps", integer(0)),
        ),
    ),
    _write(
        "EnableEnhancedMonitoring", "settings.enable_enhanced_monitoring", input=MONITORING,
    ),
    _write(
        "DisableEnhancedMonitoring", "settings.disable_enhanced_monitoring", input=MONITORING,
    ),
    _write(
        "PutResourcePolicy", "settings.put_resource_policy",
        input=structure(
            ("ResourceARN", RESOURCE_ARN.req()), ("StreamId", STREAM_ID),
            ("Policy", Shape("string", required=True)),
        ),
    ),
    _read(
        "GetResourcePolicy", "settings.get_resource_policy",
        input=structure(("ResourceARN", RESOURCE_ARN.req()), ("StreamId", STREAM_ID)),
    ),
    _write(
        "DeleteResourcePolicy", "settings.delete_resource_policy",
        input=structure(("ResourceARN", RESOURCE_ARN.req()), ("StreamId", STREAM_ID)),
    ),
    # -- modelled by the service, not answered by this server -------------------------
    _write("CreateChannel"),
    _write("DeleteChannel"),
    _read("DescribeAccountSettings"),
    _read("DescribeChannel"),
    _read("ListChannels"),
    _read("ListTagsForResource"),
    _write("TagResource"),
    _write("UntagResource"),
    _write("UpdateAccountSettings"),
    _write("UpdateChannel"),
    _write("UpdateStreamRecordDistributionStrategy"),
    _write("UpdateStreamWarmThroughput"),
)

#: Every action the service models, by name.
ACTIONS: Final[Mapping[str, Action]] = MappingProxyType({a.name: a for a in _TABLE})
#: The same actions by ``X-Amz-Target`` header value.
BY_TARGET: Final[Mapping[str, Action]] = MappingProxyType({a.target: a for a in _TABLE})
