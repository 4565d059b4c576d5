"""One contract for every lease store (memory, sqlite, dynamodb on a moto server), then
what each store adds: processes sharing a SQLite file, KCL items in DynamoDB, failures."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kpl.consumer.errors import (
    InvalidLeaseStoreURL,
    LeaseStoreError,
    LeaseStoreUnavailable,
)
from kpl.consumer.leases import open_lease_store
from kpl.consumer.leases.base import SHARD_END, TRIM_HORIZON, Lease, LeaseStore
from kpl.consumer.leases.memory import MemoryLeaseStore
from kpl.consumer.leases.sqlite import SQLiteLeaseStore

CHECKPOINT = "49590338271490256608559692538361571095921575989136588898"


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[LeaseStore]:
    store = open_lease_store(url)
    try:
        await store.initialize()
        yield store
    finally:
        await store.close()


def full_lease(key: str = "shardId-000000000001") -> Lease:
    return Lease(
        lease_key=key,
        lease_owner="worker-a",
        lease_counter=7,
        checkpoint=CHECKPOINT,
        checkpoint_sub_sequence_number=2**40,
        owner_switches_since_checkpoint=3,
        parent_shard_ids=frozenset({"shardId-000000000000", "shardId-000000000009"}),
        pending_checkpoint="4959",
        pending_checkpoint_sub_sequence_number=3,
        pending_checkpoint_state=b"\x00state\xff",
    )


# -- the contract -------------------------------------------------------------------------------


async def test_a_new_table_is_empty_and_initialize_is_idempotent(store_url: str) -> None:
    async with opened(store_url) as store:
        await store.initialize()
        assert await store.list_leases() == []
        assert await store.get_lease("shardId-000000000000") is None


async def test_every_field_round_trips(store_url: str) -> None:
    bare = Lease("shardId-000000000000")
    async with opened(store_url) as store:
        assert await store.create_lease(full_lease())
        assert await store.create_lease(bare)
        assert await store.list_leases() == [bare, full_lease()]
        assert await store.get_lease(full_lease().lease_key) == full_lease()
    # Written by one store, read by another opened on the same table.
    async with opened(store_url) as again:
        assert await again.get_lease(bare.lease_key) == bare


async def test_creation_is_conditional_on_the_key_not_existing(store_url: str) -> None:
    async with opened(store_url) as store:
        assert await store.create_lease(full_lease())
        assert not await store.create_lease(Lease(full_lease().lease_key, lease_counter=99))
        assert await store.get_lease(full_lease().lease_key) == full_lease()


async def test_replace_is_a_compare_and_set_on_the_counter(store_url: str) -> None:
    async with opened(store_url) as store:
        lease = full_lease()
        await store.create_lease(lease)
        freed = lease.next(
            lease_owner=None,
            pending_checkpoint=None,
            pending_checkpoint_sub_sequence_number=0,
            pending_checkpoint_state=None,
            parent_shard_ids=frozenset(),
        )
        assert not await store.replace_lease(freed, expected_counter=6)
        assert await store.get_lease(lease.lease_key) == lease
        assert await store.replace_lease(freed, expected_counter=7)
        assert await store.get_lease(lease.lease_key) == freed
        assert not await store.replace_lease(freed.next(), expected_counter=7)
        ended = freed.next(checkpoint=SHARD_END, checkpoint_sub_sequence_number=0)
        assert await store.replace_lease(ended, expected_counter=8)
        assert await store.get_lease(lease.lease_key) == ended


async def test_a_pending_checkpoint_is_set_and_cleared_by_compare_and_set(store_url: str) -> None:
    async with opened(store_url) as store:
        bare = Lease("shardId-000000000000", lease_owner="w")
        await store.create_lease(bare)
        prepared = bare.next(
            pending_checkpoint=CHECKPOINT,
            pending_checkpoint_sub_sequence_number=9,
            pending_checkpoint_state=b"state",
        )
        assert not await store.replace_lease(prepared, expected_counter=1)
        assert await store.replace_lease(prepared, expected_counter=0)
        assert await store.get_lease(bare.lease_key) == prepared
        # Prepared without state, then committed: nothing of it is left.
        stateless = prepared.next(pending_checkpoint_state=None)
        assert await store.replace_lease(stateless, expected_counter=1)
        assert await store.get_lease(bare.lease_key) == stateless
        committed = stateless.next(
            checkpoint=CHECKPOINT,
            checkpoint_sub_sequence_number=9,
            pending_checkpoint=None,
            pending_checkpoint_sub_sequence_number=0,
        )
        assert await store.replace_lease(committed, expected_counter=2)
        assert await store.list_leases() == [committed]


def test_a_pending_sub_record_or_state_needs_a_pending_checkpoint() -> None:
    with pytest.raises(ValueError, match="need a pending checkpoint"):
        Lease("a", pending_checkpoint_state=b"x")
    with pytest.raises(ValueError, match="need a pending checkpoint"):
        Lease("a", pending_checkpoint_sub_sequence_number=1)


async def test_replace_never_creates_a_missing_lease(store_url: str) -> None:
    async with opened(store_url) as store:
        assert not await store.replace_lease(Lease("shardId-000000000005", lease_counter=1), 0)
        assert await store.list_leases() == []


async def test_delete_is_conditional_on_the_counter(store_url: str) -> None:
    async with opened(store_url) as store:
        await store.create_lease(full_lease())
        assert not await store.delete_lease(full_lease().lease_key, 6)
        assert await store.get_lease(full_lease().lease_key) is not None
        assert await store.delete_lease(full_lease().lease_key, 7)
        assert await store.get_lease(full_lease().lease_key) is None
        assert not await store.delete_lease(full_lease().lease_key, 7)


async def test_two_stores_racing_a_compare_and_set_exactly_one_wins(store_url: str) -> None:
    async with opened(store_url) as one, opened(store_url) as other:
        for round_ in range(10):
            key = f"shardId-{round_:012d}"
            created = await asyncio.gather(
                one.create_lease(Lease(key, lease_owner="one")),
                other.create_lease(Lease(key, lease_owner="other")),
            )
            assert sorted(created) == [False, True]
            seen = await one.get_lease(key)
            assert seen is not None
            results = await asyncio.gather(
                one.replace_lease(seen.next(lease_owner="one"), seen.lease_counter),
                other.replace_lease(seen.next(lease_owner="other"), seen.lease_counter),
            )
            assert sorted(results) == [False, True]
            stored = await other.get_lease(key)
            assert stored is not None
            assert stored.lease_counter == seen.lease_counter + 1
            assert stored.lease_owner == ("one" if results[0] else "other")


async def test_concurrent_increments_lose_no_update(store_url: str) -> None:
    key = "shardId-000000000000"

    async def increment(store: LeaseStore, times: int) -> int:
        done = 0
        while done < times:
            lease = await store.get_lease(key)
            assert lease is not None
            if await store.replace_lease(lease.next(), lease.lease_counter):
                done += 1
        return done

    async with opened(store_url) as one, opened(store_url) as other:
        await one.create_lease(Lease(key))
        counts = await asyncio.gather(increment(one, 15), increment(other, 15))
        stored = await one.get_lease(key)
        assert stored is not None
        assert stored.lease_counter == sum(counts) == 30


async def test_a_closed_store_refuses_calls(store_url: str) -> None:
    store = open_lease_store(store_url)
    await store.initialize()
    await store.close()
    with pytest.raises(LeaseStoreError, match="closed"):
        await store.list_leases()


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("leases.db", "scheme must be one of"),
        ("redis://localhost/0", "scheme must be one of"),
        ("sqlite://leases.db", "three slashes"),
        ("sqlite:///", "no database file"),
        ("sqlite:///dir/", "no database file"),
        ("sqlite:///x.db?mode=ro", "unknown parameter"),
        ("memory://name/path", "no path"),
        ("memory://name#part", "no #fragment"),
        ("dynamodb://", "table name"),
        ("dynamodb://ab", "table name"),
        ("dynamodb://bad name", "table name"),
        ("dynamodb://table/extra", "no path"),
        ("dynamodb://table?endpoint=http://x", "unknown parameter"),
        ("dynamodb://table?endpoint_url=localhost:8000", "not an http"),
        ("dynamodb://table?region", "cannot parse the query"),
    ],
)
def test_a_malformed_lease_store_url_says_what_is_wrong(url: str, reason: str) -> None:
    with pytest.raises(InvalidLeaseStoreURL, match=reason) as raised:
        open_lease_store(url)
    assert url in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_urls_name_their_stores(tmp_path: Path) -> None:
    assert isinstance(open_lease_store("memory://"), MemoryLeaseStore)
    relative = open_lease_store("sqlite:///app-leases.db")
    assert isinstance(relative, SQLiteLeaseStore)
    assert relative.path == Path("app-leases.db")
    absolute = open_lease_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(absolute, SQLiteLeaseStore)
    assert absolute.path == tmp_path / "x.db"


async def test_memory_stores_of_one_name_share_a_table_and_others_do_not() -> None:
    async with opened("memory://shared-x") as one, opened("memory://shared-x") as two:
        await one.create_lease(Lease("a"))
        assert await two.get_lease("a") == Lease("a")
        async with opened("memory://") as private:
            assert await private.list_leases() == []


# -- sqlite -------------------------------------------------------------------------------------

_INCREMENTER = """
import asyncio, sys
from kpl.consumer.leases.sqlite import SQLiteLeaseStore

