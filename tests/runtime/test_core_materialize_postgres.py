"""Materialization to PostgreSQL: typed tables, upserts reduced by key, the checkpoint in
the same database transaction, and an epoch that fences an old primary."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql
from tests.runtime.core_fixtures import (
    NAMESPACE,
    Crash,
    Incarnation,
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
from shardkeeper.runtime.core.errors import CommitWithheld, TaskFailed
from shardkeeper.runtime.core.faults import RuntimeFaultPoint
from shardkeeper.runtime.core.processor import ShardContext
from shardkeeper.runtime.kinds import materialize_postgres
from shardkeeper.runtime.kinds.materialize_postgres import (
    COMMIT_RETRY,
    MaterializationFenced,
    MaterializationUnavailable,
    PostgresMaterializer,
    TableBinding,
    Timeouts,
    table_binding,
)
from shardkeeper.runtime.shell.collectionio import CollectionWriter
from shardkeeper.storage import errors
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.retry import RetryPolicy
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


def materialize_context(
    objects: ObjectStore, dsn: str, schema: str, **postgres: str
) -> ShardContext:
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
                    **postgres,
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


def at_head(written: CollectionWriter) -> dict[str, Any]:
    """The database checkpoint of a materialization that read all ``written`` wrote."""
    return {written.journal: {"offset": written.head, "fragment": written.head}}


def wait_accounts(dsn: str, schema: str, count: int) -> None:
    wait_for(
        lambda: query(dsn, f"SELECT count(*) FROM {schema}.accounts") == [(count,)],
        timeout=30,
        what=f"{count} rows",
        retry=NO_TABLE_YET,
    )


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
    assert checkpoint_row(dsn, pg_schema) == (1, at_head(accounts))

    second = runner.start()
    # it resumes where the database says, though its store never saw that commit
    wait_for(lambda: second.processor.progress().recovered, timeout=30, what="recovery")
    assert second.processor.progress().checkpoint == {accounts.journal: accounts.head}
    accounts.append([{"id": 3, "name": "Cy"}])
    wait_accounts(dsn, pg_schema, 3)
    assert second.finish() is None
    assert checkpoint_row(dsn, pg_schema) == (2, at_head(accounts))


def test_an_old_primary_is_fenced_by_the_checkpoint_row(
    tmp_path: Path, objects: ObjectStore, dev_env: EnvInfo, pg_schema: str
) -> None:
    dsn = dev_env.postgres_dsn
    runner = ShardRunner(tmp_path, materialize_context(objects, dsn, pg_schema))
    accounts = writer(objects, "accounts")
    old = runner.start()
    accounts.append([{"id": 1, "name": "Ann"}])
    wait_accounts(dsn, pg_schema, 1)
    new = runner.start()
    wait_for(lambda: claimed_epoch(dsn, pg_schema) == 2, timeout=30, what="the claim of epoch 2")
    # both read the next document; only the new primary may write it
    accounts.append([{"id": 2, "name": "Bob"}])
    error = old.ended()
    assert isinstance(error, errors.Fenced)
    assert "shardkeeper_checkpoints" in str(error)
    wait_accounts(dsn, pg_schema, 2)
    assert new.finish() is None
    assert claimed_epoch(dsn, pg_schema) == 2


TIMEOUTS = Timeouts(connect=10, lock=30, statement=300)


def claim(
    dsn: str,
    schema: str,
    epoch: int,
    *,
    bindings: Sequence[TableBinding] = (),
    timeouts: Timeouts = TIMEOUTS,
    may_continue: Callable[[], bool] | None = None,
    retry: RetryPolicy = COMMIT_RETRY,
    shard: str = "ns/s",
) -> PostgresMaterializer:
    """A materializer of ``shard`` that opened (claimed the row) with ``epoch``."""
    materializer = PostgresMaterializer(
        dsn,
        schema,
        bindings,
        shard,
        timeouts=timeouts,
        may_continue=may_continue,
        retry=retry,
    )
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


# the accounts table as the shard would create it, with {} for what a case adds
ACCOUNTS_TABLE = (
    "CREATE TABLE {schema}.accounts (id bigint NOT NULL PRIMARY KEY, name text, "
    "balance double precision{balance}, active boolean, tags {tags}, profile jsonb, "
    "flow_document jsonb NOT NULL{extra})"
)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A row the database refuses: how the table differs, the three documents written
    (the middle one refused) and what the FAILED message must say."""

    id: str
    documents: list[dict[str, Any]]
    says: list[str]
    balance: str = ""
    tags: str = "jsonb"
    extra: str = ""


REFUSALS = [
    Refusal(
        "value-out-of-range",
        # an integer the schema accepts and a bigint column cannot hold
        [{"id": 1, "name": "Ann"}, {"id": 2**70, "name": "Big"}, {"id": 3, "name": "Cy"}],
        ["bigint out of range", "SQLSTATE 22003"],
    ),
    Refusal(
        "wrong-type",
        [
            {"id": 1, "name": "Ann"},
            {"id": 2, "name": "Bob", "tags": ["x"]},
            {"id": 3, "name": "Cy"},
        ],
        ['column "tags" is of type bigint', "SQLSTATE 42804"],
        tags="bigint",
    ),
    Refusal(
        "not-null",
        [
            {"id": 1, "name": "Ann", "balance": 1},
            {"id": 2, "name": "Bob"},
            {"id": 3, "name": "Cy", "balance": 3},
        ],
        ["column 'balance'", "SQLSTATE 23502"],
        balance=" NOT NULL",
    ),
    Refusal(
        "check",
        [
            {"id": 1, "name": "Ann"},
            {"id": 2, "name": "Bob", "balance": -5},
            {"id": 3, "name": "Cy"},
        ],
        ['check constraint "balance_not_negative"', "SQLSTATE 23514"],
        extra=", CONSTRAINT balance_not_negative CHECK (balance >= 0)",
    ),
    Refusal(
        # each row alone is fine: only the rows before it make the second one fail
        "unique-across-rows",
        [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Ann"}, {"id": 3, "name": "Cy"}],
        ['unique constraint "accounts_name_key"', "SQLSTATE 23505"],
        extra=", UNIQUE (name)",
    ),
    Refusal(
        # checked only at the commit, unless the search for the document checks it at once
        "deferred-unique",
        [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Ann"}, {"id": 3, "name": "Cy"}],
        ['unique constraint "accounts_name_key"', "SQLSTATE 23505"],
        extra=", UNIQUE (name) DEFERRABLE INITIALLY DEFERRED",
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda case: case.id)
def test_a_row_the_database_refuses_fails_the_shard_at_its_document(
    case: Refusal, tmp_path: Path, objects: ObjectStore, dev_env: EnvInfo, pg_schema: str
) -> None:
    dsn = dev_env.postgres_dsn
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(
            ACCOUNTS_TABLE.format(
                schema=pg_schema, balance=case.balance, tags=case.tags, extra=case.extra
            )
        )
    runner = ShardRunner(tmp_path, materialize_context(objects, dsn, pg_schema))
    accounts = writer(objects, "accounts")
    written = accounts.append(case.documents)
    error = runner.start().ended()
    # FAILED, not a retry: the processor ended by itself, naming the document
    assert isinstance(error, TaskFailed), error
    assert (error.journal, error.offset) == (accounts.journal, written[1].offset)
    message = str(error)
    assert f"offset {written[1].offset} of journal {accounts.journal!r}" in message
    assert f"table {pg_schema}.accounts" in message
    for words in case.says:
        assert words in message
    assert dev_env.postgres_password not in message
    # nothing of the transaction: neither the rows around it nor the checkpoint
    assert query(dsn, f"SELECT count(*) FROM {pg_schema}.accounts") == [(0,)]
    assert checkpoint_row(dsn, pg_schema) == (1, {})


def transient_retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "transient reason" in r.getMessage()]


def committed_once(
    runner: ShardRunner, dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> tuple[Incarnation, CollectionWriter]:
    """The shard running, with one account committed, and its retries logged."""
    caplog.set_level(logging.WARNING, logger=materialize_postgres.__name__)
    shard = runner.start()
    accounts = writer(runner.ctx.objects, "accounts")
    accounts.append([{"id": 1, "name": "Ann"}])
    wait_accounts(dsn, schema, 1)
    return shard, accounts


def test_a_locked_table_times_out_and_the_commit_is_tried_again_until_it_is_released(
    tmp_path: Path,
    objects: ObjectStore,
    dev_env: EnvInfo,
    pg_schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = dev_env.postgres_dsn
    ctx = materialize_context(objects, dsn, pg_schema, lockTimeout="100ms")
    shard, accounts = committed_once(ShardRunner(tmp_path, ctx), dsn, pg_schema, caplog)
    with psycopg.connect(dsn) as locker:
        locker.execute(f"LOCK TABLE {pg_schema}.accounts IN ACCESS EXCLUSIVE MODE")
        accounts.append([{"id": 2, "name": "Bob"}])
        retries = wait_for(
            lambda: transient_retries(caplog)[1:],
            timeout=20,
            what="two commits that timed out on the lock",
        )
        assert "lock timeout" in retries[0]
        assert "lockTimeout: 0.1s" in retries[0]
        assert shard.thread.is_alive(), shard.error
        locker.rollback()
    wait_for(
        lambda: query(dsn, f"SELECT id FROM {pg_schema}.accounts ORDER BY id") == [(1,), (2,)],
        timeout=30,
        what="the row committed once the lock was released",
    )
    assert shard.finish() is None
    assert checkpoint_row(dsn, pg_schema) == (1, at_head(accounts))


def test_a_lost_connection_is_made_again_and_the_commit_tried_again(
    tmp_path: Path,
    objects: ObjectStore,
    dev_env: EnvInfo,
    pg_schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = dev_env.postgres_dsn
    ctx = materialize_context(objects, dsn, pg_schema)
    shard, accounts = committed_once(ShardRunner(tmp_path, ctx), dsn, pg_schema, caplog)
    name = materialize_postgres.application_name(f"{NAMESPACE}/{ctx.shard_name}")
    ended = query(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )
    assert ended == [(True,)]
    accounts.append([{"id": 2, "name": "Bob"}, {"id": 1, "name": "Ann", "balance": 2}])
    wait_for(
        lambda: (
            query(dsn, f"SELECT id, balance FROM {pg_schema}.accounts ORDER BY id")
            == [(1, 2.0), (2, None)]
        ),
        timeout=30,
        what="the rows committed on a new connection",
    )
    assert shard.finish() is None
    assert transient_retries(caplog), "the commit on the lost connection was not retried"
    assert checkpoint_row(dsn, pg_schema) == (1, at_head(accounts))


def test_a_server_that_never_answers_fails_within_the_connect_timeout(
    tmp_path: Path, objects: ObjectStore
) -> None:
    # it takes connections into its backlog and never says a word
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        dsn = f"postgresql://shardkeeper:not-for-status@127.0.0.1:{port}/db"
        ctx = materialize_context(objects, dsn, "public", connectTimeout="2s")
        shard = ShardRunner(tmp_path, ctx).start()
        started = time.monotonic()
        error = shard.ended()
        took = time.monotonic() - started
    assert isinstance(error, MaterializationUnavailable), error
    assert "connection timeout expired (connectTimeout: 2s)" in str(error)
    assert "not-for-status" not in str(error)
    assert took < 10, f"it took {took:.1f}s"


def test_a_commit_that_keeps_timing_out_gives_up_or_stops_once_it_may_not_commit(
    dev_env: EnvInfo, pg_schema: str
) -> None:
    """In-place retries end: past their budget, for the shell to start over, or as soon as
    the replica may no longer commit (its Lease)."""
    dsn = dev_env.postgres_dsn
    accounts = [table_binding(ACCOUNTS, "accounts")]
    quick = Timeouts(connect=10, lock=0.05, statement=300)
    two = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01, deadline=30)
    stubborn = claim(dsn, pg_schema, 1, bindings=accounts, timeouts=quick, retry=two)
    withheld = claim(
        dsn,
        pg_schema,
        1,
        bindings=accounts,
        timeouts=quick,
        may_continue=lambda: False,
        shard="ns/t",
    )
    try:
        with psycopg.connect(dsn) as locker:
            locker.execute(f"LOCK TABLE {pg_schema}.accounts IN ACCESS EXCLUSIVE MODE")
            for materializer in (stubborn, withheld):
                materializer.apply_source(
                    cast(Any, None),
                    "accounts",
                    {"id": 1, "name": "Ann"},
                    cast(Any, None),
                    journal="j",
                    begin=0,
                )
            with pytest.raises(MaterializationUnavailable) as unavailable:
                stubborn.before_commit({})
            assert "still failing after 2 attempts" in str(unavailable.value)
            assert "(lockTimeout: 0.05s)" in str(unavailable.value)
            with pytest.raises(CommitWithheld):
                withheld.before_commit({})
    finally:
        stubborn.close()
        withheld.close()
    assert query(dsn, f"SELECT count(*) FROM {pg_schema}.accounts") == [(0,)]
