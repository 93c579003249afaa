"""Materializing collections into PostgreSQL tables: upserts, with the checkpoint in the
same database transaction, fenced by epoch.

Tables
    One per source collection (``materialize.postgres.tables``), created if missing: a
    column per top-level property of the collection's schema (string: ``text``, integer:
    ``bigint``, number: ``double precision``, boolean: ``boolean``, object, array or
    anything else: ``jsonb``; ``["T", "null"]`` counts as ``T``), a column per key pointer
    that is not a top-level property (its tokens joined by ``_``), and ``flow_document
    jsonb`` with the whole document. The key's columns are the primary key. An existing
    table is used as it is.

Transactions
    Within a shard transaction, documents are reduced by key: the newest wins, by
    ``_meta.clock`` (the writer's commit sequence, which a split's child continues), else
    the last read; a row is only ever updated by a document at least as new. At the
    commit, one PostgreSQL transaction first updates the shard's row of
    ``shardkeeper_checkpoints (shard text primary key, epoch bigint, checkpoint jsonb)``
    ``WHERE epoch = <this primary's epoch>``, then upserts every row, then commits. The
    row's lock orders a new primary's claim after an old one's commit; an update that
    finds no row means a newer primary claimed it, and the old one stops
    (:class:`MaterializationFenced`) with nothing written.

Start
    A new primary claims the row (``epoch`` raised to its own, which must be strictly
    newer: epochs are unique, so a claim of the row's own epoch is another replica's that
    chose the same one, and is refused like an older one); the row's
    checkpoint is where it resumes: the database, not the shard store, is authoritative. A
    shard's first claim (a new task, or a child of a split) starts from the store's
    checkpoint. Re-applying a transaction (a store checkpoint one behind the database)
    writes the same rows again, so the tables end the same.

Timeouts and failures
    Each session connects within ``connectTimeout`` and runs with ``lock_timeout`` and
    ``statement_timeout`` set from ``lockTimeout`` and ``statementTimeout``, so no call
    waits on the database for ever. An error of the database itself (a lost connection, a
    server shutting down, a lock or statement timeout, a serialization failure: psycopg's
    ``OperationalError``) is transient: the commit rolls back and is tried again with the
    same rows, reconnecting if need be (:data:`COMMIT_RETRY`), and only past that budget
    does the shard fail over to the shell's retry (:class:`MaterializationUnavailable`).
    Trying again is safe: the commit is one database transaction, fenced by the epoch, and
    rewriting rows that did land writes the same values. A row the database refuses for
    what is in it (SQLSTATE class 22, a data exception; class 23, an integrity constraint;
    42804, a datatype mismatch) would fail every time: the shard fails at the first such
    document (:class:`TaskFailed`, naming its journal, offset and table), found by applying
    the transaction's rows again one by one, each in a savepoint, in a transaction that is
    rolled back. Nothing of that transaction is committed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import SecretKeyRef
from shardkeeper.api.task import PostgresMaterialization
from shardkeeper.redact import SECRETS, without_quoted_input
from shardkeeper.runtime.core.checkpoint import SavedState, SourceOffset
from shardkeeper.runtime.core.documents import (
    MISSING,
    Document,
    clock_of,
    pointer_tokens,
    resolve_tokens,
)
from shardkeeper.runtime.core.errors import (
    CommitWithheld,
    DocumentRejected,
    TaskError,
    TaskFailed,
    TaskMisconfigured,
)
from shardkeeper.runtime.core.handler import SourceHandler
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.core.routing import KeyExtractor, pack_key
from shardkeeper.runtime.core.schemas import DocumentSchema
from shardkeeper.storage import errors
from shardkeeper.storage.retry import RetryPolicy
from shardkeeper.storage.store import ShardStore, Transaction

log = logging.getLogger(__name__)

CHECKPOINTS_TABLE = "shardkeeper_checkpoints"
DOCUMENT_COLUMN = "flow_document"
_TYPES = {
    "string": "text",
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
}
JSONB = "jsonb"
# how long a commit that fails for a transient reason is tried again in place, with its
# rows still in memory, before the shard fails over to the shell's retry
COMMIT_RETRY = RetryPolicy(max_attempts=30, base_delay=0.2, max_delay=5.0, deadline=60.0)
# the SQLSTATEs of a row the database refuses for what is in it: class 22 (data exception),
# class 23 (integrity constraint violation) and 42804 (datatype mismatch)
DOCUMENT_CLASSES = ("22", "23")
DOCUMENT_STATES = frozenset({"42804"})


class MaterializationFenced(errors.Fenced):
    """A newer primary claimed the shard's checkpoint row in the database."""

    def __init__(self, shard: str, our_epoch: int, their_epoch: int | None) -> None:
        # not Fenced.__init__: there is no journal offset here, only the database's row
        errors.StorageError.__init__(
            self,
            f"the checkpoint row of shard {shard!r} in {CHECKPOINTS_TABLE} belongs to epoch "
            f"{their_epoch if their_epoch is not None else 'newer'} (this primary has epoch "
            f"{our_epoch}): another primary took over, this one must stop",
        )
        self.journal = f"{CHECKPOINTS_TABLE}/{shard}"
        self.offset = 0
        self.our_epoch = our_epoch
        self.their_epoch = their_epoch if their_epoch is not None else our_epoch + 1