async def main(path, times):
    store = SQLiteLeaseStore(path, timeout=30)
    done = 0
    while done < times:
        lease = await store.get_lease("shardId-000000000000")
        if await store.replace_lease(lease.next(), lease.lease_counter):
            done += 1
    await store.close()
    print(done)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_sqlite_is_shared_by_processes_with_every_write_a_compare_and_set(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leases.db"
    async with opened(f"sqlite:///{path}") as store:
        await store.create_lease(Lease("shardId-000000000000"))
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _INCREMENTER,
                str(path),
                "150",
                stdout=subprocess.PIPE,
                cwd=Path(__file__).parents[3],
            )
            for _ in range(2)
        ]
        # This process races them too.
        mine = 0
        while mine < 150:
            lease = await store.get_lease("shardId-000000000000")
            assert lease is not None
            if await store.replace_lease(lease.next(), lease.lease_counter):
                mine += 1
        outputs = [await process.communicate() for process in processes]
        assert [process.returncode for process in processes] == [0, 0]
        assert [int(out) for out, _ in outputs] == [150, 150]
        stored = await store.get_lease("shardId-000000000000")
        assert stored is not None
        assert stored.lease_counter == 450
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_keeps_columns_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    async with opened(f"sqlite:///{path}") as store:
        await store.create_lease(Lease("a"))
        with contextlib.closing(sqlite3.connect(path)) as connection, connection:
            connection.execute("ALTER TABLE leases ADD COLUMN note TEXT")
            connection.execute("UPDATE leases SET note = 'kept'")
        assert await store.replace_lease(Lease("a").next(lease_owner="w"), 0)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        assert connection.execute("SELECT note, lease_owner FROM leases").fetchone() == (
            "kept",
            "w",
        )


