"""Reading commits from a real SQLite -wal file, and what task SQL may do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from shardkeeper.storage.authorizer import Mode, authorize
from shardkeeper.storage.volume import META_TABLE
from shardkeeper.storage.wal import WalTracker


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def page_of(db: Path, page: int, size: int = 4096) -> bytes:
    with open(db, "rb") as file:
        file.seek((page - 1) * size)
        return file.read(size)


def commit(conn: sqlite3.Connection, *sql: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for statement in sql:
        conn.execute(statement)
    conn.execute("COMMIT")


def test_each_commit_is_read_back_with_its_pages(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    conn = open_db(db)
    tracker = WalTracker(tmp_path / "t.db-wal", 4096)
    commit(conn, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    first = tracker.read_commit()
    assert set(first.frames) == {1, 2}
    assert first.db_pages == 2
    tracker.accept(first)
    blob = os.urandom(20_000)
    commit(conn, f"INSERT INTO t (v) VALUES (x'{blob.hex()}')")
    second = tracker.read_commit()
    assert second.start == first.end
    assert second.db_pages > 2
    pages = dict(tracker.read_pages(second.frames))
    tracker.accept(second)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for number, data in pages.items():
        assert page_of(db, number) == data


def test_a_restarted_wal_is_followed_and_pre_images_come_from_the_database(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    conn = open_db(db)
    tracker = WalTracker(tmp_path / "t.db-wal", 4096)
    commit(conn, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'a')")
    tracker.accept(tracker.read_commit())
    commit(conn, "UPDATE t SET v = 'b'")
    accepted = tracker.read_commit()
    tracker.accept(accepted)
    page = max(accepted.frames)
    after_b = tracker.read_pages({page: accepted.frames[page]})[0][1]
    # a later commit, not accepted (its append "failed"): its pre-image is the 'b' page
    commit(conn, "UPDATE t SET v = 'c'")
    failed = tracker.read_commit()
    assert tracker.page_before(page, failed, db, accepted.db_pages) == after_b
    # after a full checkpoint SQLite starts the -wal over with new salts
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tracker.accept(failed)
    commit(conn, "UPDATE t SET v = 'd'")
    restarted = tracker.read_commit()
    assert restarted.salts != failed.salts
    assert restarted.start == 32
    # the pre-image of a page is then the database file's
    assert tracker.page_before(page, restarted, db, failed.db_pages) == page_of(db, page)
    assert b"c" in page_of(db, page)
    assert tracker.page_before(failed.db_pages + 1, restarted, db, failed.db_pages) is None


@pytest.mark.parametrize(
    ("mode", "action", "arg1", "arg2", "allowed"),
    [
        (Mode.WRITE, sqlite3.SQLITE_INSERT, "kv", None, True),
        (Mode.WRITE, sqlite3.SQLITE_SAVEPOINT, "BEGIN", "sp", False),
        (Mode.WRITE, sqlite3.SQLITE_TRANSACTION, "COMMIT", None, False),
        (Mode.WRITE, sqlite3.SQLITE_ATTACH, "other.db", None, False),
        (Mode.WRITE, sqlite3.SQLITE_UPDATE, META_TABLE, "seq", False),
        (Mode.WRITE, sqlite3.SQLITE_CREATE_TRIGGER, "t", META_TABLE, False),
        (Mode.WRITE, sqlite3.SQLITE_PRAGMA, "journal_mode", "delete", False),
        (Mode.WRITE, sqlite3.SQLITE_PRAGMA, "user_version", "3", False),
        (Mode.WRITE, sqlite3.SQLITE_PRAGMA, "writable_schema", "1", False),
        (Mode.WRITE, sqlite3.SQLITE_PRAGMA, "schema_version", None, False),
        (Mode.WRITE, sqlite3.SQLITE_PRAGMA, "table_info", "kv", True),
        (Mode.WRITE, sqlite3.SQLITE_READ, "_shardkeeper_checkpoint", "journal", False),
        (Mode.WRITE, sqlite3.SQLITE_INSERT, "_Shardkeeper_Pending_Outputs", None, False),
        (Mode.WRITE, sqlite3.SQLITE_CREATE_TEMP_TABLE, "t", None, False),
        (Mode.WRITE, sqlite3.SQLITE_CREATE_TEMP_TRIGGER, "t", "kv", False),
        (Mode.WRITE, sqlite3.SQLITE_CREATE_TRIGGER, "t", "kv", True),
        (Mode.WRITE, sqlite3.SQLITE_FUNCTION, None, "json_extract", True),
        (Mode.WRITE, sqlite3.SQLITE_FUNCTION, None, "load_extension", False),
        (Mode.WRITE, sqlite3.SQLITE_CREATE_VTABLE, "f", "fts5", False),
        (Mode.READ, sqlite3.SQLITE_SELECT, None, None, True),
        (Mode.READ, sqlite3.SQLITE_READ, "kv", "v", True),
        (Mode.READ, sqlite3.SQLITE_PRAGMA, "table_info", None, True),
        (Mode.READ, sqlite3.SQLITE_PRAGMA, "user_version", "3", False),
        (Mode.READ, sqlite3.SQLITE_DELETE, "kv", None, False),
        (Mode.INTERNAL, sqlite3.SQLITE_TRANSACTION, "COMMIT", None, True),
        (Mode.INTERNAL, sqlite3.SQLITE_INSERT, "_shardkeeper_pending_outputs", None, True),
    ],
)
def test_authorizer(mode: Mode, action: int, arg1: str, arg2: str | None, allowed: bool) -> None:
    expected = sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
    assert authorize(mode, action, arg1, arg2) == expected


def test_the_store_allows_nothing_to_a_trigger_inside_its_own_statements() -> None:
    # the runtime uses no trigger or view: one that runs inside its statement was planted
    insert = (sqlite3.SQLITE_INSERT, "_shardkeeper_pending_outputs", None)
    assert authorize(Mode.INTERNAL, *insert, source="plant") == sqlite3.SQLITE_DENY
    assert authorize(Mode.INTERNAL, *insert, source=None) == sqlite3.SQLITE_OK
