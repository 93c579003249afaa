"""The failure policy: a bad document or a failing lambda stops the shard with TaskFailed
naming the document's journal and offset, and nothing is committed past it."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import pytest
from tests.runtime.core_fixtures import (
    NAMESPACE,
    PREFIX,
    STORE_OPTIONS,
    ShardRunner,
    collection,
    context,
    objects,
    read,
    shard_for,
    task,
    writer,
)
from tests.support.wait import wait_for

from shardkeeper.api.collection import Collection
from shardkeeper.api.task import Task
from shardkeeper.runtime.core.errors import TaskFailed, TaskMisconfigured
from shardkeeper.runtime.core.processor import ShardContext
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.layout import collection_dir, collection_journal
from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

PAYMENTS = collection(
    "payments",
    key=["/id"],
    schema={
        "type": "object",
        "properties": {"id": {"type": "integer"}, "amount": {"type": "number"}},
        "required": ["id", "amount"],
    },
)
BALANCES = collection(
    "balances",
    key=["/id"],
    schema={
        "type": "object",
        "properties": {"id": {"type": "integer"}, "balance": {"type": "number"}},
        "required": ["id", "balance"],
    },
)
MIGRATIONS = [
    "CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount REAL NOT NULL CHECK (amount >= 0))"
]
LEDGER_LAMBDA = (
    "INSERT INTO ledger (id, amount) VALUES ($id, $amount);"
    "SELECT $id AS id, (SELECT sum(amount) FROM ledger) AS balance"
)


def ledger_task(lambda_sql: str = LEDGER_LAMBDA, migrations: list[str] | None = None) -> Task:
    return task(
        "ledger",
        {
            "type": "derivation",
            "sources": ["payments"],
            "outputs": ["balances"],
            "derive": {
                "sql": {
                    "migrations": MIGRATIONS if migrations is None else migrations,
                    "lambdas": {"payments": lambda_sql},
                }
            },
            "shards": {"maxTxnDuration": "100ms"},
        },
    )


def ledger_context(
    objects: ObjectStore, task_: Task | None = None, output: Collection = BALANCES
) -> ShardContext:
    return context(objects, task_ or ledger_task(), shard_for("ledger"), [PAYMENTS, output])


def payments(first: int, count: int) -> list[dict[str, Any]]:
    return [{"id": i, "amount": 1} for i in range(first, first + count)]


def balance_ids(objects: ObjectStore) -> list[int]:
    return [d.document["id"] for d in read(objects, "balances")]


def run_until_failure(
    runner: ShardRunner, objects: ObjectStore, bad: list[dict[str, Any]]
) -> tuple[TaskFailed, int]:
    """Commit three good payments, then append ``bad`` after one more good one; the error
    the shard ends with, and the offset of the first of ``bad``."""
    source = writer(objects, "payments")
    first = runner.start()
    source.append(payments(0, 3))
    wait_for(lambda: balance_ids(objects) == [0, 1, 2], timeout=30, what="3 good outputs")
    written = source.append([*payments(3, 1), *bad, *payments(10, 1)])
    error = first.ended()
    assert isinstance(error, TaskFailed), error
    # nothing past the bad document was committed: its transaction rolled back whole
    assert first.processor.progress().checkpoint[source.journal] <= written[1].offset
    assert set(balance_ids(objects)) <= {0, 1, 2, 3}
    return error, written[1].offset


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"id": 5, "amount": "lots"}, "'lots' is not of type 'number'"),
        ({"id": 5}, "'amount' is a required property"),
        ({"amount": 1}, "no value at key pointer /id"),
    ],
    ids=["wrong-type", "missing-field", "missing-key"],
)
def test_a_document_that_fails_the_schema_stops_the_shard_at_it(
    tmp_path: Path, objects: ObjectStore, bad: dict[str, Any], reason: str
) -> None:
    runner = ShardRunner(tmp_path, ledger_context(objects))
    error, offset = run_until_failure(runner, objects, [bad])
    assert error.journal == "collections/core/payments/source-writer"
    assert error.offset == offset
    assert reason in error.reason
    assert f"offset {offset}" in str(error)
    # a new primary fails at the very same document, however often it is started
    again = runner.start().ended()
    assert isinstance(again, TaskFailed)
    assert (again.journal, again.offset) == (error.journal, error.offset)


def test_a_line_that_is_not_json_stops_the_shard_at_it(
    tmp_path: Path, objects: ObjectStore
) -> None:
    runner = ShardRunner(tmp_path, ledger_context(objects))
    source = writer(objects, "payments")
    first = runner.start()
    source.append(payments(0, 2))
    wait_for(lambda: balance_ids(objects) == [0, 1], timeout=30, what="2 good outputs")
    # something that is no shard wrote half a document into the journal
    journal = Journal(objects, PREFIX + source.journal)
    head = journal.head()
    journal.writer(1, head).append(b'{"id": 2, "amount": 1}\n{"id": 3, "amou\n')
    error = first.ended()
    assert isinstance(error, TaskFailed)
    assert (error.journal, error.offset) == (
        source.journal,
        head + len(b'{"id": 2, "amount": 1}\n'),
    )
    assert "not valid JSON" in error.reason
    assert balance_ids(objects) in ([0, 1], [0, 1, 2])


def test_a_line_that_is_json_but_no_object_stops_the_shard_at_it(
    tmp_path: Path, objects: ObjectStore
) -> None:
    runner = ShardRunner(tmp_path, ledger_context(objects))
    source = writer(objects, "payments")
    written = source.append(payments(0, 2))
    journal = Journal(objects, PREFIX + source.journal)
    head = journal.head()
    journal.writer(1, head).append(b'{"id": 2, "amount": 1}\n[{"id": 3, "amount": 1}]\n')
    error = runner.start().ended()
    assert isinstance(error, TaskFailed)
    assert (error.journal, error.offset) == (
        source.journal,
        head + len(b'{"id": 2, "amount": 1}\n'),
    )
    assert "a document is a JSON object, not list" in error.reason
    assert written[-1].offset < error.offset


def test_a_lambda_that_fails_on_one_document_stops_the_shard_and_a_fix_resumes(
    tmp_path: Path, objects: ObjectStore
) -> None:
    runner = ShardRunner(tmp_path, ledger_context(objects))
    error, offset = run_until_failure(runner, objects, [{"id": 4, "amount": -5}])
    assert error.offset == offset
    assert "the lambda of payments failed: CHECK constraint failed" in error.reason

    # the person fixes the lambda; the shard resumes from the last commit, and the state
    # shows every payment once: what the failed transaction did was rolled back
    fixed = ledger_task(
        "INSERT INTO ledger (id, amount) VALUES ($id, max($amount, 0));"
        "SELECT $id AS id, (SELECT sum(amount) FROM ledger) AS balance"
    )
    resumed = runner.start(ctx=ledger_context(objects, fixed))
    wait_for(lambda: len(balance_ids(objects)) == 6, timeout=30, what="all 6 outputs")
    assert resumed.finish() is None
    found = [(d.document["id"], d.document["balance"]) for d in read(objects, "balances")]
    assert found == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 4), (10, 5)]


def test_a_lambda_that_never_ends_is_stopped_at_its_document(
    tmp_path: Path, objects: ObjectStore
) -> None:
    # a payment of 100 or more sends the lambda into a recursive CTE without an end
    endless = ledger_task(
        "INSERT INTO ledger (id, amount) VALUES ($id, $amount);"
        "SELECT $id AS id, CASE WHEN $amount < 100 THEN (SELECT sum(amount) FROM ledger) ELSE ("
        "WITH RECURSIVE forever(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM forever) "
        "SELECT count(*) FROM forever) END AS balance"
    )
    runner = ShardRunner(tmp_path, ledger_context(objects, endless))
    source = writer(objects, "payments")
    # the time limit, not the step limit, is what this test is about
    unlimited = dataclasses.replace(STORE_OPTIONS, task_step_limit=1 << 40)
    first = runner.start(document_time_limit=1.0, store_options=unlimited)
    source.append(payments(0, 3))
    wait_for(lambda: balance_ids(objects) == [0, 1, 2], timeout=30, what="3 good outputs")
    written = source.append([{"id": 3, "amount": 500}, *payments(4, 1)])
    error = first.ended()
    assert isinstance(error, TaskFailed), error
    assert (error.journal, error.offset) == (source.journal, written[0].offset)
    assert "the lambda of payments failed: interrupted" in error.reason
    assert "ran for more than 1s on this document" in error.reason
    # its transaction rolled back whole: nothing of it or after it was committed
    assert first.processor.progress().checkpoint[source.journal] <= written[0].offset
    assert balance_ids(objects) == [0, 1, 2]


def test_a_lambda_with_an_sql_error_stops_the_shard_at_the_first_document(
    tmp_path: Path, objects: ObjectStore
) -> None:
    broken = ledger_task("INSERT INTO no_such_table VALUES ($id)")
    runner = ShardRunner(tmp_path, ledger_context(objects, broken))
    source = writer(objects, "payments")
    written = source.append(payments(0, 3))
    error = runner.start().ended()
    assert isinstance(error, TaskFailed)
    assert (error.journal, error.offset) == (source.journal, written[0].offset)
    assert "no such table: no_such_table" in error.reason
    assert balance_ids(objects) == []


def test_an_output_that_fails_its_schema_names_the_source_document(
    tmp_path: Path, objects: ObjectStore
) -> None:
    no_balance = ledger_task("SELECT $id AS id, 'none' AS balance")
    runner = ShardRunner(tmp_path, ledger_context(objects, no_balance))
    source = writer(objects, "payments")
    written = source.append(payments(0, 2))
    error = runner.start().ended()
    assert isinstance(error, TaskFailed)
    assert (error.journal, error.offset) == (source.journal, written[0].offset)
    assert "an output fails" in error.reason
    assert "'none' is not of type 'number'" in error.reason


def test_a_recursive_cte_bomb_is_stopped_at_the_step_limit(
    tmp_path: Path, objects: ObjectStore
) -> None:
    bomb = ledger_task(
        "INSERT INTO ledger (id, amount) VALUES ($id, $amount);"
        "SELECT $id AS id, CASE WHEN $amount < 100 THEN (SELECT sum(amount) FROM ledger) ELSE ("
        "WITH RECURSIVE forever(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM forever) "
        "SELECT count(*) FROM forever) END AS balance"
    )
    runner = ShardRunner(tmp_path, ledger_context(objects, bomb))
    source = writer(objects, "payments")
    written = source.append([*payments(0, 2), {"id": 2, "amount": 500}])
    limited = dataclasses.replace(STORE_OPTIONS, task_step_limit=5)
    # the time limit is far off: only the step limit can stop it in the test's time
    error = runner.start(document_time_limit=3600.0, store_options=limited).ended()
    assert isinstance(error, TaskFailed), error
    assert (error.journal, error.offset) == (source.journal, written[2].offset)
    assert "the lambda of payments failed: interrupted" in error.reason
    assert "step limit of 5,000,000 SQLite instructions" in error.reason
    assert balance_ids(objects) == []


# a lambda that plants, through sqlite_master, a trigger on the runtime's pending outputs
# that lists a batch for another shard's recovery log (issue 11); the reserved names are
# spelt so that no text check finds them
PENDING = "'_shard' || 'keeper_pending_outputs'"
EVIL_BATCH = zlib.compress(b"{}\n").hex()
PLANT_TRIGGER = (
    "PRAGMA writable_schema = ON;"
    "INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES ('trigger', "
    f"'plant', {PENDING}, 0, 'CREATE TRIGGER plant AFTER INSERT ON ' || {PENDING} || "
    f"' BEGIN INSERT INTO ' || {PENDING} || ' (journal, begin, epoch, compressed) VALUES "
    f"(''recovery/core/victim/log'', 0, 1, x''{EVIL_BATCH}''); END');"
    "PRAGMA schema_version = 1000;"
    "PRAGMA writable_schema = OFF;"
    "SELECT $id AS id, 0 AS balance"
)


@pytest.mark.parametrize(
    ("lambda_sql", "refused"),
    [
        (PLANT_TRIGGER, "PRAGMA writable_schema(ON)"),
        ("CREATE TEMP TABLE scratch (x); SELECT $id AS id, 0 AS balance", "CREATE TEMP TABLE"),
        ("SELECT $id AS id, load_extension('/tmp/x.so') AS balance", "load_extension()"),
    ],
    ids=["writable-schema-trigger", "temp-table", "load-extension"],
)
def test_hostile_task_sql_fails_the_shard_and_writes_only_where_the_shard_may(
    tmp_path: Path, objects: ObjectStore, lambda_sql: str, refused: str
) -> None:
    ctx = ledger_context(objects, ledger_task(lambda_sql))
    runner = ShardRunner(tmp_path, ctx)
    source = writer(objects, "payments")
    written = source.append(payments(0, 2))
    error = runner.start().ended()
    assert isinstance(error, TaskFailed), error
    assert (error.journal, error.offset) == (source.journal, written[0].offset)
    assert "task SQL may not do that" in error.reason
    assert refused in error.reason
    # restarted, the shard fails the same way, having appended nothing anywhere
    again = runner.start().ended()
    assert isinstance(again, TaskFailed), again
    allowed = (
        PREFIX + ctx.shard.spec.recovery_log + "/",
        PREFIX + collection_dir(NAMESPACE, "payments"),
        PREFIX + collection_journal(NAMESPACE, "balances", ctx.shard_name),
    )
    keys = [info.key for info in objects.list(PREFIX)]
    assert keys
    assert [key for key in keys if not key.startswith(allowed)] == []
    assert balance_ids(objects) == []


@pytest.mark.parametrize(
    ("migrations", "lambda_sql", "reason"),
    [
        (["CREATE TABLE broken ("], LEDGER_LAMBDA, "migration 0 failed"),
        (MIGRATIONS, "DELETE FROM _shardkeeper_checkpoint", "belong to the runtime"),
        (MIGRATIONS, "-- nothing here", "holds no SQL statement"),
    ],
    ids=["failing-migration", "reserved-table", "empty-lambda"],
)
def test_a_broken_task_definition_fails_before_reading(
    tmp_path: Path, objects: ObjectStore, migrations: list[str], lambda_sql: str, reason: str
) -> None:
    runner = ShardRunner(tmp_path, ledger_context(objects, ledger_task(lambda_sql, migrations)))
    error = runner.start().ended()
    assert isinstance(error, TaskMisconfigured)
    assert reason in error.reason


def test_a_migration_changed_after_it_ran_is_refused(tmp_path: Path, objects: ObjectStore) -> None:
    runner = ShardRunner(tmp_path, ledger_context(objects))
    source = writer(objects, "payments")
    first = runner.start()
    source.append(payments(0, 1))
    wait_for(lambda: balance_ids(objects) == [0], timeout=30, what="1 output")
    assert first.finish() is None
    edited = ledger_task(migrations=["CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount REAL)"])
    error = runner.start(ctx=ledger_context(objects, edited)).ended()
    assert isinstance(error, TaskMisconfigured)
    assert "migration 0 was changed" in error.reason
    # appending a migration is how a task evolves
    evolved = ledger_task(migrations=[*MIGRATIONS, "CREATE INDEX ledger_amount ON ledger (amount)"])
    second = runner.start(ctx=ledger_context(objects, evolved))
    source.append(payments(1, 1))
    wait_for(lambda: balance_ids(objects) == [0, 1], timeout=30, what="2 outputs")
    assert second.finish() is None
