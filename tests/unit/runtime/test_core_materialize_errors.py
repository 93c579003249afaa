"""Which PostgreSQL errors a materialization tries again and which fail the shard at a
document, and the timeouts it takes from its spec."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest

from shardkeeper.api.task import PostgresMaterialization
from shardkeeper.runtime.kinds.materialize_postgres import (
    Timeouts,
    caused_by_document,
    describe,
    transient,
)

# (error, caused by the document, transient)
ERRORS = [
    (psycopg.errors.NumericValueOutOfRange("bigint out of range"), True, False),
    (psycopg.errors.InvalidTextRepresentation("invalid input syntax"), True, False),
    (psycopg.errors.UntranslatableCharacter("unsupported Unicode escape"), True, False),
    (psycopg.errors.NotNullViolation("null value in column"), True, False),
    (psycopg.errors.CheckViolation("violates check constraint"), True, False),
    (psycopg.errors.UniqueViolation("duplicate key value"), True, False),
    (psycopg.errors.ForeignKeyViolation("violates foreign key constraint"), True, False),
    (psycopg.errors.DatatypeMismatch("column is of type bigint"), True, False),
    # psycopg's own, before the row reaches the server
    (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), True, False),
    (psycopg.OperationalError("server closed the connection unexpectedly"), False, True),
    (psycopg.errors.ConnectionTimeout("connection timeout expired"), False, True),
    (psycopg.errors.AdminShutdown("terminating connection"), False, True),
    (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), False, True),
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False, True),
    (psycopg.errors.SerializationFailure("could not serialize access"), False, True),
    (psycopg.errors.DeadlockDetected("deadlock detected"), False, True),
    (psycopg.errors.TooManyConnections("too many clients already"), False, True),
    # the table or the role, not a document: neither
    (psycopg.errors.UndefinedColumn('column "x" does not exist'), False, False),
    (psycopg.errors.InsufficientPrivilege("permission denied"), False, False),
]


@pytest.mark.parametrize(
    ("error", "document", "again"), ERRORS, ids=lambda v: type(v).__name__ if v else None
)
def test_errors_are_the_documents_or_transient(
    error: psycopg.Error, document: bool, again: bool
) -> None:
    assert caused_by_document(error) is document
    assert transient(error) is again


def test_an_error_is_described_on_one_line_with_its_sqlstate() -> None:
    error = psycopg.errors.LockNotAvailable("canceling statement\n  due to lock timeout")
    assert describe(error) == "canceling statement due to lock timeout (SQLSTATE 55P03)"
    assert describe(psycopg.OperationalError("connection lost")) == "connection lost"


def test_the_timeouts_come_from_the_spec_with_defaults() -> None:
    base = {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "tables": {"a": "a"}}
    assert Timeouts.of(PostgresMaterialization.model_validate(base)) == Timeouts(10, 30, 300)
    spec = PostgresMaterialization.model_validate(
        {**base, "connectTimeout": "3s", "lockTimeout": "250ms", "statementTimeout": "1m"}
    )
    assert Timeouts.of(spec) == Timeouts(3, 0.25, 60)
