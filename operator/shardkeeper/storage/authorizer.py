"""What task SQL may do on a shard store's connection. Pure.

Replication works on the pages each commit writes, so any SQL is fine as long as the
store alone decides where transactions begin and end, the database stays in WAL mode, no
other database file is attached (its writes would not be logged) and the store's own meta
row is left alone.
"""

from __future__ import annotations

import enum
import sqlite3

from shardkeeper.storage.volume import META_TABLE


class Mode(enum.Enum):
    INTERNAL = "internal"  # the store's own statements
    READ = "read"  # queries outside a transaction
    WRITE = "write"  # statements inside a transaction


READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
DENIED_IN_WRITE = frozenset(
    {sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}
)
# actions whose first argument is the table, and those whose second argument is
META_WRITES = frozenset(
    {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_DROP_TABLE}
)
META_CHANGES = frozenset(
    {sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_ALTER_TABLE}
)
# pragmas that would change how pages reach the WAL, or move the database
DENIED_PRAGMAS = frozenset(
    {
        "journal_mode",
        "locking_mode",
        "wal_checkpoint",
        "wal_autocheckpoint",
        "journal_size_limit",
        "page_size",
        "synchronous",
        "temp_store_directory",
        "data_store_directory",
    }
)


def authorize(mode: Mode, action: int, arg1: str | None, arg2: str | None) -> int:
    if mode is Mode.INTERNAL:
        return sqlite3.SQLITE_OK
    if mode is Mode.READ:
        if action in READ_ACTIONS:
            return sqlite3.SQLITE_OK
        pragma = (arg1 or "").lower()
        if action == sqlite3.SQLITE_PRAGMA and arg2 is None and pragma not in DENIED_PRAGMAS:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    if action in DENIED_IN_WRITE:
        return sqlite3.SQLITE_DENY
    if action in META_WRITES and arg1 == META_TABLE:
        return sqlite3.SQLITE_DENY
    if action in META_CHANGES and arg2 == META_TABLE:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in DENIED_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK
