"""The shard store: SQLite on the local volume, every commit replicated to a recovery log.

How changes are replicated
--------------------------
Physically, as page images. The database runs in WAL mode with automatic checkpoints off.
A commit runs the task's statements plus an update of the store's meta row (which names
the commit: log, offset, random id, sequence, epoch), commits in SQLite, then reads the
frames that commit appended to the ``-wal`` file (:mod:`.wal`) and appends their page
images, with the database size, as one record to the recovery log (:mod:`.records`).
Only when that append has landed does ``commit()`` return. Replaying page images is
exact whatever the SQL did (``random()``, ``now()``, rowid choices, VACUUM), and a commit
costs what it changed, never the size of the store.

If the append fails for sure (fenced, access denied, ...) the store undoes the local
commit: it writes back the pages' previous images (from older WAL frames or the database
file, :meth:`.wal.WalTracker.page_before`) and stops. If the outcome is unknown (the store
never answered), it stops without undoing; recovery then keeps the commit if and only if
the log holds it. Either way a transaction whose append did not land is never visible
after recovery, and a store that failed an append never appends again.

Roles
-----
:meth:`ShardStore.open` restores the volume (see :mod:`.restore`) and returns a
**standby**: the database file is closed and :meth:`catch_up` applies new records of the
log. :meth:`fence` makes it **primary**: it appends a fence with its epoch, applies
whatever landed before the fence, and opens the database for transactions. A primary that
finds someone else's fragment at its head is **fenced**: it rolls its last commit back
and refuses every further commit. :meth:`fork_into` turns a standby of a parent log,
caught up to the fence of a split, into the primary of a new child log.

Snapshots are taken by a background thread (or :meth:`snapshot`), never on the commit
path: it checkpoints, pins the database with a read transaction, and streams the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from shardkeeper.storage import errors
from shardkeeper.storage.authorizer import Mode, Sandbox
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.fragment import Fragment
from shardkeeper.storage.journal import Claim, FenceInfo, JournalWriter
from shardkeeper.storage.records import (
    CommitRecord,
    ForkRecord,
    decode_record,
    encode_commit,
    encode_fork,
)
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.restore import (
    ReplayState,
    RestoreReport,
    Segment,
    check_fence,
    replay,
    restore,
)
from shardkeeper.storage.snapshot import Manifest, write_snapshot
from shardkeeper.storage.volume import META_SCHEMA, META_WRITE, CommitMeta, Volume
from shardkeeper.storage.wal import WalCommit, WalTracker

log = logging.getLogger(__name__)

# SQLite instructions between two looks of a statement guard (guard_statements): a few
# milliseconds of work, so a statement of ordinary size never calls it at all
GUARD_EVERY = 1_000_000


@dataclasses.dataclass(frozen=True)
class StoreOptions:
    # a snapshot is due once this many log bytes were written since the last one ...
    snapshot_every_bytes: int | None = 256 << 20
    # ... or this many seconds passed with at least one commit since the last one
    snapshot_every_seconds: float | None = None
    # run the background snapshot thread at all (tests call snapshot() by hand)
    background_snapshots: bool = True
    # checkpoint the WAL into the database file once it grows past this
    checkpoint_bytes: int = 16 << 20
    page_size: int = 4096
    part_bytes: int = 8 << 20
    transfers: int = 4
    read_ahead: int = 4
    # how long one unit of task SQL may run: a statement, or all of a lambda's statements
    # for one document (Transaction.restart_steps), in GUARD_EVERY SQLite instructions.
    # Past it the statement is interrupted: what a recursive CTE without an end, say, runs
    # into long before it fills memory or the disk (100 million instructions: seconds of
    # work, some millions of rows)
    task_step_limit: int = 100


class Role(enum.Enum):
    STANDBY = "standby"
    PRIMARY = "primary"
    FENCED = "fenced"
    FAILED = "failed"
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True)
class CommitInfo:
    """Where a commit's record sits in the log."""

    begin: int
    end: int
    seq: int