class MaterializationUnavailable(errors.StorageError):
    """PostgreSQL could not be reached or used for a transient reason (past the retries)."""


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """How long the materialization waits on the database, in seconds (the defaults are
    the spec's)."""

    connect: float
    lock: float
    statement: float

    @classmethod
    def of(cls, spec: PostgresMaterialization) -> Timeouts:
        return cls(
            connect=spec.connect_timeout.total_seconds(),
            lock=spec.lock_timeout.total_seconds(),
            statement=spec.statement_timeout.total_seconds(),
        )


def caused_by_document(exc: psycopg.Error) -> bool:
    """Whether the database refused a row for what is in it, so that applying the same
    document again fails again. A ``DataError`` without a SQLSTATE is psycopg's own (a
    string that text cannot hold, such as one with a NUL)."""
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.DataError)
    return state[:2] in DOCUMENT_CLASSES or state in DOCUMENT_STATES


def transient(exc: psycopg.Error) -> bool:
    """Whether trying again may succeed: the connection, the server or a wait failed, not
    the statement (classes 08, 40, 53, 55P03, 57, 58: psycopg's ``OperationalError``)."""
    return isinstance(exc, psycopg.OperationalError)


def describe(exc: psycopg.Error) -> str:
    """The database's own words for ``exc`` on one line, with its SQLSTATE. Not the DETAIL,
    which quotes the failing row's values."""
    primary = exc.diag.message_primary or str(exc)
    text = " ".join(primary.split())
    return f"{text} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else text


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    tokens: tuple[str, ...]

    def value(self, document: Document) -> Any:
        value = resolve_tokens(document, self.tokens)
        if value is MISSING or value is None:
            return None
        return Jsonb(value) if self.sql_type == JSONB else value


@dataclasses.dataclass(frozen=True)
class TableBinding:
    """How one collection lands in one table."""

    collection: str
    table: str
    columns: tuple[Column, ...]  # key columns first
    key_columns: int
    schema: DocumentSchema
    key: KeyExtractor

    def row(self, document: Document) -> list[Any]:
        return [c.value(document) for c in self.columns] + [Jsonb(document)]


def _sql_type(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return JSONB
    declared = schema.get("type")
    if isinstance(declared, list):
        concrete = [t for t in declared if t != "null"]
        declared = concrete[0] if len(concrete) == 1 else None
    return _TYPES.get(declared, JSONB) if isinstance(declared, str) else JSONB


def table_binding(collection: Collection, table: str) -> TableBinding:
    """The columns of ``collection``'s table, from its schema and key."""
    name = collection.metadata.name or ""
    schema = collection.spec.document_schema or {}
    properties = schema.get("properties", {})
    properties = properties if isinstance(properties, Mapping) else {}
    columns: list[Column] = []
    for pointer in collection.spec.key:
        tokens = pointer_tokens(pointer)
        nested: Any = schema
        for token in tokens:
            inner = nested.get("properties", {}) if isinstance(nested, Mapping) else {}
            nested = inner.get(token) if isinstance(inner, Mapping) else None
        columns.append(Column("_".join(tokens), _sql_type(nested), tokens))
    keyed = {c.name for c in columns}
    for prop, prop_schema in properties.items():
        if prop not in keyed and prop != DOCUMENT_COLUMN and not prop.startswith("_"):
            columns.append(Column(prop, _sql_type(prop_schema), (prop,)))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise TaskMisconfigured(
            f"collection {name!r}: its key pointers and properties give columns {names} of "
            f"table {table!r}, some twice"
        )
    return TableBinding(
        collection=name,
        table=table,
        columns=tuple(columns),
        key_columns=len(collection.spec.key),
        schema=DocumentSchema(collection.spec.document_schema, name=name),
        key=KeyExtractor.of(collection.spec.key),
    )


def create_table_sql(schema: str, binding: TableBinding) -> sql.Composed:
    columns = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name),
            sql.SQL(c.sql_type),
            sql.SQL(" NOT NULL" if i < binding.key_columns else ""),
        )
        for i, c in enumerate(binding.columns)
    ]
    columns.append(sql.SQL("{} jsonb NOT NULL").format(sql.Identifier(DOCUMENT_COLUMN)))
    keys = [sql.Identifier(c.name) for c in binding.columns[: binding.key_columns]]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, PRIMARY KEY ({}))").format(
        sql.Identifier(schema),
        sql.Identifier(binding.table),
        sql.SQL(", ").join(columns),
        sql.SQL(", ").join(keys),
    )


