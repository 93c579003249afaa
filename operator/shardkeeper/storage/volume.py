"""The shard store's files on the local volume, and writing pages into them directly.

The database is ``shard.db`` (with SQLite's ``-wal``/``-shm`` beside it while open). Its
``_shardkeeper_meta`` row, written by every commit inside the same transaction, names the
last commit it holds: the log, the offset where that commit's record begins, its random
id, its sequence number and the epoch that wrote it. Recovery compares that with the log.

Restore and replay write page images straight into the database file while no SQLite
connection has it open. While they do, a marker file says the database is torn; a volume
found with the marker is wiped and rebuilt, never trusted. The marker goes only after the
file was synced, so "no marker" always means "every page written is durable".

Snapshot parts, which are large, are written with ``O_DIRECT`` where the file system allows
it (:meth:`PageWriter.runs`): copying a whole store through the page cache and writing it
back costs several times the CPU of a direct write, and restore shares its CPU with
everything else on the node. Replay writes a commit's pages by runs of consecutive pages
(:meth:`PageWriter.write_pages`): long runs directly too, short ones with one ``pwritev``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import mmap
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
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
            writer = PageWriter(self.db, fd, page_size)
            yield writer
            # one sync for everything written through this writer, direct or not: fsync
            # covers the inode whichever descriptor wrote, and flushes the device's cache
            os.fsync(fd)
        finally:
            os.close(fd)
        self.marker.unlink()
        _fsync_dir(self.directory)


#: ``O_DIRECT`` wants buffers, offsets and lengths aligned to the device's logical block.
#: Whole memory pages satisfy every common device, and they also keep a direct write from
#: sharing a cached page with a buffered one (a partly written cached page is read from
#: disk first, and could then write stale bytes back over a concurrent direct write).
DIRECT_ALIGN = max(4096, mmap.PAGESIZE)
#: buffers one ``pwritev`` takes at most (POSIX guarantees 16; Linux takes 1024)
IOV_MAX = max(16, min(1024, os.sysconf("SC_IOV_MAX")))
#: consecutive pages of a commit from which replay writes them directly (64 KiB of 4 KiB
#: pages): a direct write waits for the device, which pays for itself only on long runs
DIRECT_RUN_PAGES = 16


class PageWriter:
    def __init__(self, path: Path, fd: int, page_size: int) -> None:
        self.path = path
        self.fd = fd
        self.page_size = page_size

    def write(self, page: int, data: bytes | memoryview) -> None:
        write_all(self.fd, data, (page - 1) * self.page_size)

    def write_run(self, first_page: int, data: bytes | memoryview) -> None:
        """Consecutive pages starting at ``first_page``."""
        write_all(self.fd, data, (first_page - 1) * self.page_size)

    def write_pages(
        self, pages: Sequence[tuple[int, bytes | memoryview]], runs: RunWriter | None = None
    ) -> None:
        """``(page number, page)`` pairs of a commit, each number at most once. Pages with
        consecutive numbers are written together: runs of :data:`DIRECT_RUN_PAGES` or more
        through ``runs`` (directly to the device, if it can), shorter ones with one
        ``pwritev`` each: a system call per page, with the threads that fetch the log
        running, also waits for the GIL after every call."""
        start = 0
        while start < len(pages):
            first = pages[start][0]
            end = start + 1
            while end < len(pages) and pages[end][0] == first + end - start:
                end += 1
            run = [data for _, data in pages[start:end]]
            if runs is not None and len(run) >= DIRECT_RUN_PAGES:
                runs.write_pages(first, run)
            else:
                write_pages_all(self.fd, run, (first - 1) * self.page_size)
            start = end

    @contextlib.contextmanager
    def runs(self, *, writers: int, run_bytes: int) -> Iterator[RunWriter]:
        """A :class:`RunWriter` with ``writers`` buffers of ``run_bytes`` (rounded up to
        :data:`DIRECT_ALIGN`), made as they are first needed. Everything it wrote is in the
        file (not necessarily durable: the sync at the end of :meth:`Volume.writing_pages`
        does that) once the block ends; no thread may still be using it then."""
        direct_fd = _open_direct(self.path) if self.page_size % DIRECT_ALIGN == 0 else None
        chunk = -(-max(run_bytes, 1) // DIRECT_ALIGN) * DIRECT_ALIGN
        runs = RunWriter(self, direct_fd, max(1, writers), chunk)
        try:
            yield runs
        finally:
            runs.close()

    def preallocate(self, db_pages: int) -> None:
        """Reserve the file's blocks up front: the file is laid out in one piece, a full
        volume fails before anything was downloaded, and concurrent writes at scattered
        offsets never extend the file."""
        if db_pages:
            os.posix_fallocate(self.fd, 0, db_pages * self.page_size)

    def resize(self, db_pages: int) -> None:
        os.ftruncate(self.fd, db_pages * self.page_size)

    def size_pages(self) -> int:
        return os.fstat(self.fd).st_size // self.page_size


class RunWriter:
    """Writes runs of pages at their offsets from several threads at once (so the order of
    runs does not matter), directly to the device when the file allows ``O_DIRECT``.

    Direct writes go through page-aligned buffers: a caller that can fill one itself
    borrows it (:meth:`lend`) and has it written without a copy (:meth:`write_lent`);
    :meth:`write_run` copies a run into one, which still costs far less than moving the run
    through the page cache. There are at most ``writers`` buffers, reused (a caller waits
    for a free one), so memory stays flat whatever the size of the store.
    Runs that are not aligned, or a file system that refuses direct writes, are written
    through the page cache instead: same result, just slower.
    """

    def __init__(self, pages: PageWriter, direct_fd: int | None, writers: int, chunk: int) -> None:
        self._pages = pages
        # closed only by close(): a descriptor closed while another thread writes to it
        # could be reused by an unrelated open and receive that thread's pages
        self._direct_fd = direct_fd
        self._direct = direct_fd is not None
        self._chunk = chunk
        self._writers = writers
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []
        self._allocated: list[mmap.mmap] = []
        self._returned = threading.Condition(self._lock)
        self.direct_bytes = 0
        self.buffered_bytes = 0

    @property
    def direct(self) -> bool:
        """Whether runs are still written directly (it turns off if the device refuses)."""
        return self._direct

    def write_run(self, first_page: int, data: bytes | memoryview) -> None:
        """Pages ``first_page ..`` from ``data``. Thread-safe; runs must not overlap."""
        offset = (first_page - 1) * self._pages.page_size
        view = memoryview(data).cast("B")
        if not self._direct or offset % DIRECT_ALIGN or len(view) % DIRECT_ALIGN:
            write_all(self._pages.fd, view, offset)
            self._count(0, len(view))
            return
        buffer = self._take_buffer()
        try:
            for start in range(0, len(view), self._chunk):
                piece = view[start : start + self._chunk]
                self._write_direct(buffer, piece, offset + start)
        finally:
            self._give_back(buffer)

    def write_pages(self, first_page: int, pages: Sequence[bytes | memoryview]) -> None:
        """Consecutive pages from ``first_page``, each given apart (as a log record holds
        them): gathered into a buffer, a buffer's worth per direct write. Thread-safe; runs
        must not overlap."""
        size = self._pages.page_size
        offset = (first_page - 1) * size
        if not self._direct or offset % DIRECT_ALIGN or size % DIRECT_ALIGN:
            write_pages_all(self._pages.fd, pages, offset)
            self._count(0, size * len(pages))
            return
        per_buffer = max(1, self._chunk // size)
        buffer = self._take_buffer()
        try:
            with memoryview(buffer) as whole:
                for start in range(0, len(pages), per_buffer):
                    at = 0
                    for page in pages[start : start + per_buffer]:
                        if len(page) != size:
                            raise ValueError(f"a page of {len(page)} bytes, not {size}")
                        whole[at : at + size] = page
                        at += size
                    with whole[:at] as filled:
                        self._write_aligned(filled, offset + start * size)
        finally:
            self._give_back(buffer)

    @contextlib.contextmanager
    def lend(self) -> Iterator[memoryview]:
        """A free buffer of ``run_bytes`` (or more), page-aligned, for the caller to fill
        and hand to :meth:`write_lent` before the block ends. Waits while all are taken."""
        buffer = self._take_buffer()
        try:
            with memoryview(buffer) as view:
                yield view
        finally:
            self._give_back(buffer)

    def write_lent(self, first_page: int, filled: memoryview) -> None:
        """Pages ``first_page ..`` from the start of a buffer from :meth:`lend`, written
        from where they are. Thread-safe; runs must not overlap."""
        offset = (first_page - 1) * self._pages.page_size
        if offset % DIRECT_ALIGN or len(filled) % DIRECT_ALIGN:
            write_all(self._pages.fd, filled, offset)
            self._count(0, len(filled))
        else:
            self._write_aligned(filled, offset)

    def _write_direct(self, buffer: mmap.mmap, piece: memoryview, offset: int) -> None:
        with memoryview(buffer) as whole, whole[: len(piece)] as aligned:
            aligned[:] = piece
            self._write_aligned(aligned, offset)

    def _write_aligned(self, aligned: memoryview, offset: int) -> None:
        size = len(aligned)
        written = 0
        if self._direct and self._direct_fd is not None:
            try:
                written = os.pwrite(self._direct_fd, aligned, offset)
            except OSError as exc:
                # alignment the device does not accept, or a file system that takes
                # O_DIRECT at open but not at write: the page cache does the rest
                if exc.errno != errno.EINVAL:
                    raise
                self._direct = False
        if written < size:
            # a short direct write (or none): the rest goes through the page cache
            write_all(self._pages.fd, aligned[written:], offset + written)
        self._count(written, size - written)

    def _count(self, direct: int, buffered: int) -> None:
        with self._lock:
            self.direct_bytes += direct
            self.buffered_bytes += buffered

    def _take_buffer(self) -> mmap.mmap:
        with self._lock:
            while not self._free:
                if len(self._allocated) < self._writers:
                    # made on first use, so a writer that never writes directly maps none
                    buffer = mmap.mmap(-1, self._chunk)
                    self._allocated.append(buffer)
                    return buffer
                self._returned.wait()
            return self._free.pop()

    def _give_back(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buffer)
            self._returned.notify()

    def close(self) -> None:
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        self._direct = False
        for buffer in self._allocated:
            # a view of a lent buffer may outlive the block (a traceback being raised holds
            # its frames): the mapping then goes when that view is collected
            with contextlib.suppress(BufferError):
                buffer.close()
        self._allocated.clear()
        self._free.clear()


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` until all of ``data`` is written (a write may be short)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_pages_all(fd: int, pages: Sequence[bytes | memoryview], offset: int) -> None:
    """``pages`` one after the other from ``offset``, :data:`IOV_MAX` per ``pwritev``."""
    for start in range(0, len(pages), IOV_MAX):
        batch = pages[start : start + IOV_MAX]
        written = os.pwritev(fd, batch, offset)
        size = sum(len(page) for page in batch)
        if written < size:
            # a short write: the rest one piece after another
            write_all(fd, b"".join(batch)[written:], offset + written)
        offset += size


def _open_direct(path: Path) -> int | None:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag | os.O_CLOEXEC)
    except OSError as exc:
        # tmpfs (before Linux 6.6) and some network and FUSE file systems refuse it
        if exc.errno != errno.EINVAL:
            raise
        return None


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