class Transaction:
    """Statements of one transaction; it ends with :meth:`ShardStore.commit` or
    :meth:`ShardStore.rollback` (or the ``with store.transaction()`` block)."""

    def __init__(self, store: ShardStore) -> None:
        self._store = store
        self.result: CommitInfo | None = None

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        """Run a statement of task SQL, in the sandbox (see :mod:`.authorizer`)."""
        conn = self._store._connection()
        self._store._steps = 0
        return conn.execute(sql, parameters)

    def executemany(
        self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]
    ) -> sqlite3.Cursor:
        conn = self._store._connection()
        self._store._steps = 0
        return conn.executemany(sql, parameters)

    def restart_steps(self) -> None:
        """Begin a new unit of task SQL for the step limit (``task_step_limit``): what runs
        from here on, up to the next call or statement of :meth:`execute`, shares one."""
        self._store._steps = 0

    def runtime_execute(
        self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()
    ) -> sqlite3.Cursor:
        """Run a statement of the runtime's own (on its ``_shardkeeper_*`` tables), which
        task SQL may not: outside the task's sandbox."""
        store = self._store
        conn = store._connection()
        with store._internal():
            return conn.execute(store._own(sql), parameters)

    def runtime_executemany(
        self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]
    ) -> sqlite3.Cursor:
        store = self._store
        conn = store._connection()
        with store._internal():
            return conn.executemany(store._own(sql), parameters)

    def explain(self, error: BaseException) -> str:
        """``error`` of a statement of this transaction, naming what the store refused when
        that is why it failed."""
        return self._store._sandbox.explain(error)