def _clock_sql(row: str) -> sql.Composed:
    """The ``_meta.clock`` of ``row``'s document, or -1 where it has none."""
    meta = sql.SQL("{}.{}->'_meta'->'clock'").format(
        sql.Identifier(row), sql.Identifier(DOCUMENT_COLUMN)
    )
    return sql.SQL("CASE WHEN jsonb_typeof({m}) = 'number' THEN ({m})::numeric ELSE -1 END").format(
        m=meta
    )


def upsert_sql(schema: str, binding: TableBinding) -> sql.Composed:
    """Insert or update one row; an update only by a document at least as new as the one
    the row holds (by ``_meta.clock``), so a split's two sides, read in any order, leave
    each key's newest document."""
    names = [c.name for c in binding.columns] + [DOCUMENT_COLUMN]
    updated = names[binding.key_columns :]
    return sql.SQL(
        "INSERT INTO {}.{} AS t ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {} WHERE {} <= {}"
    ).format(
        sql.Identifier(schema),
        sql.Identifier(binding.table),
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.SQL(", ").join(sql.Placeholder() for _ in names),
        sql.SQL(", ").join(sql.Identifier(n) for n in names[: binding.key_columns]),
        sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
            for n in updated
        ),
        _clock_sql("t"),
        _clock_sql("excluded"),
    )


def connection_string(
    spec: PostgresMaterialization, resolve_secret: Callable[[SecretKeyRef], str]
) -> str:
    if spec.dsn_secret_ref is None:
        assert spec.password_secret_ref is not None
        return make_conninfo(
            host=spec.host,
            port=spec.port,
            dbname=spec.database,
            user=spec.user,
            password=resolve_secret(spec.password_secret_ref),
        )
    dsn = resolve_secret(spec.dsn_secret_ref)
    try:
        parsed = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the piece it could not parse, which may be the password
        raise TaskMisconfigured(
            f"the connection string in Secret {spec.dsn_secret_ref.name!r} (key "
            f"{spec.dsn_secret_ref.key!r}) is not valid: {without_quoted_input(str(exc))}"
        ) from None
    SECRETS.add(str(parsed.get("password") or ""))  # as a URI may have it percent-encoded
    return dsn


def _older(document: Document, than: Document) -> bool:
    ours, theirs = clock_of(document), clock_of(than)
    return ours is not None and theirs is not None and ours < theirs


def application_name(shard: str) -> str:
    """The session's application_name: the shard's, within the 63 characters PostgreSQL keeps."""
    return f"shardkeeper {shard}"[:63]


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def encode_checkpoint(checkpoint: Mapping[str, SourceOffset]) -> dict[str, Any]:
    return {j: {"offset": s.offset, "fragment": s.fragment} for j, s in checkpoint.items()}


def decode_checkpoint(data: Mapping[str, Any]) -> dict[str, SourceOffset]:
    return {j: SourceOffset(int(v["offset"]), int(v["fragment"])) for j, v in data.items()}


@dataclasses.dataclass(frozen=True)
class _Pending:
    journal: str
    offset: int
    document: Document