async def test_sqlite_adds_the_pending_checkpoint_columns_to_an_older_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leases.db"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "CREATE TABLE leases (lease_key TEXT PRIMARY KEY NOT NULL, lease_owner TEXT, "
            "lease_counter INTEGER NOT NULL, checkpoint TEXT NOT NULL, "
            "checkpoint_sub_sequence_number INTEGER NOT NULL DEFAULT 0, "
            "owner_switches_since_checkpoint INTEGER NOT NULL DEFAULT 0, "
            "parent_shard_ids TEXT NOT NULL DEFAULT '[]', pending_checkpoint TEXT)"
        )
        connection.execute(
            "INSERT INTO leases (lease_key, lease_counter, checkpoint) VALUES ('a', 4, ?)",
            (CHECKPOINT,),
        )
    stores = [SQLiteLeaseStore(path), SQLiteLeaseStore(path)]
    await asyncio.gather(*(store.initialize() for store in stores))
    store = stores[0]
    assert await store.get_lease("a") == Lease("a", lease_counter=4, checkpoint=CHECKPOINT)
    prepared = Lease("a", lease_counter=4, checkpoint=CHECKPOINT).next(
        pending_checkpoint="5", pending_checkpoint_sub_sequence_number=1
    )
    assert await store.replace_lease(prepared, 4)
    assert await stores[1].get_lease("a") == prepared
    for opened_store in stores:
        await opened_store.close()


