"""Task SQL stays in its sandbox: hostile lambdas and migrations on a real shard store's
connection, each refused with a message that names what was refused (that output batches
go only to the task's own journals is in test_core_txn_outputs).

The store is a real :class:`ShardStore` made primary on a local volume; only its recovery
log is a fake that keeps what a commit appends (no bucket is involved).
"""

from __future__ import annotations

import sqlite3
import types
import zlib
from pathlib import Path
from typing import Any, cast

import pytest

from shardkeeper.runtime.core import checkpoint
from shardkeeper.runtime.core.checkpoint import CommitRows
from shardkeeper.runtime.core.errors import DocumentRejected, TaskMisconfigured
from shardkeeper.runtime.core.outputs import OutputBatch
from shardkeeper.runtime.kinds.derive_sql import SqlDeriver
from shardkeeper.storage.faults import NO_FAULTS
from shardkeeper.storage.restore import ReplayState, RestoreReport
from shardkeeper.storage.store import ShardStore, StoreOptions, Transaction
from shardkeeper.storage.volume import Volume

OWN_JOURNAL = "collections/n/counted/counter-00000000-00000000"


class FakeWriter:
    """Takes the store's commit records as a recovery log's writer would."""

    def __init__(self) -> None:
        self.head = 0
        self.records: list[bytes] = []

    def append(self, payload: bytes) -> Any:
        begin, self.head = self.head, self.head + len(payload)
        self.records.append(payload)
        return types.SimpleNamespace(begin=begin, end=self.head)


def primary(tmp_path: Path, **options: Any) -> ShardStore:
    log = cast(Any, types.SimpleNamespace(name="recovery/n/counter/log", faults=NO_FAULTS))
    store = ShardStore(
        volume=Volume(tmp_path),
        log=log,
        epoch=1,
        state=ReplayState(log=log, offset=0, meta=None, page_size=None, db_pages=0),
        report=RestoreReport("empty", "a test", None, 0, 0, 0.0),
        options=StoreOptions(background_snapshots=False, **options),
        until=None,
    )
    store._become_primary(cast(Any, FakeWriter()))
    return store


@pytest.fixture
def store(tmp_path: Path) -> ShardStore:
    store = primary(tmp_path, task_step_limit=3)
    checkpoint.open_state(store)  # the runtime's tables, as a shard has them
    return store


def run_task(
    store: ShardStore, migrations: list[str], lambda_sql: str, documents: list[dict[str, Any]]
) -> list[Any]:
    """Migrate, then apply ``documents`` as the processor does: one transaction, the
    runtime's rows written after the lambdas, then commit."""
    deriver = SqlDeriver(migrations, {"src": lambda_sql})
    with store.transaction() as txn:
        deriver.migrate(txn, deriver.pending_migrations([]), 0)
    outputs: list[Any] = []
    with store.transaction() as txn:
        for document in documents:
            outputs.extend(deriver.derive(txn, "src", document))
        # the batch path, on the statements' cursor
        outputs.extend(deriver.deriving(txn, "src")({"key": "last", "n": 1}))
        write_runtime_rows(txn, b'{"k":1}\n')
    return outputs


