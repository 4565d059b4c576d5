"""A lease table in DynamoDB, item for item the KCL's, for fleets of workers across hosts.

Items use the KCL's attribute names and types, so an application moving from the Java KCL
keeps its checkpoints (and can move back):

=================================  ====  ===============================================
``leaseKey``                       S     the shard id; the table's hash key
``leaseOwner``                     S     the worker holding it; absent when free
``leaseCounter``                   N     moved by every write; the fence
``checkpoint``                     S     a sequence number, TRIM_HORIZON, LATEST, SHARD_END
``checkpointSubSequenceNumber``    N     the last done sub-record of that record
``ownerSwitchesSinceCheckpoint``   N
``parentShardId``                  SS    the shard's parents; absent when none
``pendingCheckpoint``              S     a prepared checkpoint; absent when none
``pendingCheckpointSubSequence...  N     its sub-record (``...Number``); absent when none
``pendingCheckpointState``         B     state prepared with it; absent when none
=================================  ====  ===============================================

Every write is conditional on ``leaseCounter``: UpdateItem (which sets and removes only
these attributes, so attributes another KCL version wrote are kept), PutItem on
``attribute_not_exists(leaseKey)``, DeleteItem. Reads are consistent. The table is created
on demand with on-demand (``PAY_PER_REQUEST``) billing. The endpoint and credentials follow
botocore's chain (``AWS_ENDPOINT_URL_DYNAMODB``, profiles, instance roles).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from kpl.consumer.errors import LeaseStoreError, LeaseStoreUnavailable
from kpl.consumer.leases.base import Lease

__all__ = ["DynamoDBLeaseStore"]

T = TypeVar("T")

_CONDITION_FAILED_ONLY: Final = frozenset({"ConditionalCheckFailedException"})
_NOT_FOUND: Final = frozenset({"ResourceNotFoundException"})
_IN_USE: Final = frozenset({"ResourceInUseException"})
# Error codes that mean "try again later", not "this request is wrong".
_RETRYABLE_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
        "ReplicatedWriteConflictException",
    }
)

# Attribute names go through placeholders: some (``checkpoint``) may be reserved words.
_NAMES: Final = {
    "#key": "leaseKey",
    "#owner": "leaseOwner",
    "#counter": "leaseCounter",
    "#checkpoint": "checkpoint",
    "#sub": "checkpointSubSequenceNumber",
    "#switches": "ownerSwitchesSinceCheckpoint",
    "#parents": "parentShardId",
    "#pending": "pendingCheckpoint",
    "#pendingsub": "pendingCheckpointSubSequenceNumber",
    "#pendingstate": "pendingCheckpointState",
}


def lease_to_item(lease: Lease) -> dict[str, dict[str, Any]]:
    """The KCL item of ``lease``, in DynamoDB's typed attribute format."""
    item: dict[str, dict[str, Any]] = {
        "leaseKey": {"S": lease.lease_key},
        "leaseCounter": {"N": str(lease.lease_counter)},
        "checkpoint": {"S": lease.checkpoint},
        "checkpointSubSequenceNumber": {"N": str(lease.checkpoint_sub_sequence_number)},
        "ownerSwitchesSinceCheckpoint": {"N": str(lease.owner_switches_since_checkpoint)},
    }
    if lease.lease_owner is not None:
        item["leaseOwner"] = {"S": lease.lease_owner}
    if lease.parent_shard_ids:
        item["parentShardId"] = {"SS": sorted(lease.parent_shard_ids)}
    if lease.pending_checkpoint is not None:
        item["pendingCheckpoint"] = {"S": lease.pending_checkpoint}
        item["pendingCheckpointSubSequenceNumber"] = {
            "N": str(lease.pending_checkpoint_sub_sequence_number)
        }
        if lease.pending_checkpoint_state is not None:
            item["pendingCheckpointState"] = {"B": lease.pending_checkpoint_state}
    return item