class ShardStore:
    def __init__(
        self,
        *,
        volume: Volume,
        log: RecoveryLog,
        epoch: int,
        state: ReplayState,
        report: RestoreReport,
        options: StoreOptions,
        until: int | None,
        until_fenced: bool = True,
    ) -> None:
        self.volume = volume
        self.log = log
        self.epoch = epoch
        self.options = options
        self.restore_report = report
        self._until = until
        self._until_fenced = until_fenced
        self._replay = state
        self._role = Role.STANDBY
        self._stopped_by: errors.StorageError | None = None
        self._conn: sqlite3.Connection | None = None
        # queries run on a read-only connection of their own
        self._reader: sqlite3.Connection | None = None
        # SQLite authorizes a statement when it is prepared, and Python caches prepared
        # statements by their text: the store's own statements carry a tag no task SQL
        # has, so a task's "COMMIT" is never the store's cached, authorized one
        self._tag = f" /* shardkeeper {os.urandom(8).hex()} */"
        self._sandbox = Sandbox(Mode.INTERNAL)
        # the statement guard: asked every GUARD_EVERY instructions, counted in _steps
        self._over: Callable[[], bool] | None = None
        self._steps = 0
        self._writer: JournalWriter | None = None
        self._tracker: WalTracker | None = None
        self._txn: Transaction | None = None
        self._txn_thread = 0
        self._lock = threading.Lock()
        self._wal_bytes_since_checkpoint = 0
        self._bytes_since_snapshot = 0
        self._commits_since_snapshot = 0
        self._last_snapshot_time = time.monotonic()
        self._last_snapshot: Manifest | None = None
        # told of each snapshot once it is written (the shell's pruner waits for them)
        self.on_snapshot: Callable[[Manifest], None] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._snapshotter: threading.Thread | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        volume_dir: Path,
        log: RecoveryLog,
        epoch: int,
        *,
        until: int | None = None,
        until_fenced: bool = True,
        options: StoreOptions | None = None,
    ) -> ShardStore:
        """Restore ``volume_dir`` from ``log`` (up to the fence at ``until``, if given; with
        ``until_fenced`` False, up to the end of the commit ending at ``until``) and return
        a standby. Call :meth:`fence` to make it primary, or :meth:`fork_into` with
        ``until``."""
        options = options or StoreOptions()
        volume = Volume(volume_dir)
        state, report = restore(
            volume,
            log,
            until=until,
            until_fenced=until_fenced,
            read_ahead=options.read_ahead,
            transfers=options.transfers,
        )
        log_ = state.log
        if log_.name != log.name:
            raise AssertionError(f"restore ended in {log_.name}, not {log.name}")
        return cls(
            volume=volume,
            log=log,
            epoch=epoch,
            state=state,
            report=report,
            options=options,
            until=until,
            until_fenced=until_fenced,
        )

    @classmethod
    def fork(
        cls,
        volume_dir: Path,
        parent: RecoveryLog,
        fence_offset: int,
        child: RecoveryLog,
        epoch: int,
        *,
        options: StoreOptions | None = None,
        owns: Claim | None = None,
        at_fence: bool = True,
    ) -> ShardStore:
        """Open the primary of ``child``, forked from ``parent`` at the fence at
        ``fence_offset`` (``at_fence`` False: at the end of the commit ending there). Safe
        to call again after a crash: a fork that already happened is recovered from the
        child log instead."""
        existing = child.fork_record()
        if existing is not None:
            _, record = existing
            if (
                record.parent != parent.name
                or record.fence_offset != fence_offset
                or record.at_fence != at_fence
            ):
                raise errors.ForkMismatch(
                    f"log {child.name!r} was forked from {record.parent!r} at "
                    f"{record.fence_offset:#x}, not from {parent.name!r} at {fence_offset:#x}"
                )
            store = cls.open(volume_dir, child, epoch, options=options)
            store.fence(owns)
            return store
        store = cls.open(
            volume_dir, parent, epoch, until=fence_offset, until_fenced=at_fence, options=options
        )
        store.fork_into(child, fence_offset, owns)
        return store

    # -- state -----------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def position(self) -> int:
        """The offset of :attr:`log` up to which this store's state is applied."""
        return self._replay.offset

    @property
    def last_commit(self) -> CommitMeta | None:
        return self._replay.meta

    @property
    def db_path(self) -> Path:
        return self.volume.db

    def _check_can_write(self) -> None:
        if self._stopped_by is not None:
            raise self._stopped_by
        if self._role is Role.CLOSED:
            raise errors.StoreClosed(f"shard store on {self.volume.directory} is closed")
        if self._role is not Role.PRIMARY:
            raise errors.NotPrimary(
                f"shard store on {self.volume.directory} is a {self._role.value}: call "
                "fence() to take its recovery log over before writing"
            )

    # -- standby ---------------------------------------------------------------------------

    @property
    def until(self) -> int | None:
        """The fence this standby stops at (it can only be forked from there), if any."""
        return self._until

    def catch_up(self, *, stop_before: Callable[[Fragment], bool] | None = None) -> int:
        """Apply the records appended to the log since the last call (standby only).
        Returns how many commits were applied.

        ``stop_before`` is asked of each fence on the way; the first one it holds for
        becomes :attr:`until`: this standby never applies past it, and can only be forked
        from there (a split's hand-off, see docs/splits.md)."""
        if self._role is not Role.STANDBY:
            raise errors.StoreClosed(
                f"catch_up() needs a standby, this store is {self._role.value}"
            )
        before = self._replay.commits
        if self._until is None:
            segment = Segment(self.log, self._replay.offset, None)
            stopped = replay(
                self.volume,
                self._replay,
                (segment,),
                read_ahead=self.options.read_ahead,
                stop_before=stop_before,
            )
            if stopped is not None:
                self._until = stopped
        else:
            self._catch_up_until(self._until)
        return self._replay.commits - before

    def _catch_up_until(self, until: int) -> None:
        segment = Segment(self.log, self._replay.offset, until, self._until_fenced)
        if self._replay.offset >= until:
            return
        replay(self.volume, self._replay, (segment,), read_ahead=self.options.read_ahead)

    def fence(self, owns: Claim | None = None) -> FenceInfo:
        """Take the log over with this store's epoch and become primary.

        Whatever other writers appended before the fence lands is applied first; from the
        fence on, every older writer's append fails. ``owns`` is what the fence claims; it
        is indexed (:meth:`RecoveryLog.index_claim`) before this returns, so before any
        commit under it.
        """
        if self._role is not Role.STANDBY:
            raise errors.StoreClosed(f"fence() needs a standby, this store is {self._role.value}")
        if self._until is not None:
            raise errors.NotPrimary(
                f"this store was restored up to the fence at {self._until:#x} of "
                f"{self.log.name!r}; fork it into a new log instead (fork_into)"
            )
        writer, fence = self.log.journal.fence(
            self.epoch,
            note=f"shard store {self.volume.directory}",
            from_offset=self.position,
            owns=owns,
        )
        return self._primary_from(writer, fence, owns)

    def _primary_from(
        self, writer: JournalWriter, fence: FenceInfo, owns: Claim | None
    ) -> FenceInfo:
        """Become primary under ``fence``, just appended by ``writer``."""
        if owns is not None:
            self.log.index_claim(fence, owns)
        self._apply_until(fence.offset)
        self._replay.offset = fence.end
        self._become_primary(writer)
        return fence

    def refence(self, epoch: int, owns: Claim) -> FenceInfo:
        """Primary only, between transactions: fence the log again with a newer ``epoch``
        and another claim (a split narrowed this shard). Commits after it count for the
        new claim only. Raises :class:`StaleEpoch` if someone else took the log over."""
        self._check_can_write()
        with self._lock:
            if self._txn is not None:
                raise errors.StorageError("refence() needs the transaction ended first")
            head = self.log.journal.head(self._replay.offset)
            if head != self._replay.offset:
                # a newer primary fenced after our last commit: ours would land after it
                journal = self.log.journal
                theirs = journal.last_epoch(journal.list_fragments(self._replay.offset))
                raise errors.Fenced(self.log.name, self._replay.offset, self.epoch, theirs)
            writer, fence = self.log.journal.fence(
                epoch,
                note=f"shard store {self.volume.directory}",
                from_offset=self.position,
                owns=owns,
            )
            if fence.offset != self._replay.offset:
                # someone appended after our last commit: we were fenced meanwhile
                raise errors.Fenced(self.log.name, self._replay.offset, self.epoch, fence.epoch)
            self.log.index_claim(fence, owns)
            self._writer = writer
            self.epoch = epoch
            self._replay.offset = fence.end
        return fence

    def _apply_until(self, until: int) -> None:
        if self._replay.offset < until:
            segment = Segment(self.log, self._replay.offset, until)
            replay(self.volume, self._replay, (segment,), read_ahead=self.options.read_ahead)

    def fork_into(
        self, child: RecoveryLog, fence_offset: int, owns: Claim | None = None
    ) -> FenceInfo:
        """Become the primary of ``child``, a new log whose history is this store's log up
        to the fence at ``fence_offset`` (or, for a store opened with ``until_fenced``
        False at that offset, up to the end of the commit ending there: a restore). The
        parent log learns of the fork (for pruning) before the child log records it."""
        if self._role is not Role.STANDBY:
            raise errors.StoreClosed(f"fork_into() needs a standby, this is {self._role.value}")
        if self._replay.offset > fence_offset:
            raise errors.ForkMismatch(
                f"this store already applied {self.log.name!r} up to {self._replay.offset:#x}, "
                f"past the fence at {fence_offset:#x}"
            )
        at_fence = self._until_fenced or self._until != fence_offset
        self._until = fence_offset
        self._until_fenced = at_fence
        self._catch_up_until(fence_offset)
        check_fence(Segment(self.log, fence_offset, fence_offset, at_fence), self._replay.offset)
        self.log.register_fork(child.name, fence_offset)
        record = ForkRecord(self.log.name, fence_offset, self.epoch, at_fence)
        payload = encode_fork(record)
        writer = child.journal.writer(self.epoch, 0)
        written = writer.try_append(payload)
        ours = written.payload == payload
        if not ours:
            theirs = decode_record(child.journal.key(0), written.payload)
            if not (
                isinstance(theirs, ForkRecord)
                and theirs.parent == record.parent
                and theirs.fence_offset == record.fence_offset
                and theirs.at_fence == record.at_fence
            ):
                raise errors.ForkMismatch(
                    f"log {child.name!r} already starts with something else than a fork of "
                    f"{self.log.name!r} at {fence_offset:#x}"
                )
        self.log = child
        self._until = None
        self._until_fenced = True
        self._replay.log = child
        self._replay.offset = written.end
        if ours:
            # the fence goes right after our fork record, of its epoch, or not at all
            # (epochs are unique: the same fork record may be another forker's, of the
            # same epoch, who then fenced first)
            writer, fenced = child.journal.fence_after(
                writer, note=f"shard store {self.volume.directory}", owns=owns
            )
            fence = self._primary_from(writer, fenced, owns)
        else:
            # someone else's fork: fence after whatever they wrote, with a newer epoch
            fence = self.fence(owns)
        if self.options.background_snapshots:
            # the child depends on the parent's data until it has a snapshot of its own
            self._bytes_since_snapshot = self.options.snapshot_every_bytes or 0
            self._commits_since_snapshot = 1
            self._wake.set()
        return fence

    # -- primary ---------------------------------------------------------------------------

    def _become_primary(self, writer: JournalWriter) -> None:
        volume = self.volume
        volume.ensure_closed()
        fresh = not volume.db.exists() or volume.db.stat().st_size == 0
        conn = sqlite3.connect(volume.db, isolation_level=None, check_same_thread=False)
        if fresh:
            conn.execute(f"PRAGMA page_size = {int(self.options.page_size)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise errors.StorageError(f"{volume.db}: SQLite refused WAL mode ({mode})")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {int(self.options.checkpoint_bytes) * 2}")
        conn.execute("PRAGMA busy_timeout = 0")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._sandbox.install(conn)
        conn.set_progress_handler(self._progress, GUARD_EVERY)
        self._conn = conn
        self._replay.page_size = page_size
        self._replay.db_pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        self._tracker = WalTracker(volume.wal, page_size)
        self._writer = writer
        self._role = Role.PRIMARY
        if self.options.background_snapshots:
            self._snapshotter = threading.Thread(
                target=self._snapshot_loop, name=f"snapshots {self.log.name}", daemon=True
            )
            self._snapshotter.start()

    def _own(self, sql: str) -> str:
        return sql + self._tag

    @contextlib.contextmanager
    def _internal(self) -> Iterator[None]:
        """Authorize the statements prepared meanwhile as the store's own."""
        mode = self._sandbox.mode
        self._sandbox.mode = Mode.INTERNAL
        try:
            yield
        finally:
            self._sandbox.mode = mode

    def _connection(self) -> sqlite3.Connection:
        if self._txn is None or self._conn is None:
            raise errors.StoreClosed("no transaction is open on this shard store")
        self._check_still_open(self._conn)
        return self._conn

    @staticmethod
    def _check_still_open(conn: sqlite3.Connection) -> None:
        # SQLite rolls the whole transaction back when it interrupts a statement that
        # writes: a statement after that would run (and commit) outside of it, unlogged
        if not conn.in_transaction:
            raise errors.TransactionRolledBack(
                "SQLite rolled this transaction back (a statement that writes was "
                "interrupted): roll back and begin again"
            )

    def guard_statements(self, over: Callable[[], bool] | None) -> None:
        """Interrupt a statement of the write connection (it raises ``sqlite3.OperationalError:
        interrupted``) once ``over()`` holds, asked every ``GUARD_EVERY`` SQLite
        instructions, so only of a statement that runs long; None takes the guard off.

        Task SQL is interrupted past ``task_step_limit`` whether or not there is a guard."""
        self._over = over

    def _progress(self) -> bool:
        if self._sandbox.mode is Mode.WRITE:
            self._steps += 1
            limit = self.options.task_step_limit
            if self._steps > limit:
                self._sandbox.stopped = (
                    f"it ran past the step limit of {limit * GUARD_EVERY:,} SQLite "
                    "instructions (a recursive CTE without an end?)"
                )
                return True
        over = self._over
        return over is not None and over()

    def begin(self) -> Transaction:
        self._check_can_write()
        if self._txn is not None:
            raise errors.StorageError("a transaction is already open on this shard store")
        assert self._conn is not None
        assert self._tracker is not None
        self._lock.acquire()
        try:
            self._maybe_checkpoint()
            self._conn.execute(self._own("BEGIN IMMEDIATE"))
        except BaseException:
            self._lock.release()
            raise
        self.log.faults.reached(FaultPoint.COMMIT_BEGUN)
        self._sandbox.mode = Mode.WRITE
        self._sandbox.refused = self._sandbox.stopped = None
        self._steps = 0
        self._txn_thread = threading.get_ident()
        self._txn = Transaction(self)
        return self._txn

    def _maybe_checkpoint(self) -> None:
        assert self._conn is not None
        assert self._tracker is not None
        if self._wal_bytes_since_checkpoint < self.options.checkpoint_bytes:
            return
        self._conn.execute(self._own("PRAGMA wal_checkpoint(PASSIVE)")).fetchall()
        # whether or not it completed, wait for as much growth again before the next try
        self._wal_bytes_since_checkpoint = 0

    def rollback(self) -> None:
        if self._txn is None or self._conn is None:
            raise errors.StoreClosed("no transaction is open on this shard store")
        self._sandbox.mode = Mode.INTERNAL
        self._txn = None
        try:
            if self._conn.in_transaction:  # SQLite may have rolled it back already
                self._conn.execute(self._own("ROLLBACK"))
        finally:
            self._lock.release()

    def commit(self) -> CommitInfo:
        """Commit the open transaction: locally, then to the recovery log. Returns where
        its record sits. Raises :class:`Fenced` (and rolls the local commit back) if
        another writer took the log over."""
        txn = self._txn
        if txn is None or self._conn is None:
            raise errors.StoreClosed("no transaction is open on this shard store")
        conn, tracker, writer = self._conn, self._tracker, self._writer
        assert tracker is not None
        assert writer is not None
        faults = self.log.faults
        faults.reached(FaultPoint.COMMIT_STATEMENTS_RUN)
        self._sandbox.mode = Mode.INTERNAL
        previous = self._replay.meta
        meta = CommitMeta(
            self.log.name,
            writer.head,
            os.urandom(16),
            (previous.seq if previous else 0) + 1,
            self.epoch,
        )
        try:
            self._check_still_open(conn)
            if previous is None:
                conn.execute(self._own(META_SCHEMA))
            conn.execute(
                self._own(META_WRITE), (meta.log, meta.begin, meta.commit_id, meta.seq, meta.epoch)
            )
            conn.execute(self._own("COMMIT"))
        except Exception:
            self._txn = None
            with contextlib.suppress(sqlite3.Error):
                conn.execute(self._own("ROLLBACK"))
            self._lock.release()
            raise
        self._txn = None
        faults.reached(FaultPoint.COMMIT_LOCAL)
        wal_commit: WalCommit | None = None
        try:
            wal_commit = tracker.read_commit()
            pages = tracker.read_pages(wal_commit.frames)
            record = CommitRecord(
                meta.seq,
                meta.commit_id,
                tracker.page_size,
                wal_commit.db_pages,
                pages,
                committed_at=time.time(),
            )
            payload = encode_commit(record)
            faults.reached(FaultPoint.COMMIT_RECORD_BUILT)
            fragment = writer.append(payload)
        except errors.StorageError as exc:
            self._stop_after_failed_append(exc, wal_commit)
            raise
        except Exception as exc:
            # the record could not even be built: nothing was appended
            stopped = errors.StoreClosed(f"commit failed before its append: {exc!r}")
            self._stop_after_failed_append(stopped, wal_commit)
            raise stopped from exc
        faults.reached(FaultPoint.COMMIT_APPENDED)
        tracker.accept(wal_commit)
        self._wal_bytes_since_checkpoint += wal_commit.end - wal_commit.start
        replay_state = self._replay
        replay_state.meta = meta
        replay_state.offset = fragment.end
        replay_state.db_pages = wal_commit.db_pages
        self._bytes_since_snapshot += len(payload)
        self._commits_since_snapshot += 1
        info = CommitInfo(fragment.begin, fragment.end, meta.seq)
        txn.result = info
        self._lock.release()
        faults.reached(FaultPoint.COMMIT_ACKNOWLEDGED)
        if self._snapshot_due():
            self._wake.set()
        return info

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with store.transaction() as txn: txn.execute(...)``: commits on success
        (``txn.result`` then says where), rolls back on an exception."""
        txn = self.begin()
        try:
            yield txn
        except BaseException:
            if self._txn is txn:
                self.rollback()
            raise
        self.commit()

    def query(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """Run a read-only statement outside of a transaction (primary only)."""
        if self._conn is None or self._role is not Role.PRIMARY:
            raise errors.NotPrimary("queries need the primary's open database")
        if self._txn is not None:
            raise errors.StorageError("use the open transaction's execute() instead")
        if self._reader is None:
            # closed by whichever thread stops the store (a failed commit may do it)
            self._reader = sqlite3.connect(
                f"file:{self.volume.db}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            Sandbox(Mode.READ).install(self._reader)
        return self._reader.execute(sql, parameters).fetchall()

    # -- failure ---------------------------------------------------------------------------

    def _stop_after_failed_append(
        self, exc: errors.StorageError, wal_commit: WalCommit | None
    ) -> None:
        """Never append again; if the append surely failed, roll the local commit back.

        Without the commit's frames there is nothing to roll back with: the volume then
        stays ahead of the log, and the next recovery rebuilds it."""
        self._stopped_by = exc
        self._role = Role.FENCED if isinstance(exc, errors.Fenced) else Role.FAILED
        undo = wal_commit is not None and not isinstance(exc, errors.AppendOutcomeUnknown)
        assert self._tracker is not None
        before = self._replay.db_pages
        previous = []
        if undo and wal_commit is not None:
            previous = [
                (page, self._tracker.page_before(page, wal_commit, self.volume.db, before))
                for page in sorted(wal_commit.frames)
            ]
        # the snapshot thread may wait for the lock: let it see the store stopped
        self._lock.release()
        self._shutdown()
        if undo:
            with self.volume.writing_pages(self._tracker.page_size) as pages:
                for page, data in previous:
                    if data is not None:
                        pages.write(page, data)
                pages.resize(before)
        log.warning("shard store on %s stopped: %s", self.volume.directory, exc)

    def _shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._snapshotter
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.volume.ensure_closed()

    def close(self) -> None:
        """Stop background work and close the database. A transaction still open is
        rolled back."""
        if self._role is Role.CLOSED:
            return
        if self._txn is not None:
            self.rollback()
        self._shutdown()
        if self._stopped_by is None:
            self._stopped_by = errors.StoreClosed(
                f"shard store on {self.volume.directory} is closed"
            )
        self._role = Role.CLOSED

    def __enter__(self) -> ShardStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- snapshots -------------------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        options = self.options
        if self._commits_since_snapshot == 0:
            return False
        every_bytes = options.snapshot_every_bytes
        if every_bytes is not None and self._bytes_since_snapshot >= every_bytes:
            return True
        if options.snapshot_every_seconds is not None:
            elapsed = time.monotonic() - self._last_snapshot_time
            return elapsed >= options.snapshot_every_seconds
        return False

    def _snapshot_loop(self) -> None:
        interval = self.options.snapshot_every_seconds
        while True:
            self._wake.wait(timeout=interval if interval else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self._snapshot_due():
                continue
            try:
                self.snapshot()
            except Exception:
                if self._stop.is_set():
                    return
                # a failed snapshot costs only recovery time: log it and try again later
                log.exception("snapshot of %s failed", self.log.name)

    def snapshot(self) -> Manifest | None:
        """Write a snapshot of the state as of the last commit. Returns ``None`` if the
        database could not be checkpointed completely just now (try again later)."""
        self._check_can_write()
        if self._txn is not None and self._txn_thread == threading.get_ident():
            raise errors.StorageError("snapshot() waits for the open transaction: end it first")
        reader = sqlite3.connect(self.volume.db, isolation_level=None, check_same_thread=False)
        try:
            with self._lock:
                self._check_can_write()
                busy, frames, done = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy or frames != done:
                    return None
                # pin: the file now holds every committed page, and no checkpoint may
                # write into it while this read transaction lasts
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM sqlite_master").fetchall()
                offset = self._replay.offset
                db_pages = self._replay.db_pages
                page_size = self._replay.page_size or self.options.page_size
                meta = self._replay.meta
                bytes_at_start = self._bytes_since_snapshot
                commits_at_start = self._commits_since_snapshot
                self.log.faults.reached(FaultPoint.SNAPSHOT_BEGUN)
            manifest = write_snapshot(
                self.log,
                self.volume.db,
                offset=offset,
                page_size=page_size,
                db_pages=db_pages,
                last_commit=meta,
                epoch=self.epoch,
                part_bytes=self.options.part_bytes,
                transfers=self.options.transfers,
                cancel=self._stop,
            )
        finally:
            reader.close()
        with self._lock:
            self._bytes_since_snapshot -= bytes_at_start
            self._commits_since_snapshot -= commits_at_start
            self._last_snapshot_time = time.monotonic()
            self._last_snapshot = manifest
        listener = self.on_snapshot
        if listener is not None:
            listener(manifest)
        return manifest

    @property
    def last_snapshot(self) -> Manifest | None:
        return self._last_snapshot
