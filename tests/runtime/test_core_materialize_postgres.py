"""Materialization to PostgreSQL: typed tables, upserts reduced by key, the checkpoint in
the same database transaction, and an epoch that fences an old primary."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql
from tests.runtime.core_fixtures import (
    Crash,
    ShardRunner,
    Tripwire,
    collection,
    context,
    objects,
    shard_for,
    task,
    writer,
)
from tests.support.wait import NOT_YET, wait_for

from shardkeeper.api.meta import SecretKeyRef
from shardkeeper.runtime.core.checkpoint import SavedState
from shardkeeper.runtime.core.errors import TaskFailed
from shardkeeper.runtime.core.faults import RuntimeFaultPoint
from shardkeeper.runtime.core.processor import ShardContext
from shardkeeper.runtime.kinds.materialize_postgres import (
    MaterializationFenced,
    PostgresMaterializer,
)
from shardkeeper.storage import errors
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.store import ShardStore
from shardkeeper_dev.environment import EnvInfo

__all__ = ["objects"]

ACCOUNTS = collection(
    "accounts",
    key=["/id"],
    schema={
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "balance": {"type": "number"},
            "active": {"type": ["boolean", "null"]},
            "tags": {"type": "array"},
            "profile": {"type": "object"},
        },
        "required": ["id", "name"],
    },
)
EVENTS = collection("account-events", key=["/account/region", "/account/n"])
# until the shard has created its schema and tables
NO_TABLE_YET = (*NOT_YET, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)


@pytest.fixture
def pg_schema(dev_env: EnvInfo) -> Iterator[str]:
    name = f"t_{secrets.token_hex(4)}"
    yield name
    with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def materialize_context(objects: ObjectStore, dsn: str, schema: str) -> ShardContext:
    to_postgres = task(
        "to-pg",
        {
            "type": "materialization",
            "sources": ["accounts", "account-events"],
            "materialize": {
                "postgres": {
                    "dsnSecretRef": {"name": "pg", "key": "dsn"},
                    "schema": schema,
                    "tables": {"accounts": "accounts", "account-events": "events"},
                }
            },
            "shards": {"maxTxnDuration": "100ms"},
        },
    )

    def resolve(ref: SecretKeyRef) -> str:
        assert (ref.name, ref.key) == ("pg", "dsn")
        return dsn

    return context(
        objects, to_postgres, shard_for("to-pg"), [ACCOUNTS, EVENTS], resolve_secret=resolve
    )


def query(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, args).fetchall()


def checkpoint_row(dsn: str, schema: str) -> tuple[int, dict[str, Any]] | None:
    rows = query(dsn, f"SELECT epoch, checkpoint FROM {schema}.shardkeeper_checkpoints")
    return (rows[0][0], rows[0][1]) if rows else None


def claimed_epoch(dsn: str, schema: str) -> int | None:
    row = checkpoint_row(dsn, schema)
    return None if row is None else row[0]


def test_documents_are_upserted_with_the_checkpoint(
    tmp_path: Path, objects: ObjectStore, dev_env: EnvInfo, pg_schema: str
) -> None:
    dsn = dev_env.postgres_dsn
    shard = ShardRunner(tmp_path, materialize_context(objects, dsn, pg_schema)).start()
    accounts = writer(objects, "accounts")
    accounts.append(
        [
            {"id": 1, "name": "Ann", "balance": 10.5, "active": True, "tags": ["a"]},
            {"id": 2, "name": "Bob", "profile": {"age": 40}},
            {"id": 1, "name": "Ann", "balance": 12.0, "active": None, "tags": []},
        ]
    )
    events = writer(objects, "account-events")
    events.append([{"account": {"region": "eu", "n": 1}, "what": "opened"}])
    table = f"{pg_schema}.accounts"
    wait_for(
        lambda: query(dsn, f"SELECT count(*) FROM {pg_schema}.events") == [(1,)],
        timeout=30,
        what="the event row",
        retry=NO_TABLE_YET,
    )
    wait_for(
        lambda: (
            query(dsn, f"SELECT id, balance FROM {table} ORDER BY id") == [(1, 12.0), (2, None)]
        ),
        timeout=30,
        what="the reduced account rows",
    )
    accounts.append([{"id": 2, "name": "Bob", "balance": 1}])
    wait_for(
        lambda: query(dsn, f"SELECT balance FROM {table} WHERE id = 2") == [(1.0,)],
        timeout=30,
        what="the update of account 2",
    )
    assert shard.finish() is None

    rows = query(
        dsn,
        f"SELECT id, name, balance, active, tags, profile, flow_document FROM {table} ORDER BY id",
    )
    assert [r[:6] for r in rows] == [
        (1, "Ann", 12.0, None, [], None),
        (2, "Bob", 1.0, None, None, None),
    ]
    assert rows[0][6]["_meta"]["uuid"]
    columns = query(
        dsn,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        pg_schema,
    )
    assert [c[1:] for c in columns if c[0] == "accounts"] == [
        ("id", "bigint"),
        ("name", "text"),
        ("balance", "double precision"),
        ("active", "boolean"),
        ("tags", "jsonb"),
        ("profile", "jsonb"),
        ("flow_document", "jsonb"),
    ]
    assert [c[1:] for c in columns if c[0] == "events"] == [
        ("account_region", "jsonb"),
        ("account_n", "jsonb"),
        ("flow_document", "jsonb"),
    ]
    epoch, saved = checkpoint_row(dsn, pg_schema) or (0, {})
    assert epoch == 1
    assert saved[accounts.journal]["offset"] == accounts.head
    assert saved[events.journal]["offset"] == events.head


def test_the_database_checkpoint_is_authoritative_after_a_crash(
    tmp_path: Path, objects: ObjectStore, dev_env: EnvInfo, pg_schema: str
) -> None:
    dsn = dev_env.postgres_dsn
    runner = ShardRunner(tmp_path, materialize_context(objects, dsn, pg_schema))
    accounts = writer(objects, "accounts")
    # the database commits, then the shard dies before its store does
    trip = Tripwire(RuntimeFaultPoint.DOCUMENTS_APPLIED, armed=True)
    first = runner.start(faults=trip)
    accounts.append([{"id": 1, "name": "Ann"}, {"id": 2, "name": "Bob"}])
    assert isinstance(first.ended(), Crash)
    assert query(dsn, f"SELECT id FROM {pg_schema}.accounts ORDER BY id") == [(1,), (2,)]
    assert checkpoint_row(dsn, pg_schema) == (
        1,
        {accounts.journal: {"offset": accounts.head, "fragment": accounts.head}},
    )

    second = runner.start()
    # it resumes where the database says, though its store never saw that commit
    wait_for(lambda: second.processor.progress().recovered, timeout=30, what="recovery")
    assert second.processor.progress().checkpoint == {accounts.journal: accounts.head}
    accounts.append([{"id": 3, "name": "Cy"}])
    wait_for(
        lambda: query(dsn, f"SELECT count(*) FROM {pg_schema}.accounts") == [(3,)],
        timeout=30,
        what="3 rows",
    )
    assert second.finish() is None
    assert checkpoint_row(dsn, pg_schema) == (
        2,
        {accounts.journal: {"offset": accounts.head, "fragment": accounts.head}},
    )


def test_an_old_primary_is_fenced_by_the_checkpoint_row(
    tmp_path: Path, objects: ObjectStore, dev_env: EnvInfo, pg_schema: str
) -> None:
    dsn = dev_env.postgres_dsn
    runner = ShardRunner(tmp_path, materialize_context(objects, dsn, pg_schema))
    accounts = writer(objects, "accounts")
    old = runner.start()
    accounts.append([{"id": 1, "name": "Ann"}])
    wait_for(
        lambda: query(dsn, f"SELECT count(*) FROM {pg_schema}.accounts") == [(1,)],
        timeout=30,
        what="1 row",
        retry=NO_TABLE_YET,
    )
    new = runner.start()
    wait_for(lambda: claimed_epoch(dsn, pg_schema) == 2, timeout=30, what="the claim of epoch 2")
    # both read the next document; only the new primary may write it
    accounts.append([{"id": 2, "name": "Bob"}])
    error = old.ended()
    assert isinstance(error, errors.Fenced)
    assert "shardkeeper_checkpoints" in str(error)
    wait_for(
        lambda: query(dsn, f"SELECT count(*) FROM {pg_schema}.accounts") == [(2,)],
        timeout=30,
        what="2 rows",
    )
    assert new.finish() is None
    assert claimed_epoch(dsn, pg_schema) == 2


def claim(dsn: str, schema: str, epoch: int) -> PostgresMaterializer:
    """A materializer of shard ``ns/s`` that opened (claimed the row) with ``epoch``."""
    materializer = PostgresMaterializer(dsn, schema, [], "ns/s")
    store = cast(ShardStore, SimpleNamespace(epoch=epoch))
    saved = SavedState(sources={}, output_heads={}, pending=[], transactions=0, migrations=[])
    try:
        materializer.open(store, saved)
    except BaseException:
        materializer.close()
        raise
    return materializer


def test_a_claim_of_the_rows_own_epoch_is_refused(dev_env: EnvInfo, pg_schema: str) -> None:
    """Two replicas that chose the same epoch must not both own the row: both would pass
    the commit's ``WHERE epoch = ...``."""
    dsn = dev_env.postgres_dsn
    first = claim(dsn, pg_schema, 3)
    try:
        with pytest.raises(MaterializationFenced) as raised:
            claim(dsn, pg_schema, 3).close()
        assert raised.value.their_epoch == 3
        with pytest.raises(MaterializationFenced):
            claim(dsn, pg_schema, 2).close()
        assert claimed_epoch(dsn, pg_schema) == 3
        claim(dsn, pg_schema, 4).close()
        assert claimed_epoch(dsn, pg_schema) == 4
    finally:
        first.close()


