"""What task SQL may do on a shard store's connection. Pure.

Replication works on the pages each commit writes, so any SQL on the task's own tables
is fine as long as the store alone decides where transactions begin and end, the
database stays in WAL mode and nothing lives outside the main database file. The
runtime's own tables (``_shardkeeper_*``: the store's meta row, the checkpoint, the
pending outputs, ...) belong to the runtime alone.

Task SQL (lambdas, migrations, a Python derivation's ``txn.execute``) runs under an
**allow list**: every action SQLite asks about is refused unless it is one of

- reading, inserting, updating and deleting rows of the task's tables;
- creating, altering and dropping the task's tables, indexes, views and triggers (in the
  main database, not ``TEMP``);
- calling the built-in scalar, aggregate, window, date, math and JSON functions of
  :data:`FUNCTIONS`;
- recursive CTEs (:data:`~sqlite3.SQLITE_RECURSIVE`; how long they may run is the
  statement guard's business, see :meth:`ShardStore.guard_statements`);
- the read-only introspection pragmas of :data:`TASK_PRAGMAS`.

Any name that begins with :data:`RESERVED_PREFIX`, as a table, index, view or trigger, or
as the table a trigger, index or pragma is on, is refused whatever the action. The store's
own statements run in :attr:`Mode.INTERNAL`, where everything is allowed except what a
trigger or a view runs on their behalf (the runtime uses neither: one there was planted).
"""

from __future__ import annotations

import enum
import sqlite3

#: the names of the store's and the runtime's tables begin with this
RESERVED_PREFIX = "_shardkeeper_"


class Mode(enum.Enum):
    INTERNAL = "internal"  # the store's own statements
    READ = "read"  # queries outside a transaction
    WRITE = "write"  # statements inside a transaction


FUNCTIONS = frozenset(
    {
        # scalar
        "abs", "changes", "char", "coalesce", "format", "glob", "hex", "ifnull", "iif",
        "instr", "last_insert_rowid", "length", "like", "likelihood", "likely", "lower",
        "ltrim", "max", "min", "nullif", "printf", "quote", "random", "randomblob",
        "replace", "round", "rtrim", "sign", "soundex", "substr", "substring", "total_changes",
        "trim", "typeof", "unicode", "unlikely", "upper", "zeroblob",
        # math
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos",
        "cosh", "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow",
        "power", "radians", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
        # date and time
        "current_date", "current_time", "current_timestamp", "date", "datetime", "julianday",
        "strftime", "time", "unixepoch",
        # aggregate
        "avg", "count", "group_concat", "sum", "total",
        # window
        "cume_dist", "dense_rank", "first_value", "lag", "last_value", "lead", "nth_value",
        "ntile", "percent_rank", "rank", "row_number",
        # JSON
        "->", "->>", "json", "json_array", "json_array_length", "json_each", "json_extract",
        "json_group_array", "json_group_object", "json_insert", "json_object", "json_patch",
        "json_quote", "json_remove", "json_replace", "json_set", "json_tree", "json_type",
        "json_valid",
        # what SQLite itself calls to carry out ALTER TABLE (no statement can call these)
        "sqlite_drop_column", "sqlite_rename_column", "sqlite_rename_quotefix",
        "sqlite_rename_table", "sqlite_rename_test",
    }
)  # fmt: skip
#: pragmas task SQL may run: they only describe the task's tables
TASK_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)

_ROWS = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})
# schema actions, with which argument names what: (object, table it is on)
_SCHEMA = {
    sqlite3.SQLITE_CREATE_TABLE: (1, None),
    sqlite3.SQLITE_DROP_TABLE: (1, None),
    sqlite3.SQLITE_CREATE_VIEW: (1, None),
    sqlite3.SQLITE_DROP_VIEW: (1, None),
    sqlite3.SQLITE_CREATE_INDEX: (1, 2),
    sqlite3.SQLITE_DROP_INDEX: (1, 2),
    sqlite3.SQLITE_CREATE_TRIGGER: (1, 2),
    sqlite3.SQLITE_DROP_TRIGGER: (1, 2),
    sqlite3.SQLITE_ALTER_TABLE: (None, 2),
    # part of CREATE INDEX (and harmless on the task's own indexes)
    sqlite3.SQLITE_REINDEX: (1, None),
}
# SQLite's own tables: a trigger on one would run inside SQLite's schema changes
_SQLITE_TABLES = ("sqlite_",)
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name
    for name in (
        "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE",
        "CREATE_TEMP_TRIGGER", "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE",
        "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER",
        "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT", "PRAGMA", "READ", "SELECT",
        "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE",
        "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE",
    )
}  # fmt: skip


