"""The vocabulary of the service model's input shapes: one member's type and constraints.

A :class:`Shape` is data: its kind (``string``, ``integer``, ``blob``, ``list``,
``structure``...), whether it is required, its bounds, pattern and enum, and for
containers the shapes of their members. The model's recurring members (stream name,
ARN, partition key, data...) are defined once here; every action's input shape is
built from them in the action registry (``server.core.actions``), and
``server.core.validation`` walks a shape over a request body.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Final

from kpl.protocol.hashing import EXPLICIT_HASH_KEY_PATTERN
from kpl.protocol.limits import MAX_PARTITION_KEY_LENGTH

__all__ = [
    "ARN_ID_MEMBERS",
    "BOOLEAN",
    "CONSUMER_ARN",
    "CONSUMER_NAME",
    "DATA",
    "DRY_RUN_MEMBERS",
    "HASH_KEY",
    "LIST_SHARDS_STREAM",
    "MAX_RECORD_SIZE_KIB",
    "NEXT_TOKEN",
    "PARTITION_KEY",
    "RESOURCE_ARN",
    "SEQUENCE_NUMBER",
    "SHARD_ID",
    "SHARD_LEVEL_METRICS",
    "SHARD_LEVEL_METRIC_NAMES",
    "STREAM_ARN",
    "STREAM_ID",
    "STREAM_MEMBERS",
    "STREAM_NAME",
    "TAG_KEY",
    "TAG_MAP",
    "TAG_VALUE",
    "TIMESTAMP",
    "Shape",
    "integer",
    "structure",
    "text",
]


@dataclass(frozen=True, slots=True)
class Shape:
    """One member's type and constraints, as in the service model."""

    kind: str
    """``string``, ``integer``, ``long``, ``boolean``, ``blob``, ``timestamp``,
    ``list``, ``map`` or ``structure``."""
    required: bool = False
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    member: Shape | None = None
    """The element shape of a list, or the value shape of a map."""
    key: Shape | None = None
    """The key shape of a map."""
    members: tuple[tuple[str, Shape], ...] = ()
    """A structure's members in model order."""
    member_str: str | None = None
    """How a structure element of a list prints in a constraint message."""
    required_unless: tuple[str, ...] = ()
    """Required unless one of these sibling members is present (StreamName/StreamARN)."""
    regex: re.Pattern[str] | None = field(default=None, compare=False)

    def req(self) -> Shape:
        """The same shape, required."""
        return Shape(**{**_fields(self), "required": True})


def _fields(shape: Shape) -> dict[str, Any]:
    return {name: getattr(shape, name) for name in Shape.__dataclass_fields__}


def text(min: int | None = None, max: int | None = None, pattern: str | None = None) -> Shape:
    """A string member with optional length bounds and pattern."""
    return Shape(
        "string", min=min, max=max, pattern=pattern,
        regex=re.compile(pattern) if pattern is not None else None,
    )


def structure(*members: tuple[str, Shape], member_str: str | None = None) -> Shape:
    """A structure of ``(name, shape)`` members in model order."""
    return Shape("structure", members=members, member_str=member_str)


# -- the model's shapes -------------------------------------------------------------

STREAM_NAME = text(1, 128, "[a-zA-Z0-9_.-]+")
STREAM_ARN = text(1, 2048, r"arn:aws.*:kinesis:.*:\d{12}:stream/\S+")
STREAM_ID = text(1, 24, "[a-z0-9]{20}-[a-z0-9]{3}")
SHARD_ID = text(1, 128, "[a-zA-Z0-9_.-]+")
CONSUMER_NAME = text(1, 128, "[a-zA-Z0-9_.-]+")
CONSUMER_ARN = text(
    1, 2048,
    r"^(arn):aws.*:kinesis:.*:\d{12}:.*stream\/[a-zA-Z0-9_.-]+\/consumer\/[a-zA-Z0-9_.-]+:[0-9]+",
)
RESOURCE_ARN = text(1, 2048, r"arn:aws.*:kinesis:.*:\d{12}:.*(stream|channel)/\S+")
#: The shard-level metrics of enhanced monitoring, in the service's order (``ALL`` is
#: every one of them).
SHARD_LEVEL_METRIC_NAMES: Final = (
    "IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
    "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
)
SHARD_LEVEL_METRICS = Shape(
    "list", required=True, min=1, max=len(SHARD_LEVEL_METRIC_NAMES),
    member=Shape("string", enum=(*SHARD_LEVEL_METRIC_NAMES, "ALL")),
)
HASH_KEY = text(pattern=EXPLICIT_HASH_KEY_PATTERN)
SEQUENCE_NUMBER = text(pattern=r"0|([1-9]\d{0,128})")
PARTITION_KEY = text(1, MAX_PARTITION_KEY_LENGTH)
TAG_KEY = text(1, 128)
TAG_VALUE = text(0, 256)
DATA = Shape("blob", min=0, max=10 * 1024 * 1024)
TIMESTAMP = Shape("timestamp")
BOOLEAN = Shape("boolean")
NEXT_TOKEN = text(1, 1048576)
TAG_MAP = Shape("map", min=1, max=200, key=TAG_KEY, member=TAG_VALUE)
MAX_RECORD_SIZE_KIB = Shape("integer", min=1024, max=10240)


def integer(min: int | None = None, max: int | None = None) -> Shape:
    """An integer member with an optional range."""
    return Shape("integer", min=min, max=max)


STREAM_MEMBERS = (("StreamName", dataclasses.replace(STREAM_NAME, required_unless=("StreamARN",))),)
#: ListShards without a stream or a token is the engine's InvalidArgumentException (as the
#: service answers it), not a validation error.
LIST_SHARDS_STREAM = STREAM_NAME
ARN_ID_MEMBERS = (("StreamARN", STREAM_ARN), ("StreamId", STREAM_ID))
#: ``DryRun``: check everything, then answer ``DryRunOperationException`` instead of acting.
DRY_RUN_MEMBERS = (("DryRun", BOOLEAN),)
