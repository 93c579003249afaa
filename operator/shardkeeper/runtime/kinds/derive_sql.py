"""SQL derivations in SQLite, on the model of Flow's SQLite derivations.

Migrations
    Statements run once each, in order, in the shard store; the store records which ran
    (``_shardkeeper_migrations``). A migration already run must not change: the shard
    refuses to start if one did.

Lambdas
    One per source collection: one or more statements separated by ``;``, run for each
    document of that source in the shard's open transaction. Parameters are bound by name
    from the document: ``$id`` is the top-level field ``id``, ``$customer$name`` the value
    at ``/customer/name``; a missing value is ``NULL``; objects and arrays are bound as JSON
    text, booleans as 1 and 0. ``$flow_document`` is the whole document as JSON text.

Outputs
    Every row a statement returns (a ``SELECT``, or ``RETURNING``) is an output document:
    each column is a field, named by the column; a column named ``a$b`` sets ``/a/b``. A row
    with the single column ``flow_document`` holding a JSON object is that document.

Task SQL runs in the store's sandbox (:mod:`shardkeeper.storage.authorizer`): an allow list
of statements and functions, and no access at all to the runtime's ``_shardkeeper_``
tables. A statement it refuses fails the lambda or migration, naming what was refused. The
text check here (:func:`_check_unreserved`) only says so before the shard starts reading
when the name is spelt out; the store's authorizer is what enforces it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shardkeeper.runtime.core.checkpoint import RESERVED_PREFIX
from shardkeeper.runtime.core.documents import MISSING, Document, resolve_tokens
from shardkeeper.runtime.core.errors import DocumentRejected, TaskMisconfigured
from shardkeeper.runtime.kinds.derivation import SqlHandle
from shardkeeper.storage.errors import TransactionRolledBack

WHOLE_DOCUMENT = "flow_document"
NESTING = "$"


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, split at the ``;`` that end them (not those in strings,
    comments or trigger bodies); blank ones dropped."""
    statements = []
    current: list[str] = []
    for piece in sql.split(";"):
        current.append(piece)
        candidate = ";".join(current) + ";"
        if sqlite3.complete_statement(candidate):
            statements.append(candidate)
            current = []
    rest = ";".join(current)
    if rest.strip():
        statements.append(rest)
    return [s for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    """Whether a statement is more than blanks, comments and ``;``."""
    text = statement
    while True:
        text = text.lstrip().lstrip(";").lstrip()
        if text.startswith("--"):
            newline = text.find("\n")
            text = "" if newline < 0 else text[newline + 1 :]
        elif text.startswith("/*"):
            close = text.find("*/")
            text = "" if close < 0 else text[close + 2 :]
        else:
            return bool(text)


class DocumentParameters(dict[str, Any]):
    """Binds ``$name`` parameters from a document, resolving each name on first use.

    sqlite3 looks named parameters up with ``[]`` on a dict subclass, so only the names a
    statement uses are ever resolved.
    """

    def __init__(self, document: Document) -> None:
        super().__init__()
        self.document = document

    def __missing__(self, name: str) -> Any:
        if name == WHOLE_DOCUMENT:
            value: Any = _json_text(self.document)
        else:
            value = _bindable(resolve_tokens(self.document, name.split(NESTING)))
        self[name] = value
        return value


def _bindable(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, dict | list):
        return _json_text(value)
    return value


Binder = Callable[[Document], dict[str, Any]]


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def binder(names: Sequence[str]) -> Binder:
    """A function that makes the parameters :class:`DocumentParameters` would bind for
    ``names`` (those a statement uses) as a plain dict, at once: what each name reads is
    worked out here, once, and written out as one function with no loop or call per name
    (this runs for every statement of every document). Names are passed in as values,
    never written into the source."""
    constants: dict[str, Any] = {"_CONTAINERS": (dict, list), "_text": _json_text}
    body, entries = [], []
    for index, name in enumerate(names):
        key, value = f"_k{index}", f"p{index}"
        constants[key] = name
        entries.append(f"{key}: {value}")
        if name == WHOLE_DOCUMENT:
            body.append(f"{value} = _text(document)")
        elif NESTING in name:
            constants[f"_t{index}"] = tuple(name.split(NESTING))
            body.append(f"{value} = _bindable(_resolve(document, _t{index}))")
            constants["_bindable"], constants["_resolve"] = _bindable, resolve_tokens
        else:
            # a top-level field of the document (a dict): missing binds NULL, as None does
            body.append(f"{value} = document.get({key})")
            body.append(f"if isinstance({value}, _CONTAINERS): {value} = _text({value})")
    body.append("return {" + ", ".join(entries) + "}")
    bind: Binder = _generated("bind", "document", body, constants)
    return bind


RowConverter = Callable[[Sequence[Any]], Document]


def row_converter(columns: Sequence[str]) -> RowConverter:
    """:func:`row_document` for rows of these columns. Flat columns (the common case: no
    paths to follow) get a function written for them, that unpacks the row and returns a
    dict display of it (a third of what dict(zip()) costs, once per output)."""
    names = tuple(columns)
    if (len(names) == 1 and names[0] == WHOLE_DOCUMENT) or NESTING in "".join(names):
        return lambda row: row_document(names, row)
    constants: dict[str, Any] = {"_row_document": row_document, "_names": names}
    values = [f"c{index}" for index in range(len(names))]
    entries = []
    for index, name in enumerate(names):
        constants[f"_k{index}"] = name
        entries.append(f"_k{index}: c{index}")
    unpack = f"({', '.join(values)},) = row" if values else "() = row"
    blob = " or ".join(f"{value}.__class__ is bytes" for value in values) or "False"
    convert: RowConverter = _generated(
        "convert",
        "row",
        [
            unpack,
            f"if {blob}:",
            "    return _row_document(_names, row)  # which says which column",
            "return {" + ", ".join(entries) + "}",
        ],
        constants,
    )
    return convert


def _generated(name: str, parameters: str, body: Sequence[str], constants: dict[str, Any]) -> Any:
    """The function ``name`` of ``body``, its constants bound as defaults (values are passed
    in, never written into the source)."""
    defaults = "".join(f", {constant}={constant}" for constant in constants)
    source = "\n".join([f"def {name}({parameters}{defaults}):", *("    " + line for line in body)])
    namespace = dict(constants)
    exec(compile(source, f"<{name} of a lambda>", "exec"), namespace)
    return namespace[name]


def row_document(columns: Sequence[str], row: Sequence[Any]) -> Document:
    """The output document of one returned row."""
    if len(columns) == 1 and columns[0] == WHOLE_DOCUMENT:
        return _whole_document(row[0])
    if NESTING not in "".join(columns):
        # flat columns, the common case: no paths to follow
        document = dict(zip(columns, row, strict=True))
        for column, value in document.items():
            if isinstance(value, bytes):
                raise DocumentRejected(f"column {column!r} returned a BLOB, which JSON cannot hold")
        return document
    document = {}
    for column, value in zip(columns, row, strict=True):
        if isinstance(value, bytes):
            raise DocumentRejected(f"column {column!r} returned a BLOB, which JSON cannot hold")
        target = document
        *parents, leaf = column.split(NESTING)
        for parent in parents:
            child = target.setdefault(parent, {})
            if not isinstance(child, dict):
                raise DocumentRejected(f"column {column!r} nests under a non-object field")
            target = child
        target[leaf] = value
    return document


def _whole_document(value: Any) -> Document:
    try:
        parsed = json.loads(value) if isinstance(value, str | bytes) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise DocumentRejected(f"column {WHOLE_DOCUMENT} must hold a JSON object, not {value!r}")
    return parsed


def explain(txn: SqlHandle, error: sqlite3.Error) -> str:
    """``error``, naming what the store's sandbox refused when that is why it failed (a
    store transaction says; a plain connection, in tests, does not)."""
    explainer = getattr(txn, "explain", None)
    return str(explainer(error)) if explainer is not None else str(error)


def _restart_steps(txn: SqlHandle) -> Callable[[], None]:
    """What begins a new document's share of the store's step limit (a plain connection,
    in tests, has none)."""
    restart: Callable[[], None] = getattr(txn, "restart_steps", _no_steps)
    return restart


def _no_steps() -> None:
    return None


def _check_unreserved(what: str, sql: str) -> None:
    if RESERVED_PREFIX in sql.lower():
        raise TaskMisconfigured(
            f"{what} names a {RESERVED_PREFIX}* table: those hold the shard's checkpoint "
            "and belong to the runtime"
        )


class _Statement:
    """One statement of a lambda, and what its executions taught: the names of its
    parameters (which never change for a statement) and the columns of its rows."""

    __slots__ = ("bind", "columns", "convert", "sql")

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.bind: Binder | None = None
        self.columns: Any = None  # the last cursor.description
        self.convert: RowConverter = lambda row: {}

    def learn(self, description: Any) -> None:
        """Convert rows of these columns (a ``cursor.description``) from now on."""
        self.convert = row_converter([d[0] for d in description])
        self.columns = description


class SqlDeriver:
    """Runs a task's ``derive.sql``.

    Per document, each statement runs on one cursor of the open transaction (kept while it
    is open) with a plain dict of exactly the parameters it names: the first execution of a
    statement binds through :class:`DocumentParameters`, which records which names SQLite
    asks for, and later ones build just those. Rows become documents through a converter
    made once per set of columns."""

    def __init__(self, migrations: Sequence[str], lambdas: Mapping[str, str]) -> None:
        for index, migration in enumerate(migrations):
            _check_unreserved(f"migration {index}", migration)
        for source, sql in lambdas.items():
            _check_unreserved(f"the lambda of {source}", sql)
        self.migrations = list(migrations)
        self.lambdas = {source: split_statements(sql) for source, sql in lambdas.items()}
        empty = [source for source, statements in self.lambdas.items() if not statements]
        if empty:
            raise TaskMisconfigured(f"the lambda of {empty[0]} holds no SQL statement")
        self._statements = {
            source: [_Statement(sql) for sql in statements]
            for source, statements in self.lambdas.items()
        }
        # the transaction the cursor belongs to (held, so that a new one is never taken
        # for it), and the cursor
        self._txn: SqlHandle | None = None
        self._cursor: Any = None

    def pending_migrations(self, applied: Sequence[str]) -> list[str]:
        for index, ran in enumerate(applied):
            if index >= len(self.migrations) or self.migrations[index] != ran:
                raise TaskMisconfigured(
                    f"migration {index} was changed or removed after it ran; migrations are "
                    "append-only: restore it and add a new migration instead"
                )
        return self.migrations[len(applied) :]

    def migrate(self, txn: SqlHandle, migrations: Sequence[str], first: int) -> None:
        for index, migration in enumerate(migrations, start=first):
            try:
                for statement in split_statements(migration):
                    txn.execute(statement)
            except sqlite3.Error as exc:
                raise TaskMisconfigured(f"migration {index} failed: {explain(txn, exc)}") from None

    def derive(self, txn: SqlHandle, source: str, document: Document) -> list[Document]:
        outputs: list[Document] = []
        _restart_steps(txn)()
        cursor = self._cursor if txn is self._txn else None
        for statement in self._statements[source]:
            bind = statement.bind
            try:
                if bind is not None and cursor is not None:  # all but the first documents
                    cursor.execute(statement.sql, bind(document))
                elif bind is None:
                    parameters = DocumentParameters(document)
                    cursor = self._execute(txn, cursor, statement.sql, parameters)
                    statement.bind = binder(list(parameters))
                else:
                    cursor = self._execute(txn, cursor, statement.sql, bind(document))
                description = cursor.description
                if description is None:
                    continue
                rows = cursor.fetchall()
            except sqlite3.Error as exc:
                raise self._failed(txn, source, exc) from None
            if description != statement.columns:
                statement.learn(description)
            convert = statement.convert
            for row in rows:
                outputs.append(convert(row))
        return outputs

    def deriving(self, txn: SqlHandle, source: str) -> Callable[[Document], list[Document]]:
        """:meth:`derive` of ``source`` in ``txn``, for a batch of documents. A lambda of one
        statement that already ran in ``txn`` (every batch but a transaction's first) runs
        on its cursor with no lookup or branch per document that the batch does not need."""
        statements = self._statements[source]
        cursor = self._cursor if txn is self._txn else None
        if len(statements) != 1 or statements[0].bind is None or cursor is None:
            return functools.partial(self.derive, txn, source)
        statement = statements[0]
        sql, bind = statement.sql, statement.bind
        assert bind is not None
        execute, fetchall = cursor.execute, cursor.fetchall
        restart_steps = _restart_steps(txn)

        def derive_one(document: Document) -> list[Document]:
            restart_steps()
            try:
                execute(sql, bind(document))
                description = cursor.description
                if description is None:
                    return []
                rows = fetchall()
            except sqlite3.Error as exc:
                raise self._failed(txn, source, exc) from None
            if description != statement.columns:
                statement.learn(description)
            return list(map(statement.convert, rows))

        return derive_one

    def _failed(self, txn: SqlHandle, source: str, error: sqlite3.Error) -> DocumentRejected:
        self._forget_cursor()
        # the cursor skips the transaction's own check that the store is still open: a
        # store closed under it is the store's error (raised here), not the lambda's
        # (a transaction SQLite rolled back, interrupting a write, is the lambda's failure)
        with contextlib.suppress(sqlite3.Error, TransactionRolledBack):
            txn.execute("SELECT 1").close()
        return DocumentRejected(f"the lambda of {source} failed: {explain(txn, error)}")

    def _forget_cursor(self) -> None:
        # a cursor whose statement failed holds on to it, and a connection closed with a
        # statement alive stays open underneath (its WAL is never cleaned up): close it
        cursor, self._txn, self._cursor = self._cursor, None, None
        if cursor is not None:
            with contextlib.suppress(sqlite3.Error):
                cursor.close()

    def _execute(self, txn: SqlHandle, cursor: Any, sql: str, parameters: dict[str, Any]) -> Any:
        """Run ``sql`` on the transaction's cursor (its first statement makes it)."""
        if cursor is not None:
            return cursor.execute(sql, parameters)
        cursor = txn.execute(sql, parameters)
        self._txn, self._cursor = txn, cursor
        return cursor