class PostgresMaterializer(SourceHandler):
    """The handler of a materialization to PostgreSQL."""

    reads = "a materialization"

    def __init__(
        self,
        conninfo: str,
        schema: str,
        bindings: Sequence[TableBinding],
        shard: str,
        *,
        timeouts: Timeouts,
        may_continue: Callable[[], bool] | None = None,
        retry: RetryPolicy = COMMIT_RETRY,
    ) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.bindings = {b.collection: b for b in bindings}
        self.shard = shard
        self.epoch = 0
        self.timeouts = timeouts
        # asked before a commit is tried again: False ends it (the shell's Lease check)
        self._may_continue = may_continue
        self._retry = retry
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: dict[tuple[str, bytes], _Pending] = {}

    # -- start -----------------------------------------------------------------------------

    def open(self, store: ShardStore, saved: SavedState) -> dict[str, SourceOffset] | None:
        """Connect, create what is missing and claim the checkpoint row. A transient error
        is not retried here but raised as :class:`MaterializationUnavailable`: the shell
        reports it and starts over after a back-off."""
        self.epoch = store.epoch
        try:
            return self._open(saved)
        except psycopg.OperationalError as exc:
            raise MaterializationUnavailable(
                f"PostgreSQL unavailable while opening the materialization: {describe(exc)}"
                f"{self._timeout_hint(exc)}"
            ) from exc

    def _open(self, saved: SavedState) -> dict[str, SourceOffset]:
        conn = self._connect()
        ident = sql.Identifier(self.schema)
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} (shard text PRIMARY KEY, "
                    "epoch bigint NOT NULL, checkpoint jsonb)"
                ).format(ident, sql.Identifier(CHECKPOINTS_TABLE))
            )
            for binding in self.bindings.values():
                conn.execute(create_table_sql(self.schema, binding))
        return self._claim(saved.sources)

    def _claim(self, store_checkpoint: Mapping[str, SourceOffset]) -> dict[str, SourceOffset]:
        """Raise the row's epoch to ours; the checkpoint to resume from. The row's epoch
        must be older than ours: two primaries of one epoch would both pass the commit's
        ``WHERE epoch = ...``."""
        conn = self._connection()
        table = sql.SQL("{}.{}").format(
            sql.Identifier(self.schema), sql.Identifier(CHECKPOINTS_TABLE)
        )
        with conn.transaction():
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {} AS c (shard, epoch, checkpoint) VALUES (%s, %s, NULL) "
                    "ON CONFLICT (shard) DO UPDATE SET epoch = EXCLUDED.epoch "
                    "WHERE c.epoch < EXCLUDED.epoch RETURNING checkpoint"
                ).format(table),
                (self.shard, self.epoch),
            ).fetchone()
            if row is None:
                theirs = conn.execute(
                    sql.SQL("SELECT epoch FROM {} WHERE shard = %s").format(table), (self.shard,)
                ).fetchone()
                raise MaterializationFenced(self.shard, self.epoch, theirs[0] if theirs else None)
            if row[0] is not None:
                return decode_checkpoint(row[0])
            # the shard's first claim: go on from the store (a split child's inheritance)
            conn.execute(
                sql.SQL("UPDATE {} SET checkpoint = %s WHERE shard = %s").format(table),
                (Jsonb(encode_checkpoint(store_checkpoint)), self.shard),
            )
            return dict(store_checkpoint)

    def _connect(self) -> psycopg.Connection[Any]:
        """A new session with the timeouts set; it replaces the last one."""
        self.close()
        timeouts = self.timeouts
        conn = psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=math.ceil(timeouts.connect),
            # a database administrator sees whose session it is in pg_stat_activity
            application_name=application_name(self.shard),
        )
        try:
            conn.execute(
                "SELECT set_config('lock_timeout', %s, false), "
                "set_config('statement_timeout', %s, false)",
                (_milliseconds(timeouts.lock), _milliseconds(timeouts.statement)),
            )
            conn.autocommit = False
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _timeout_hint(self, exc: psycopg.Error) -> str:
        """Which of the task's timeouts ran out, when one did."""
        timeouts = self.timeouts
        if isinstance(exc, psycopg.errors.ConnectionTimeout):
            return f" (connectTimeout: {math.ceil(timeouts.connect)}s)"
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return f" (lockTimeout: {timeouts.lock:g}s)"
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return f" (statementTimeout: {timeouts.statement:g}s)"
        return ""

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise RuntimeError("the materialization is not open")
        return self._conn

    # -- transactions ------------------------------------------------------------------------

    def apply_source(
        self,
        txn: Transaction,
        collection: str,
        document: Document,
        outputs: OutputBuffer,
        *,
        journal: str,
        begin: int,
    ) -> None:
        binding = self.bindings[collection]
        problem = binding.schema.problem(document)
        if problem is not None:
            raise DocumentRejected(problem)
        key = pack_key(binding.key.values(document))
        # reduced by key: the newest document of a key in the transaction wins (the last
        # one read, unless it is older by its clock: read from the other side of a split)
        held = self._pending.get((collection, key))
        if held is not None and _older(document, held.document):
            return
        self._pending.pop((collection, key), None)
        self._pending[(collection, key)] = _Pending(journal, begin, document)

    def before_commit(self, checkpoint: Mapping[str, SourceOffset]) -> int:
        """Commit the transaction's rows with its checkpoint, trying again in place after
        a transient error (see the module's docstring)."""
        self._connection()
        pending = list(self._pending.items())
        self._pending.clear()
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                self._write(pending, checkpoint)
                return len(pending)
            except psycopg.Error as exc:
                if not transient(exc):
                    raise
                delay = self._retry.delay(attempt, random.uniform)
                elapsed = time.monotonic() - started
                if self._retry.gives_up(attempt, elapsed, delay):
                    raise MaterializationUnavailable(
                        f"PostgreSQL commit of {len(pending)} rows still failing after "
                        f"{attempt} attempts over {elapsed:.0f}s: {describe(exc)}"
                        f"{self._timeout_hint(exc)}"
                    ) from exc
                log.warning(
                    "PostgreSQL commit of %d rows failed for a transient reason, rolled "
                    "back: %s%s; attempt %d, trying again in %.2fs",
                    len(pending),
                    describe(exc),
                    self._timeout_hint(exc),
                    attempt,
                    delay,
                )
            time.sleep(delay)
            if self._may_continue is not None and not self._may_continue():
                raise CommitWithheld(
                    "this replica may no longer commit (past its Lease's renew deadline) "
                    "while it was trying the PostgreSQL commit again"
                )

    def _write(
        self,
        pending: list[tuple[tuple[str, bytes], _Pending]],
        checkpoint: Mapping[str, SourceOffset],
    ) -> None:
        """One attempt at the commit, on a new session if the last one broke."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
        try:
            with conn.transaction():
                self._update_checkpoint(checkpoint)
                for binding in self.bindings.values():
                    rows = [p.document for (c, _), p in pending if c == binding.collection]
                    if rows:
                        with conn.cursor() as cursor:
                            cursor.executemany(
                                upsert_sql(self.schema, binding), [binding.row(d) for d in rows]
                            )
        except psycopg.Error as exc:
            if not caused_by_document(exc):
                raise
            raise self._culprit(pending, checkpoint, exc) from None

    def _update_checkpoint(self, checkpoint: Mapping[str, SourceOffset]) -> None:
        conn = self._connection()
        updated = conn.execute(
            sql.SQL("UPDATE {}.{} SET checkpoint = %s WHERE shard = %s AND epoch = %s").format(
                sql.Identifier(self.schema), sql.Identifier(CHECKPOINTS_TABLE)
            ),
            (Jsonb(encode_checkpoint(checkpoint)), self.shard, self.epoch),
        )
        if updated.rowcount != 1:
            raise MaterializationFenced(self.shard, self.epoch, None)

    def _culprit(
        self,
        pending: list[tuple[tuple[str, bytes], _Pending]],
        checkpoint: Mapping[str, SourceOffset],
        error: psycopg.Error,
    ) -> TaskError:
        """The first document, in the order read, whose row the database refuses after the
        rows before it: the transaction again, a row per savepoint, with every constraint
        checked at once, and rolled back. Transient errors and the fence are raised."""
        conn = self._connection()
        with conn.transaction(force_rollback=True):
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            self._update_checkpoint(checkpoint)
            for (collection, _), item in pending:
                binding = self.bindings[collection]
                try:
                    with conn.transaction():
                        conn.execute(upsert_sql(self.schema, binding), binding.row(item.document))
                except psycopg.Error as exc:
                    if not caused_by_document(exc):
                        raise
                    return TaskFailed(item.journal, item.offset, self._refusal(binding, exc))
        read = sorted({p.journal for _, p in pending})
        return TaskError(
            f"PostgreSQL refused the commit of a transaction of {len(pending)} documents "
            f"(from {', '.join(read)}) but none of its rows when applied again one by one: "
            f"{describe(error)}"
        )

    def _refusal(self, binding: TableBinding, exc: psycopg.Error) -> str:
        column = exc.diag.column_name
        at = f", column {column!r}" if column else ""
        return (
            f"PostgreSQL refused the row for table {self.schema}.{binding.table}{at} "
            f"(collection {binding.collection!r}): {describe(exc)}"
        )

    def discard(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