async def test_sqlite_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    store = open_lease_store(f"sqlite:///{tmp_path}/no/such/dir/leases.db")
    with pytest.raises(LeaseStoreError, match="unable to open database file"):
        await store.initialize()
    await store.close()


async def test_sqlite_locked_by_another_writer_is_unavailable_and_retryable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leases.db"
    store = SQLiteLeaseStore(path, timeout=0.05)
    await store.initialize()
    await store.create_lease(Lease("a"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LeaseStoreUnavailable, match="locked") as raised:
            await store.replace_lease(Lease("a").next(), 0)
        assert raised.value.retryable
        # Readers are not blocked by the writer in WAL mode.
        assert await store.get_lease("a") == Lease("a")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await store.replace_lease(Lease("a").next(), 0)
    await store.close()


# -- dynamodb -----------------------------------------------------------------------------------


async def raw_client(endpoint: str) -> Any:
    from aiobotocore.session import get_session

    return get_session().create_client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)


def table_of(url: str) -> str:
    return url.split("://", 1)[1].split("?", 1)[0]


async def test_dynamodb_table_is_created_on_demand_billing_by_racing_workers(
    dynamodb_url: str, dynamodb_endpoint: str
) -> None:
    stores = [open_lease_store(dynamodb_url) for _ in range(3)]
    await asyncio.gather(*(store.initialize() for store in stores))
    async with await raw_client(dynamodb_endpoint) as client:
        table = (await client.describe_table(TableName=table_of(dynamodb_url)))["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    for store in stores:
        await store.close()


async def test_dynamodb_items_are_the_kcls(dynamodb_url: str, dynamodb_endpoint: str) -> None:
    async with opened(dynamodb_url) as store:
        await store.create_lease(full_lease())
        await store.create_lease(Lease("shardId-000000000000"))
    async with await raw_client(dynamodb_endpoint) as client:
        answer = await client.get_item(
            TableName=table_of(dynamodb_url),
            Key={"leaseKey": {"S": "shardId-000000000001"}},
            ConsistentRead=True,
        )
        bare = await client.get_item(
            TableName=table_of(dynamodb_url),
            Key={"leaseKey": {"S": "shardId-000000000000"}},
            ConsistentRead=True,
        )
    assert answer["Item"] == {
        "leaseKey": {"S": "shardId-000000000001"},
        "leaseOwner": {"S": "worker-a"},
        "leaseCounter": {"N": "7"},
        "checkpoint": {"S": CHECKPOINT},
        "checkpointSubSequenceNumber": {"N": str(2**40)},
        "ownerSwitchesSinceCheckpoint": {"N": "3"},
        "parentShardId": {"SS": ["shardId-000000000000", "shardId-000000000009"]},
        "pendingCheckpoint": {"S": "4959"},
        "pendingCheckpointSubSequenceNumber": {"N": "3"},
        "pendingCheckpointState": {"B": b"\x00state\xff"},
    }
    # A free lease with no parents has neither attribute (the KCL's own items don't).
    assert set(bare["Item"]) == {
        "leaseKey",
        "leaseCounter",
        "checkpoint",
        "checkpointSubSequenceNumber",
        "ownerSwitchesSinceCheckpoint",
    }


async def test_dynamodb_reads_a_java_kcl_item_and_keeps_what_it_does_not_know(
    dynamodb_url: str, dynamodb_endpoint: str
) -> None:
    async with opened(dynamodb_url) as store, await raw_client(dynamodb_endpoint) as client:
        await client.put_item(
            TableName=table_of(dynamodb_url),
            Item={
                "leaseKey": {"S": "shardId-000000000003"},
                "leaseOwner": {"S": "java-worker"},
                "leaseCounter": {"N": "41"},
                "checkpoint": {"S": CHECKPOINT},
                "checkpointSubSequenceNumber": {"N": "5"},
                "ownerSwitchesSinceCheckpoint": {"N": "0"},
                "parentShardId": {"SS": ["shardId-000000000001"]},
                "childShardIds": {"SS": ["shardId-000000000007"]},
                "hashKeyRange": {"M": {"startingHashKey": {"S": "0"}}},
                "pendingCheckpoint": {"S": "4959"},
                "pendingCheckpointSubSequenceNumber": {"N": "2"},
                "pendingCheckpointState": {"B": b"java state"},
            },
        )
        lease = await store.get_lease("shardId-000000000003")
        assert lease == Lease(
            "shardId-000000000003",
            lease_owner="java-worker",
            lease_counter=41,
            checkpoint=CHECKPOINT,
            checkpoint_sub_sequence_number=5,
            parent_shard_ids=frozenset({"shardId-000000000001"}),
            pending_checkpoint="4959",
            pending_checkpoint_sub_sequence_number=2,
            pending_checkpoint_state=b"java state",
        )
        assert await store.replace_lease(lease.next(lease_owner="python-worker"), 41)
        item = (
            await client.get_item(
                TableName=table_of(dynamodb_url),
                Key={"leaseKey": {"S": "shardId-000000000003"}},
                ConsistentRead=True,
            )
        )["Item"]
    assert item["leaseOwner"] == {"S": "python-worker"}
    assert item["leaseCounter"] == {"N": "42"}
    assert item["childShardIds"] == {"SS": ["shardId-000000000007"]}
    assert item["hashKeyRange"] == {"M": {"startingHashKey": {"S": "0"}}}
    assert item["pendingCheckpointState"] == {"B": b"java state"}


async def test_dynamodb_endpoint_from_the_environment(
    dynamodb_endpoint: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint)
    async with opened("dynamodb://leases-from-env") as store:
        assert await store.create_lease(Lease("a", checkpoint=TRIM_HORIZON))
        assert [lease.lease_key for lease in await store.list_leases()] == ["a"]


async def test_dynamodb_listing_pages_through_a_large_table(dynamodb_url: str) -> None:
    from kpl.consumer.leases.dynamodb import DynamoDBLeaseStore

    scans = 0
    async with opened(dynamodb_url) as store:
        assert isinstance(store, DynamoDBLeaseStore)
        padding = "x" * 2000
        keys = [f"shardId-{i:012d}" for i in range(600)]
        # Big items so that a scan needs several 1 MB pages.
        await asyncio.gather(
            *(store.create_lease(Lease(key, pending_checkpoint=padding)) for key in keys)
        )
        call = store._call

        async def counting(operation: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            nonlocal scans
            scans += operation == "scan"
            return await call(operation, *args, **kwargs)

        store._call = counting  # type: ignore[method-assign]
        listing = await store.list_leases()
    assert [lease.lease_key for lease in listing] == keys
    assert scans >= 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_dynamodb_that_cannot_be_reached_is_unavailable(aws_credentials: None) -> None:
    url = f"dynamodb://leases?endpoint_url=http://127.0.0.1:{free_port()}&region=us-east-1"
    from kpl.consumer.leases.dynamodb import DynamoDBLeaseStore

    store = open_lease_store(url)
    assert isinstance(store, DynamoDBLeaseStore)
    store.max_attempts = 1
    with pytest.raises(LeaseStoreUnavailable, match="cannot be reached") as raised:
        await store.initialize()
    assert raised.value.retryable
    with pytest.raises(LeaseStoreUnavailable):
        await store.replace_lease(Lease("a").next(), 0)
    await store.close()


async def test_dynamodb_table_missing_after_start_is_a_clear_error(dynamodb_url: str) -> None:
    store = open_lease_store(dynamodb_url)
    with pytest.raises(LeaseStoreError, match="table does not exist"):
        await store.list_leases()
    await store.close()


async def test_dynamodb_without_a_region_says_so(
    aws_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    store = open_lease_store("dynamodb://leases")
    with pytest.raises(LeaseStoreError, match="region"):
        await store.initialize()
    await store.close()


@pytest.mark.parametrize(
    ("code", "error", "retryable"),
    [
        ("ProvisionedThroughputExceededException", LeaseStoreUnavailable, True),
        ("ThrottlingException", LeaseStoreUnavailable, True),
        ("InternalServerError", LeaseStoreUnavailable, True),
        ("AccessDeniedException", LeaseStoreError, False),
        ("UnrecognizedClientException", LeaseStoreError, False),
    ],
)
async def test_dynamodb_errors_become_lease_store_errors_with_their_policy(
    code: str, error: type[LeaseStoreError], retryable: bool
) -> None:
    import botocore.exceptions

    from kpl.consumer.leases.dynamodb import DynamoDBLeaseStore

    class Refusing:
        async def update_item(self, **_: Any) -> dict[str, Any]:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": code, "Message": "refused"}}, "UpdateItem"
            )

    store = DynamoDBLeaseStore("leases")
    store._client = Refusing()
    with pytest.raises(error, match=code) as raised:
        await store.replace_lease(Lease("a").next(), 0)
    assert type(raised.value) is error
    assert raised.value.retryable is retryable
    await store.close()


async def test_an_sqlite_store_left_open_warns(tmp_path: Path) -> None:
    import gc

    store = SQLiteLeaseStore(tmp_path / "leases.db")
    await store.initialize()
    with pytest.warns(ResourceWarning, match="was not closed"):
        del store
    closed = SQLiteLeaseStore(tmp_path / "leases.db")
    await closed.initialize()
    await closed.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del closed
        gc.collect()


def test_a_kcl_items_pending_parts_are_read_only_beside_a_pending_checkpoint() -> None:
    dynamodb = pytest.importorskip("kpl.consumer.leases.dynamodb")
    base = {
        "leaseKey": {"S": "a"},
        "leaseCounter": {"N": "3"},
        "checkpoint": {"S": CHECKPOINT},
    }
    # A state left without its checkpoint, and a state of another type, are not state.
    orphan = {**base, "pendingCheckpointState": {"B": b"x"}}
    assert dynamodb.item_to_lease(orphan) == Lease("a", lease_counter=3, checkpoint=CHECKPOINT)
    numeric = {
        **base,
        "pendingCheckpoint": {"S": "77"},
        "pendingCheckpointSubSequenceNumber": {"N": "4"},
        "pendingCheckpointState": {"N": "4"},
    }
    assert dynamodb.item_to_lease(numeric) == Lease(
        "a",
        lease_counter=3,
        checkpoint=CHECKPOINT,
        pending_checkpoint="77",
        pending_checkpoint_sub_sequence_number=4,
    )