def item_to_lease(item: dict[str, dict[str, Any]]) -> Lease:
    """A :class:`Lease` from a KCL item; attributes it does not model are ignored."""

    def string(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    def number(name: str) -> int:
        value = item.get(name)
        return 0 if value is None else int(value["N"])

    def binary(name: str) -> bytes | None:
        value = item.get(name)
        return None if value is None or "B" not in value else bytes(value["B"])

    # The sub-record and state mean something only beside a pending checkpoint (a KCL item
    # may hold a state of another type, or one left without its checkpoint).
    pending = string("pendingCheckpoint") or None
    return Lease(
        lease_key=str(item["leaseKey"]["S"]),
        lease_owner=string("leaseOwner"),
        lease_counter=number("leaseCounter"),
        checkpoint=string("checkpoint") or "TRIM_HORIZON",
        checkpoint_sub_sequence_number=number("checkpointSubSequenceNumber"),
        owner_switches_since_checkpoint=number("ownerSwitchesSinceCheckpoint"),
        parent_shard_ids=frozenset(item.get("parentShardId", {}).get("SS", ())),
        pending_checkpoint=pending,
        pending_checkpoint_sub_sequence_number=(
            number("pendingCheckpointSubSequenceNumber") if pending else 0
        ),
        pending_checkpoint_state=binary("pendingCheckpointState") if pending else None,
    )


def _update(lease: Lease, expected_counter: int) -> dict[str, Any]:
    # UpdateItem's arguments: set what has a value, remove what is None or empty.
    sets = [
        "#counter = :counter",
        "#checkpoint = :checkpoint",
        "#sub = :sub",
        "#switches = :switches",
    ]
    removes: list[str] = []
    values: dict[str, dict[str, Any]] = {
        ":counter": {"N": str(lease.lease_counter)},
        ":checkpoint": {"S": lease.checkpoint},
        ":sub": {"N": str(lease.checkpoint_sub_sequence_number)},
        ":switches": {"N": str(lease.owner_switches_since_checkpoint)},
        ":expected": {"N": str(expected_counter)},
    }
    optional: list[tuple[str, str, dict[str, Any] | None]] = [
        ("#owner", ":owner", None if lease.lease_owner is None else {"S": lease.lease_owner}),
        (
            "#parents",
            ":parents",
            {"SS": sorted(lease.parent_shard_ids)} if lease.parent_shard_ids else None,
        ),
    ]
    pending = lease.pending_checkpoint
    optional += [
        ("#pending", ":pending", None if pending is None else {"S": pending}),
        (
            "#pendingsub",
            ":pendingsub",
            None
            if pending is None
            else {"N": str(lease.pending_checkpoint_sub_sequence_number)},
        ),
        (
            "#pendingstate",
            ":pendingstate",
            None
            if pending is None or lease.pending_checkpoint_state is None
            else {"B": lease.pending_checkpoint_state},
        ),
    ]
    for name, placeholder, value in optional:
        if value is None:
            removes.append(name)
        else:
            sets.append(f"{name} = {placeholder}")
            values[placeholder] = value
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return {
        "Key": {"leaseKey": {"S": lease.lease_key}},
        "UpdateExpression": expression,
        # UpdateItem would create a missing item; a lease is only ever created by PutItem.
        "ConditionExpression": "attribute_exists(#key) AND #counter = :expected",
        # Every name is used, in the condition, a SET or a REMOVE (DynamoDB refuses unused).
        "ExpressionAttributeNames": dict(_NAMES),
        "ExpressionAttributeValues": values,
    }


class DynamoDBLeaseStore:
    """A :class:`~kpl.consumer.leases.base.LeaseStore` in the DynamoDB table ``table``.

    ``endpoint_url`` and ``region`` override botocore's configuration; ``timeout`` bounds
    each HTTP attempt and ``max_attempts`` the attempts botocore makes per call.
    """

    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout: float = 5.0,
        max_attempts: int = 3,
        table_active_timeout: float = 120.0,
    ) -> None:
        self.table = table
        self.endpoint_url = endpoint_url
        self.region = region
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.table_active_timeout = table_active_timeout
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"DynamoDBLeaseStore({self.table!r}{where})"

    async def _connect(self) -> Any:
        if self._closed:
            raise LeaseStoreError(f"{self!r} is closed")
        if self._client is not None:
            return self._client
        async with self._opening:
            if self._client is None:
                config = AioConfig(
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                    retries={"mode": "standard", "max_attempts": self.max_attempts},
                )
                stack = contextlib.AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(
                        get_session().create_client(
                            "dynamodb",
                            region_name=self.region,
                            endpoint_url=self.endpoint_url,
                            config=config,
                        )
                    )
                except botocore.exceptions.BotoCoreError as error:
                    await stack.aclose()
                    raise LeaseStoreError(f"{self!r}: {error}") from error
                self._stack = stack
        return self._client

    async def _call(
        self, operation: str, passthrough: frozenset[str] = frozenset(), **arguments: Any
    ) -> dict[str, Any]:
        # The one boundary where botocore's errors become ours; codes in ``passthrough``
        # stay ClientErrors for the caller, who expects them.
        client = await self._connect()
        method: Callable[..., Awaitable[dict[str, Any]]] = getattr(client, operation)
        try:
            return await method(TableName=self.table, **arguments)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in passthrough:
                raise
            if code in _RETRYABLE_CODES:
                raise LeaseStoreUnavailable(f"{self!r}: {error}") from error
            if code == "ResourceNotFoundException":
                raise LeaseStoreError(
                    f"{self!r}: the table does not exist (initialize() creates it): {error}"
                ) from error
            raise LeaseStoreError(f"{self!r}: {error}") from error
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as error:
            raise LeaseStoreUnavailable(f"{self!r} cannot be reached: {error}") from error
        except botocore.exceptions.BotoCoreError as error:
            raise LeaseStoreError(f"{self!r}: {error}") from error

    async def _conditional(self, operation: str, **arguments: Any) -> bool:
        try:
            await self._call(operation, _CONDITION_FAILED_ONLY, **arguments)
        except botocore.exceptions.ClientError:
            return False
        return True

    async def initialize(self) -> None:
        """Create the table (on-demand billing) unless it exists, and wait until ACTIVE."""
        try:
            described = await self._call("describe_table", _NOT_FOUND)
        except botocore.exceptions.ClientError:
            # Another worker may create it at the same time: then wait for theirs.
            with contextlib.suppress(botocore.exceptions.ClientError):
                await self._call(
                    "create_table",
                    _IN_USE,
                    AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            described = await self._call("describe_table")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.table_active_timeout
        delay = 0.1
        while described["Table"]["TableStatus"] != "ACTIVE":
            if loop.time() >= deadline:
                raise LeaseStoreUnavailable(
                    f"{self!r} is still {described['Table']['TableStatus']} after "
                    f"{self.table_active_timeout:g} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            described = await self._call("describe_table")

    async def list_leases(self) -> list[Lease]:
        """Every lease (a consistent scan, page by page), in key order."""
        leases: list[Lease] = []
        arguments: dict[str, Any] = {"ConsistentRead": True}
        while True:
            page = await self._call("scan", **arguments)
            leases.extend(item_to_lease(item) for item in page.get("Items", ()))
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            arguments["ExclusiveStartKey"] = last
        leases.sort(key=lambda lease: lease.lease_key)
        return leases

    async def get_lease(self, lease_key: str) -> Lease | None:
        """One lease (a consistent read), or ``None``."""
        answer = await self._call(
            "get_item", Key={"leaseKey": {"S": lease_key}}, ConsistentRead=True
        )
        item = answer.get("Item")
        return None if item is None else item_to_lease(item)

    async def create_lease(self, lease: Lease) -> bool:
        """Put ``lease``'s item unless one with its key exists."""
        return await self._conditional(
            "put_item",
            Item=lease_to_item(lease),
            ConditionExpression="attribute_not_exists(#key)",
            ExpressionAttributeNames={"#key": "leaseKey"},
        )

    async def replace_lease(self, lease: Lease, expected_counter: int) -> bool:
        """Update ``lease``'s attributes if the stored counter is ``expected_counter``."""
        return await self._conditional("update_item", **_update(lease, expected_counter))

    async def delete_lease(self, lease_key: str, expected_counter: int) -> bool:
        """Delete the item if its counter is ``expected_counter``."""
        return await self._conditional(
            "delete_item",
            Key={"leaseKey": {"S": lease_key}},
            ConditionExpression="#counter = :expected",
            ExpressionAttributeNames={"#counter": "leaseCounter"},
            ExpressionAttributeValues={":expected": {"N": str(expected_counter)}},
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        self._closed = True
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()