def test_a_document_that_fails_the_schema_fails_the_materialization(
    tmp_path: Path, objects: ObjectStore, dev_env: EnvInfo, pg_schema: str
) -> None:
    dsn = dev_env.postgres_dsn
    runner = ShardRunner(tmp_path, materialize_context(objects, dsn, pg_schema))
    accounts = writer(objects, "accounts")
    written = accounts.append([{"id": 1, "name": "Ann"}, {"id": 2, "name": 7}])
    error = runner.start().ended()
    assert isinstance(error, TaskFailed)
    assert (error.journal, error.offset) == (accounts.journal, written[1].offset)
    assert query(dsn, f"SELECT count(*) FROM {pg_schema}.accounts") == [(0,)]


def test_a_row_the_database_refuses_names_its_document(
    tmp_path: Path, objects: ObjectStore, dev_env: EnvInfo, pg_schema: str
) -> None:
    dsn = dev_env.postgres_dsn
    runner = ShardRunner(tmp_path, materialize_context(objects, dsn, pg_schema))
    accounts = writer(objects, "accounts")
    # an integer the schema accepts and a bigint column cannot hold
    written = accounts.append(
        [{"id": 1, "name": "Ann"}, {"id": 2**70, "name": "Big"}, {"id": 3, "name": "Cy"}]
    )
    error = runner.start().ended()
    assert isinstance(error, TaskFailed)
    assert (error.journal, error.offset) == (accounts.journal, written[1].offset)
    assert "PostgreSQL refused the row" in error.reason
    assert query(dsn, f"SELECT count(*) FROM {pg_schema}.accounts") == [(0,)]
    assert checkpoint_row(dsn, pg_schema) == (1, {})
