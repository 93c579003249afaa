"""The shard store's files on the local volume, and writing pages into them directly.

The database is ``shard.db`` (with SQLite's ``-wal``/``-shm`` beside it while open). Its
``_shardkeeper_meta`` row, written by every commit inside the same transaction, names the
last commit it holds: the log, the offset where that commit's record begins, its random
id, its sequence number and the epoch that wrote it. Recovery compares that with the log.

Restore and replay write page images straight into the database file while no SQLite
connection has it open. While they do, a marker file says the database is torn; a volume
found with the marker is wiped and rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from shardkeeper.storage.wal import WalError

DB_NAME = "shard.db"
MARKER_NAME = "shard.db.replaying"
META_TABLE = "_shardkeeper_meta"
META_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {META_TABLE} ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), log TEXT NOT NULL, begin INTEGER NOT NULL, "
    "commit_id BLOB NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL)"
)
META_WRITE = (
    f"INSERT OR REPLACE INTO {META_TABLE} (id, log, begin, commit_id, seq, epoch) "
    "VALUES (1, ?, ?, ?, ?, ?)"
)


@dataclasses.dataclass(frozen=True)
class CommitMeta:
    """Which commit a database holds as its last one."""

    log: str
    begin: int
    commit_id: bytes
    seq: int
    epoch: int


@dataclasses.dataclass(frozen=True)
class LocalState:
    meta: CommitMeta | None
    page_size: int
    db_pages: int


class Volume:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.db = directory / DB_NAME
        self.wal = directory / (DB_NAME + "-wal")
        self.shm = directory / (DB_NAME + "-shm")
        self.marker = directory / MARKER_NAME

    def wipe(self) -> None:
        for path in (self.db, self.wal, self.shm, self.marker):
            path.unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def inspect(self) -> LocalState | None:
        """Bring the volume to a single closed database file and say what it holds.

        ``None`` means nothing usable: no database, or one torn by an interrupted replay.
        Any ``-wal`` left by a crash is checkpointed into the file first, so the answer
        covers every transaction SQLite had committed (including one whose log append
        never happened: recovery will find it missing from the log).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.marker.exists():
            self.wipe()
            return None
        if not self.db.exists():
            self.wal.unlink(missing_ok=True)
            self.shm.unlink(missing_ok=True)
            return None
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            db_pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            meta = read_meta(conn)
        except sqlite3.DatabaseError:
            conn.close()
            self.wipe()
            return None
        conn.close()
        self.ensure_closed()
        return LocalState(meta, page_size, db_pages)

    def ensure_closed(self) -> None:
        """Refuse to touch the file while SQLite may still hold frames elsewhere."""
        if self.wal.exists() and self.wal.stat().st_size > 0:
            raise WalError(f"{self.wal} still holds frames after the last connection closed")
        self.wal.unlink(missing_ok=True)
        self.shm.unlink(missing_ok=True)

    @contextlib.contextmanager
    def writing_pages(self, page_size: int) -> Iterator[PageWriter]:
        """Write pages into the closed database file; it is marked torn until done."""
        self.ensure_closed()
        self.marker.touch()
        _fsync_dir(self.directory)
        fd = os.open(self.db, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            writer = PageWriter(fd, page_size)
            yield writer
            os.fsync(fd)
        finally:
            os.close(fd)
        self.marker.unlink()
        _fsync_dir(self.directory)


class PageWriter:
    def __init__(self, fd: int, page_size: int) -> None:
        self.fd = fd
        self.page_size = page_size

    def write(self, page: int, data: bytes | memoryview) -> None:
        os.pwrite(self.fd, data, (page - 1) * self.page_size)

    def write_run(self, first_page: int, data: bytes | memoryview) -> None:
        """Consecutive pages starting at ``first_page``."""
        os.pwrite(self.fd, data, (first_page - 1) * self.page_size)

    def preallocate(self, db_pages: int) -> None:
        """Reserve the file's blocks up front: allocating them one write at a time is
        several times slower on ext4 than filling blocks that already exist."""
        if db_pages:
            os.posix_fallocate(self.fd, 0, db_pages * self.page_size)

    def resize(self, db_pages: int) -> None:
        os.ftruncate(self.fd, db_pages * self.page_size)

    def size_pages(self) -> int:
        return os.fstat(self.fd).st_size // self.page_size


def read_meta(conn: sqlite3.Connection) -> CommitMeta | None:
    try:
        row = conn.execute(
            f"SELECT log, begin, commit_id, seq, epoch FROM {META_TABLE} WHERE id = 1"
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # no table yet: no commit ever
    if row is None:
        return None
    return CommitMeta(str(row[0]), int(row[1]), bytes(row[2]), int(row[3]), int(row[4]))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
