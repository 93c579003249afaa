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
"""

from __future__ import annotations

import dataclasses
import logging
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
from shardkeeper.runtime.core.errors import DocumentRejected, TaskFailed, TaskMisconfigured
from shardkeeper.runtime.core.handler import SourceHandler
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.core.routing import KeyExtractor, pack_key
from shardkeeper.runtime.core.schemas import DocumentSchema
from shardkeeper.storage import errors
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
    ) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.bindings = {b.collection: b for b in bindings}
        self.shard = shard
        self.epoch = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: dict[tuple[str, bytes], _Pending] = {}

    # -- start -----------------------------------------------------------------------------

    def open(self, store: ShardStore, saved: SavedState) -> dict[str, SourceOffset] | None:
        self.epoch = store.epoch
        conn = psycopg.connect(self.conninfo, autocommit=False)
        self._conn = conn
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
        conn = self._connection()
        pending = list(self._pending.items())
        self._pending.clear()
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
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            raise self._culprit(pending, exc) from None
        return len(pending)

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
        self, pending: list[tuple[tuple[str, bytes], _Pending]], error: Exception
    ) -> Exception:
        """The first document the database refuses, as a TaskFailed (nothing committed)."""
        conn = self._connection()
        for (collection, _), item in pending:
            binding = self.bindings[collection]
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(upsert_sql(self.schema, binding), binding.row(item.document))
            except psycopg.Error as exc:
                return TaskFailed(
                    item.journal, item.offset, f"PostgreSQL refused the row: {exc}".strip()
                )
        return error

    def discard(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