def reserved(name: str | None) -> bool:
    return name is not None and name.lower().startswith(RESERVED_PREFIX)


def refusal(
    mode: Mode,
    action: int,
    arg1: str | None,
    arg2: str | None,
    source: str | None = None,
) -> str | None:
    """Why SQL in ``mode`` may not do ``action`` (the arguments of an authorizer call),
    or None when it may."""
    if mode is Mode.INTERNAL:
        if source is None:
            return None
        return (
            f"{_describe(action, arg1, arg2)} from inside {source!r} in the runtime's own statement"
        )
    if action == sqlite3.SQLITE_READ:
        if mode is Mode.WRITE and reserved(arg1):
            return f"reading the runtime's table {arg1}"
        return None
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
        return None
    if action == sqlite3.SQLITE_FUNCTION:
        if (arg2 or "").lower() in FUNCTIONS:
            return None
        return f"calling the function {arg2}() (not one of the built-ins task SQL may call)"
    if action == sqlite3.SQLITE_PRAGMA:
        pragma = (arg1 or "").lower()
        if pragma in TASK_PRAGMAS and not reserved(arg2):
            return None
        return f"PRAGMA {arg1}" + (f"({arg2})" if arg2 is not None else "")
    if mode is Mode.WRITE:
        if action in _ROWS:
            if reserved(arg1):
                return f"{_describe(action, arg1, arg2)}: that table belongs to the runtime"
            return None
        where = _SCHEMA.get(action)
        if where is not None:
            named, on = where
            args = (None, arg1, arg2)
            name = args[named] if named is not None else None
            table = args[on] if on is not None else None
            if reserved(name) or reserved(table):
                what = _describe(action, arg1, arg2)
                return f"{what}: {RESERVED_PREFIX}* names belong to the runtime"
            if action == sqlite3.SQLITE_CREATE_TRIGGER and (table or "").lower().startswith(
                _SQLITE_TABLES
            ):
                return f"{_describe(action, arg1, arg2)}: a trigger on SQLite's own table"
            return None
    return _describe(action, arg1, arg2)


def authorize(
    mode: Mode,
    action: int,
    arg1: str | None,
    arg2: str | None,
    source: str | None = None,
) -> int:
    if refusal(mode, action, arg1, arg2, source) is None:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _describe(action: int, arg1: str | None, arg2: str | None) -> str:
    name = _ACTION_NAMES.get(action, f"action {action}").replace("_", " ")
    args = ", ".join(a for a in (arg1, arg2) if a is not None)
    return f"{name} {args}".rstrip() if args else name


class Sandbox:
    """A connection's authorizer: allows what :attr:`mode` allows, and remembers the last
    thing it refused (SQLite itself says only "not authorized")."""

    def __init__(self, mode: Mode = Mode.INTERNAL) -> None:
        self.mode = mode
        self.refused: str | None = None
        # why the store interrupted a statement of task SQL, if it did
        self.stopped: str | None = None

    def __call__(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        _database: str | None,
        source: str | None,
    ) -> int:
        reason = refusal(self.mode, action, arg1, arg2, source)
        if reason is None:
            return sqlite3.SQLITE_OK
        self.refused = reason
        return sqlite3.SQLITE_DENY

    def install(self, conn: sqlite3.Connection) -> None:
        """Authorize ``conn``'s statements with this sandbox, and allow it no attached
        database at all."""
        conn.set_authorizer(self)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)

    def explain(self, error: BaseException) -> str:
        """``error`` (of a statement of this connection), with what was refused when that
        is why it failed."""
        text = str(error)
        if self.refused is not None and ("not authorized" in text or "prohibited" in text):
            return f"{text}: task SQL may not do that ({self.refused})"
        if self.stopped is not None and "interrupted" in text:
            return f"{text}: {self.stopped}"
        return text