def run_unsandboxed(migrations: list[str], lambda_sql: str, documents: list[Any]) -> list[Any]:
    """:func:`run_task` on a plain SQLite connection, with no authorizer or limit."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    deriver = SqlDeriver(migrations, {"src": lambda_sql})
    deriver.migrate(conn, deriver.pending_migrations([]), 0)
    outputs: list[Any] = []
    for document in documents:
        outputs.extend(deriver.derive(conn, "src", document))
    outputs.extend(deriver.deriving(conn, "src")({"key": "last", "n": 1}))
    return outputs


def write_runtime_rows(txn: Transaction, payload: bytes) -> None:
    checkpoint.write(
        txn,
        CommitRows(
            sources={"collections/n/src/w": checkpoint.SourceOffset(10, 0)},
            output_heads={OWN_JOURNAL: len(payload)},
            appended=[],
            pending=[OutputBatch(OWN_JOURNAL, 0, 1, payload)],
            transactions=1,
        ),
    )


COUNTS = "CREATE TABLE counts (key TEXT PRIMARY KEY, n INTEGER NOT NULL)"
COUNT_SQL = (
    "INSERT INTO counts (key, n) VALUES ($key, 1) "
    "ON CONFLICT (key) DO UPDATE SET n = n + 1 RETURNING key, n"
)


@pytest.mark.parametrize(
    ("migrations", "lambda_sql"),
    [
        ([COUNTS], COUNT_SQL),
        (
            [
                "CREATE TABLE totals (customer TEXT PRIMARY KEY NOT NULL, total REAL NOT NULL, "
                "orders INTEGER NOT NULL);"
            ],
            "INSERT INTO totals (customer, total, orders) VALUES ($key, $n, 1) "
            "ON CONFLICT (customer) DO UPDATE SET total = total + excluded.total, "
            "orders = orders + 1 RETURNING customer, total, orders;",
        ),
        (
            ["CREATE TABLE seen (id TEXT PRIMARY KEY)"],
            "INSERT OR IGNORE INTO seen (id) VALUES ($key);"
            "SELECT $key AS id, (SELECT count(*) FROM seen) AS seen",
        ),
        (
            [COUNTS, "CREATE INDEX counts_n ON counts (n)", "ALTER TABLE counts ADD COLUMN tag"],
            "UPDATE counts SET n = n WHERE key = 'none';"
            "INSERT INTO counts (key, n, tag) VALUES ($key, 1, json_extract($flow_document, "
            "'$.key')) ON CONFLICT (key) DO UPDATE SET n = n + 1;"
            "DELETE FROM counts WHERE n > 100;"
            "WITH RECURSIVE upto(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM upto WHERE i < 50) "
            "SELECT $key AS key, (SELECT sum(i) FROM upto) AS total, "
            "json_object('n', $n, 'tags', json_array(upper($key))) AS doc$json, "
            "row_number() OVER () AS rank, strftime('%Y', '2026-01-01') AS year, "
            "printf('%05.1f', abs($n)) AS padded, "
            "(SELECT count(*) FROM json_each('[1,2]')) AS each",
        ),
        (
            [
                COUNTS,
                "CREATE TABLE audit (key TEXT)",
                "CREATE VIEW big AS SELECT key FROM counts WHERE n > 1",
                "CREATE TRIGGER audited AFTER INSERT ON counts BEGIN "
                "INSERT INTO audit VALUES (new.key); END",
            ],
            "INSERT INTO counts (key, n) VALUES ($key, 1) "
            "ON CONFLICT (key) DO UPDATE SET n = n + 1;"
            "SELECT (SELECT count(*) FROM audit) AS audited, (SELECT count(*) FROM big) AS big, "
            "(SELECT count(*) FROM pragma_table_info('counts')) AS columns",
        ),
    ],
    ids=["count", "totals-example", "seen", "functions-and-ctes", "views-and-triggers"],
)
def test_the_sql_of_the_repos_examples_and_tests_still_runs(
    store: ShardStore, migrations: list[str], lambda_sql: str
) -> None:
    documents = [{"key": "a", "n": 2}, {"key": "a", "n": 3}]
    outputs = run_task(store, migrations, lambda_sql, documents)
    assert len(outputs) == 3
    # the sandbox changes nothing of what they return
    assert outputs == run_unsandboxed(migrations, lambda_sql, documents)
    assert checkpoint.open_state(store).pending == [OutputBatch(OWN_JOURNAL, 0, 1, b'{"k":1}\n')]


# -- hostile SQL -------------------------------------------------------------------------------

EVIL_PAYLOAD = b'{"evil":true}\n'
# the reserved names spelt so that no text check of the SQL finds them
PENDING = "'_shard' || 'keeper_pending_outputs'"
EVIL_ROW = (
    f"(''recovery/n/victim/log'', new.begin + 1000, 1, x''{zlib.compress(EVIL_PAYLOAD).hex()}'')"
)
PLANT_TRIGGER = (
    "PRAGMA writable_schema = ON;"
    "INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES ('trigger', "
    f"'plant', {PENDING}, 0, 'CREATE TRIGGER plant AFTER INSERT ON ' || {PENDING} || "
    f"' BEGIN INSERT INTO ' || {PENDING} || ' (journal, begin, epoch, compressed) VALUES "
    f"{EVIL_ROW}; END');"
    "PRAGMA schema_version = 1000;"
    "PRAGMA writable_schema = OFF;"
    "SELECT 1 AS planted"
)
BOMB = "WITH RECURSIVE forever(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM forever) "


@pytest.mark.parametrize(
    ("lambda_sql", "refused"),
    [
        (PLANT_TRIGGER, "PRAGMA writable_schema(ON)"),
        ("PRAGMA schema_version = 7", "PRAGMA schema_version(7)"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode(DELETE)"),
        ("PRAGMA user_version = 3", "PRAGMA user_version(3)"),
        ("PRAGMA foreign_keys = ON", "PRAGMA foreign_keys(ON)"),
        ("PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA wal_checkpoint(TRUNCATE)"),
        ("ATTACH DATABASE ':memory:' AS other", "ATTACH :memory:"),
        ("SELECT load_extension('/tmp/evil.so')", "load_extension()"),
        ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer()"),
        ("CREATE TEMP TABLE scratch (x)", "CREATE TEMP TABLE scratch"),
        ("CREATE TEMP VIEW peek AS SELECT 1", "CREATE TEMP VIEW peek"),
        (
            "CREATE TEMP TRIGGER spy AFTER INSERT ON counts BEGIN SELECT 1; END",
            "CREATE TEMP TRIGGER spy",
        ),
        ("CREATE VIRTUAL TABLE f USING fts5(x)", "CREATE VTABLE f"),
        ("SAVEPOINT s", "SAVEPOINT BEGIN, s"),
        ("COMMIT", "TRANSACTION COMMIT"),
        ("ANALYZE", "ANALYZE"),
        (f"{BOMB}SELECT n FROM forever", "step limit of 3,000,000 SQLite instructions"),
        (f"{BOMB}SELECT count(*) AS n FROM forever", "step limit of 3,000,000"),
    ],
    ids=[
        "writable-schema-trigger",
        "schema-version",
        "journal-mode",
        "user-version",
        "foreign-keys",
        "wal-checkpoint",
        "attach",
        "load-extension",
        "fts3-tokenizer",
        "temp-table",
        "temp-view",
        "temp-trigger",
        "virtual-table",
        "savepoint",
        "commit",
        "analyze",
        "cte-bomb-rows",
        "cte-bomb-count",
    ],
)
def test_a_hostile_lambda_fails_naming_what_was_refused(
    store: ShardStore, lambda_sql: str, refused: str
) -> None:
    deriver = SqlDeriver([COUNTS], {"src": lambda_sql})
    with store.transaction() as txn:
        deriver.migrate(txn, deriver.pending_migrations([]), 0)
    txn = store.begin()
    with pytest.raises(DocumentRejected) as failed:
        deriver.derive(txn, "src", {"key": "a"})
    store.rollback()
    assert "the lambda of src failed: " in str(failed.value)
    assert refused in str(failed.value)
    # the store goes on, and the runtime's own statements are what they were
    assert_runtime_tables_intact(store)


@pytest.mark.parametrize(
    ("migration", "refused"),
    [
        (PLANT_TRIGGER.replace("SELECT 1 AS planted", ""), "PRAGMA writable_schema(ON)"),
        ("CREATE TEMP TABLE t (x)", "CREATE TEMP TABLE t"),
        ("ATTACH DATABASE 'other.db' AS other", "ATTACH other.db"),
        (f"CREATE TABLE big AS {BOMB}SELECT n FROM forever", "step limit of 3,000,000"),
    ],
    ids=["writable-schema-trigger", "temp-table", "attach", "cte-bomb"],
)
def test_a_hostile_migration_fails_naming_what_was_refused(
    store: ShardStore, migration: str, refused: str
) -> None:
    deriver = SqlDeriver([COUNTS, migration], {"src": COUNT_SQL})
    with pytest.raises(TaskMisconfigured) as failed, store.transaction() as txn:
        deriver.migrate(txn, deriver.pending_migrations([]), 0)
    assert "migration 1 failed: " in str(failed.value)
    assert refused in str(failed.value)
    assert_runtime_tables_intact(store)


# what a Python derivation's txn.execute, or SQL that spells the names out and gets past the
# lambda's text check, asks of the store's own tables
@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("SELECT * FROM _shardkeeper_checkpoint", "reading the runtime's table"),
        ("SELECT count(*) FROM _SHARDKEEPER_META", "reading the runtime's table _SHARDKEEPER_META"),
        ("DELETE FROM _shardkeeper_pending_outputs", "DELETE _shardkeeper_pending_outputs"),
        (
            "INSERT INTO _shardkeeper_pending_outputs "
            "VALUES ('recovery/n/victim/log', 0, 1, x'00')",
            "INSERT _shardkeeper_pending_outputs",
        ),
        ("UPDATE _shardkeeper_output_heads SET head = 0", "UPDATE _shardkeeper_output_heads"),
        (
            "CREATE TRIGGER t AFTER INSERT ON _shardkeeper_pending_outputs BEGIN SELECT 1; END",
            "CREATE TRIGGER t, _shardkeeper_pending_outputs",
        ),
        ("CREATE VIEW _shardkeeper_peek AS SELECT 1", "CREATE VIEW _shardkeeper_peek"),
        ("CREATE INDEX i ON _shardkeeper_checkpoint (offset)", "CREATE INDEX i"),
        ("CREATE TABLE _shardkeeper_mine (x)", "CREATE TABLE _shardkeeper_mine"),
        ("DROP TABLE _shardkeeper_stats", "DROP TABLE _shardkeeper_stats"),
        ("ALTER TABLE _shardkeeper_stats RENAME TO stats", "ALTER TABLE main, _shardkeeper_stats"),
        (
            "PRAGMA table_info(_shardkeeper_checkpoint)",
            "PRAGMA table_info(_shardkeeper_checkpoint)",
        ),
    ],
)
def test_task_sql_may_not_touch_the_runtimes_tables(
    store: ShardStore, sql: str, refused: str
) -> None:
    txn = store.begin()
    with pytest.raises(sqlite3.DatabaseError) as failed:
        txn.execute(sql).fetchall()
    message = txn.explain(failed.value)
    store.rollback()
    assert "task SQL may not do that" in message
    assert refused in message
    assert_runtime_tables_intact(store)


def test_a_view_or_trigger_of_the_task_cannot_reach_the_runtimes_tables(
    store: ShardStore,
) -> None:
    with store.transaction() as txn:
        txn.execute(COUNTS)
        # made, but of no use: what they read and write is authorized where they are used
        txn.execute("CREATE VIEW peek AS SELECT * FROM _shardkeeper_checkpoint")
        txn.execute(
            "CREATE TRIGGER wipe AFTER INSERT ON counts BEGIN "
            "DELETE FROM _shardkeeper_pending_outputs; END"
        )
    for sql, refused in [
        ("SELECT * FROM peek", "reading the runtime's table _shardkeeper_checkpoint"),
        ("INSERT INTO counts VALUES ('a', 1)", "DELETE _shardkeeper_pending_outputs"),
    ]:
        txn = store.begin()
        with pytest.raises(sqlite3.DatabaseError) as failed:
            txn.execute(sql).fetchall()
        assert refused in txn.explain(failed.value)
        store.rollback()
    assert_runtime_tables_intact(store)


def test_a_lambda_cannot_plant_a_trigger_that_adds_pending_outputs(store: ShardStore) -> None:
    """The hole of issue 11: through writable_schema a lambda planted a trigger on the
    pending-outputs table, and the runtime's own insert then listed a batch for another
    shard's recovery log, which the next start appended."""
    deriver = SqlDeriver([COUNTS], {"src": PLANT_TRIGGER})
    with store.transaction() as txn:
        deriver.migrate(txn, deriver.pending_migrations([]), 0)
    txn = store.begin()
    try:
        deriver.derive(txn, "src", {"key": "a"})
    except DocumentRejected:
        store.rollback()
    else:
        write_runtime_rows(txn, b'{"k":1}\n')
        store.commit()
    pending = checkpoint.open_state(store).pending
    assert {batch.journal for batch in pending} <= {OWN_JOURNAL}
    names = store.query("SELECT type, name FROM sqlite_master WHERE name = 'plant'")
    assert names == []


def assert_runtime_tables_intact(store: ShardStore) -> None:
    """The store still commits the runtime's rows, and nothing was planted on its tables or
    left on its connection."""
    with store.transaction() as txn:
        write_runtime_rows(txn, b'{"k":2}\n')
        temp = txn.runtime_execute("SELECT type, name FROM sqlite_temp_master").fetchall()
    assert temp == []
    state = checkpoint.open_state(store)
    assert state.pending == [OutputBatch(OWN_JOURNAL, 0, 1, b'{"k":2}\n')]
    planted = store.query(
        "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') "
        "AND (lower(tbl_name) LIKE '\\_shardkeeper\\_%' ESCAPE '\\' OR name = 'plant')"
    )
    assert planted == []
