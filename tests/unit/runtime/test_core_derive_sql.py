"""SQL derivations: statement splitting, parameter binding and rows as documents."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from shardkeeper.runtime.core.errors import DocumentRejected, TaskMisconfigured
from shardkeeper.runtime.kinds.derive_sql import (
    DocumentParameters,
    SqlDeriver,
    row_document,
    split_statements,
)


class Connection:
    """An in-memory database in the shape of the store's open transaction."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, parameters)


def test_statements_split_at_the_semicolons_that_end_them() -> None:
    sql = """
        INSERT INTO t VALUES ('a;b', $x); -- a comment; with a semicolon
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;
        /* only a comment */ ;
        SELECT $y
    """
    statements = split_statements(sql)
    assert len(statements) == 3
    assert "'a;b'" in statements[0]
    assert "SELECT 1; SELECT 2; END;" in statements[1]
    assert statements[2].split() == ["SELECT", "$y", ";"]
    assert split_statements("-- nothing\n;  ;") == []


def test_parameters_bind_fields_and_nested_values_by_name() -> None:
    db = Connection()
    document = {"id": 7, "flag": True, "tags": ["a"], "customer": {"name": "Ann", "zip": None}}
    row = db.execute(
        "SELECT $id, $flag, $tags, $customer$name, $customer$zip, $missing, $customer$nope$deeper",
        DocumentParameters(document),
    ).fetchone()
    assert row == (7, 1, '["a"]', "Ann", None, None, None)
    whole = db.execute(
        "SELECT json_extract($flow_document, '$.customer.name')", DocumentParameters(document)
    )
    assert whole.fetchone() == ("Ann",)


def test_parameters_resolve_only_what_a_statement_names() -> None:
    parameters = DocumentParameters({"a": 1, "b": 2})
    Connection().execute("SELECT $a", parameters)
    assert dict(parameters) == {"a": 1}


def test_rows_become_documents_by_column_name() -> None:
    assert row_document(["id", "total"], [1, 2.5]) == {"id": 1, "total": 2.5}
    assert row_document(["id", "who$name", "who$age"], [1, "A", 3]) == {
        "id": 1,
        "who": {"name": "A", "age": 3},
    }
    assert row_document(["flow_document"], ['{"x": [1]}']) == {"x": [1]}
    with pytest.raises(DocumentRejected, match="must hold a JSON object"):
        row_document(["flow_document"], ["[1]"])
    with pytest.raises(DocumentRejected, match="BLOB"):
        row_document(["b"], [b"\x00"])
    with pytest.raises(DocumentRejected, match="nests under a non-object"):
        row_document(["a", "a$b"], [1, 2])


def test_a_lambda_returns_rows_of_every_statement_that_returns_rows() -> None:
    db = Connection()
    deriver = SqlDeriver(
        ["CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)"],
        {
            "src": "INSERT INTO t VALUES ($k, 1) ON CONFLICT (k) DO UPDATE SET n = n + 1 "
            "RETURNING k, n; UPDATE t SET n = n WHERE k = 'none'; SELECT count(*) AS keys FROM t"
        },
    )
    deriver.migrate(db, deriver.pending_migrations([]), 0)
    assert deriver.derive(db, "src", {"k": "a"}) == [{"k": "a", "n": 1}, {"keys": 1}]
    assert deriver.derive(db, "src", {"k": "a"}) == [{"k": "a", "n": 2}, {"keys": 1}]


def test_an_sql_error_in_a_lambda_is_a_rejected_document() -> None:
    deriver = SqlDeriver([], {"src": "SELECT * FROM missing_table"})
    with pytest.raises(DocumentRejected, match="the lambda of src failed: no such table"):
        deriver.derive(Connection(), "src", {})


def test_migrations_are_append_only() -> None:
    deriver = SqlDeriver(["CREATE TABLE a (x)", "CREATE TABLE b (x)"], {"src": "SELECT 1"})
    assert deriver.pending_migrations([]) == ["CREATE TABLE a (x)", "CREATE TABLE b (x)"]
    assert deriver.pending_migrations(["CREATE TABLE a (x)"]) == ["CREATE TABLE b (x)"]
    with pytest.raises(TaskMisconfigured, match="migration 0 was changed or removed"):
        deriver.pending_migrations(["CREATE TABLE a (y)"])
    with pytest.raises(TaskMisconfigured, match="migration 2 was changed or removed"):
        deriver.pending_migrations([*deriver.migrations, "CREATE TABLE c (x)"])
    with pytest.raises(TaskMisconfigured, match="migration 1 failed"):
        deriver.migrate(Connection(), ["CREATE TABLE ("], 1)


def test_task_sql_may_not_touch_the_runtime_tables() -> None:
    with pytest.raises(TaskMisconfigured, match="migration 0 names a _shardkeeper_"):
        SqlDeriver(["DROP TABLE _shardkeeper_checkpoint"], {"src": "SELECT 1"})
    with pytest.raises(TaskMisconfigured, match="the lambda of src names"):
        SqlDeriver([], {"src": "SELECT * FROM _SHARDKEEPER_pending_outputs"})
