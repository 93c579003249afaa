"""The SQLite shard store against MinIO: commits, restore, volumes, crashes, zombies."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.storage.conftest import NewLog
from tests.storage.storage_helpers import Crash, CrashAt, integrity, killed_copy, rows
from tests.support.wait import wait_for

from shardkeeper.storage import errors
from shardkeeper.storage.faults import (
    COMMIT_DURABLE_FROM,
    COMMIT_POINTS,
    SNAPSHOT_POINTS,
    FaultPoint,
)
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import latest_snapshot
from shardkeeper.storage.store import Role, ShardStore, StoreOptions

MANUAL = StoreOptions(background_snapshots=False, part_bytes=64 << 10)


def primary(volume: Path, log: RecoveryLog, epoch: int) -> ShardStore:
    store = ShardStore.open(volume, log, epoch, options=MANUAL)
    store.fence()
    return store


def put(store: ShardStore, *items: tuple[str, bytes]) -> None:
    with store.transaction() as txn:
        txn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
        txn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", items)


def live_rows(store: ShardStore) -> list[tuple[object, ...]]:
    return store.query("SELECT k, v FROM kv ORDER BY k")


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def batch(tag: str, count: int = 20, size: int = 200) -> list[tuple[str, bytes]]:
    return [(f"{tag}-{i:04d}", os.urandom(size)) for i in range(count)]


def test_restore_is_byte_exact_from_log_and_from_snapshot(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    store = primary(tmp_path / "a", log, 1)
    for n in range(6):
        put(store, *batch(f"b{n}"))
    snapshot = store.snapshot()
    assert snapshot is not None
    for n in range(3):
        put(store, *batch(f"c{n}", size=3000))
    with store.transaction() as txn:
        txn.execute("DELETE FROM kv WHERE k LIKE 'b1-%'")
        txn.execute("CREATE INDEX kv_v ON kv (v)")
    want = live_rows(store)
    store.close()
    original = digest(tmp_path / "a" / "shard.db")

    restored = ShardStore.open(tmp_path / "b", log, 2, options=MANUAL)
    assert restored.restore_report.source == "snapshot"
    assert restored.restore_report.snapshot_id == snapshot.snapshot_id
    assert restored.restore_report.commits_replayed == 4
    assert digest(tmp_path / "b" / "shard.db") == original
    assert rows(tmp_path / "b" / "shard.db") == want


def test_standby_catches_up_and_takes_over(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    first = primary(tmp_path / "a", log, 1)
    put(first, *batch("x"))
    standby = ShardStore.open(tmp_path / "b", log, 2, options=MANUAL)
    assert standby.role is Role.STANDBY
    put(first, *batch("y"))
    put(first, *batch("z"))
    assert standby.catch_up() == 2
    assert standby.catch_up() == 0
    assert rows(standby.db_path) == live_rows(first)
    standby.fence()
    assert standby.role is Role.PRIMARY
    with pytest.raises(errors.Fenced):
        put(first, ("late", b"zombie"))
    assert first.role is Role.FENCED


def test_a_store_that_answered_queries_closes_from_another_thread(
    tmp_path: Path, new_log: NewLog
) -> None:
    """The runtime stops a store from whichever thread learns it must (a fenced commit, a
    signal); the query connection must not be tied to the thread that opened it."""
    store = primary(tmp_path / "a", new_log(), 1)
    put(store, ("k", b"v"))
    assert live_rows(store) == [("k", b"v")]
    failure: list[BaseException] = []

    def close() -> None:
        try:
            store.close()
        except BaseException as err:  # collected for the assertion below
            failure.append(err)

    closer = threading.Thread(target=close)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive()
    assert failure == []


def test_zombie_writer_can_never_commit(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    old = primary(tmp_path / "old", log, 1)
    put(old, ("a", b"1"))
    before_fence = live_rows(old)
    # the old primary is paused; a new primary restores and fences meanwhile
    new = primary(tmp_path / "new", log, 2)
    put(new, ("b", b"2"))
    # the old primary wakes up and tries to commit
    with pytest.raises(errors.Fenced) as raised:
        put(old, ("zombie", b"!"))
    assert raised.value.their_epoch == 2
    assert old.role is Role.FENCED
    # it stops for good, whatever it is asked, and never reaches the store again
    for _ in range(3):
        with pytest.raises(errors.Fenced):
            old.begin()
    # its local database was rolled back to its last committed state
    assert rows(tmp_path / "old" / "shard.db") == before_fence
    assert integrity(tmp_path / "old" / "shard.db") == "ok"
    # and the log never saw the zombie's transaction
    assert ("zombie", b"!") not in live_rows(new)
    third = ShardStore.open(tmp_path / "third", log, 3, options=MANUAL)
    assert ("zombie", b"!") not in rows(third.db_path)
    assert ("b", b"2") in rows(third.db_path)
    # the old volume is still a valid standby: it replays only the tail
    reopened = ShardStore.open(tmp_path / "old", log, 3, options=MANUAL)
    assert reopened.restore_report.source == "volume"
    assert reopened.restore_report.commits_replayed == 1
    assert rows(reopened.db_path) == rows(third.db_path)


def test_volume_consistent_ahead_behind_and_foreign(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    store = primary(tmp_path / "live", log, 1)
    put(store, *batch("one"))
    # a volume copied now is consistent with the log
    killed_copy(tmp_path / "live", tmp_path / "consistent")
    put(store, *batch("two"))
    # a volume copied now will fall behind a snapshot
    killed_copy(tmp_path / "live", tmp_path / "behind")
    put(store, *batch("three"))
    assert store.snapshot() is not None
    put(store, *batch("four"))
    want = live_rows(store)
    store.close()
    # a volume ahead of the log: a commit that SQLite holds but the log never got
    ahead_dir = killed_copy(tmp_path / "live", tmp_path / "ahead")
    conn = sqlite3.connect(ahead_dir / "shard.db")
    conn.execute("INSERT INTO kv VALUES ('never-logged', x'00')")
    conn.execute("UPDATE _shardkeeper_meta SET begin = begin + 100000, commit_id = randomblob(16)")
    conn.commit()
    conn.close()

    consistent = ShardStore.open(tmp_path / "consistent", log, 2, options=MANUAL)
    assert consistent.restore_report.source == "snapshot"
    assert "older than the latest snapshot" in consistent.restore_report.reason

    ahead = ShardStore.open(ahead_dir, log, 2, options=MANUAL)
    assert ahead.restore_report.source == "snapshot"
    assert "ahead of the log" in ahead.restore_report.reason

    behind = ShardStore.open(tmp_path / "behind", log, 2, options=MANUAL)
    assert behind.restore_report.source == "snapshot"

    same = ShardStore.open(tmp_path / "live", log, 2, options=MANUAL)
    assert same.restore_report.source == "volume"
    assert same.restore_report.commits_replayed == 0
    for store_ in (consistent, ahead, behind, same):
        assert rows(store_.db_path) == want

    # a volume from another epoch: same offsets, another writer's commits
    other = new_log()
    foreign = primary(tmp_path / "foreign", other, 1)
    put(foreign, *batch("elsewhere"))
    foreign.close()
    diverged = ShardStore.open(tmp_path / "foreign", log, 2, options=MANUAL)
    assert diverged.restore_report.source == "snapshot"
    assert "not in this log's lineage" in diverged.restore_report.reason
    assert rows(diverged.db_path) == want


def test_volume_from_another_epoch_is_rebuilt(tmp_path: Path, new_log: NewLog) -> None:
    """A primary commits locally and dies before its append; the next primary (a new
    epoch) fences at that very offset. The dead primary's volume names a commit the log
    holds no trace of there: it must be rebuilt, not trusted."""
    hook = CrashAt()
    log = new_log(faults=hook)
    old = primary(tmp_path / "old", log, 1)
    put(old, ("base", b"0"))
    hook.point = FaultPoint.COMMIT_LOCAL
    with pytest.raises(Crash):
        put(old, ("lost", b"1"))
    killed_copy(tmp_path / "old", tmp_path / "killed")
    clean = RecoveryLog(log.store, log.name)
    new = primary(tmp_path / "new", clean, 2)
    put(new, ("theirs", b"2"))
    new.close()
    reopened = ShardStore.open(tmp_path / "killed", clean, 3, options=MANUAL)
    assert "diverged" in reopened.restore_report.reason
    assert "epoch 2" in reopened.restore_report.reason
    assert rows(reopened.db_path) == [("base", b"0"), ("theirs", b"2")]


def test_task_sql_cannot_end_transactions_or_touch_the_meta_row(
    tmp_path: Path, new_log: NewLog
) -> None:
    store = primary(tmp_path / "a", new_log(), 1)
    put(store, ("a", b"1"))
    for sql in (
        "COMMIT",
        "ROLLBACK",
        "ATTACH DATABASE ':memory:' AS other",
        "UPDATE _shardkeeper_meta SET seq = 0",
        "PRAGMA journal_mode = DELETE",
    ):
        txn = store.begin()
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            txn.execute(sql)
        store.rollback()
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        store.query("DELETE FROM kv")
    assert live_rows(store) == [("a", b"1")]


@pytest.mark.parametrize("point", COMMIT_POINTS, ids=lambda p: p.name)
@pytest.mark.parametrize("volume_survives", [True, False], ids=["volume-kept", "volume-lost"])
def test_crash_at_every_commit_step(
    tmp_path: Path, new_log: NewLog, point: FaultPoint, volume_survives: bool
) -> None:
    """Kill the primary at one step of a commit; recovery shows exactly the commits whose
    append had landed, from the killed volume or from the log alone."""
    hook = CrashAt()
    log = new_log(faults=hook)
    store = primary(tmp_path / "a", log, 1)
    put(store, *batch("committed"))
    assert store.snapshot() is not None
    put(store, *batch("after-snapshot"))
    committed = live_rows(store)
    hook.point = point
    attempted = batch("crashing")
    with pytest.raises(Crash):
        put(store, *attempted)
    volume = killed_copy(tmp_path / "a", tmp_path / "killed")
    durable = COMMIT_POINTS.index(point) >= COMMIT_POINTS.index(COMMIT_DURABLE_FROM)
    expected = sorted(committed + attempted) if durable else committed
    target = volume if volume_survives else tmp_path / "empty"
    clean = RecoveryLog(log.store, log.name)
    recovered = ShardStore.open(target, clean, 2, options=MANUAL)
    assert rows(recovered.db_path) == expected
    assert integrity(recovered.db_path) == "ok"
    # the successor can commit on top of exactly that state
    recovered.fence()
    put(recovered, ("next", b"1"))
    assert live_rows(recovered) == sorted([*expected, ("next", b"1")])


@pytest.mark.parametrize("point", SNAPSHOT_POINTS, ids=lambda p: p.name)
def test_crash_at_every_snapshot_step(tmp_path: Path, new_log: NewLog, point: FaultPoint) -> None:
    hook = CrashAt()
    log = new_log(faults=hook)
    store = primary(tmp_path / "a", log, 1)
    for n in range(4):
        put(store, *batch(f"b{n}", size=2000))
    first = store.snapshot()
    assert first is not None
    put(store, *batch("after"))
    want = live_rows(store)
    hook.point = point
    with pytest.raises(Crash):
        store.snapshot()
    clean = RecoveryLog(log.store, log.name)
    recovered = ShardStore.open(tmp_path / "empty", clean, 2, options=MANUAL)
    assert rows(recovered.db_path) == want
    newest = latest_snapshot(clean)
    assert newest is not None
    if point is FaultPoint.SNAPSHOT_MANIFEST_WRITTEN:
        assert newest.snapshot_id != first.snapshot_id
        assert recovered.restore_report.commits_replayed == 0
    else:
        assert newest.snapshot_id == first.snapshot_id
        assert recovered.restore_report.commits_replayed == 1


def test_snapshot_while_commits_continue(tmp_path: Path, new_log: NewLog) -> None:
    """The background snapshot thread runs beside commits; restore is still exact."""
    log = new_log()
    options = StoreOptions(snapshot_every_bytes=200_000, part_bytes=64 << 10)
    store = ShardStore.open(tmp_path / "a", log, 1, options=options)
    store.fence()
    for n in range(40):
        put(store, *batch(f"n{n}", size=500))
    wait_for(lambda: store.last_snapshot, timeout=60, what="a background snapshot")
    put(store, ("last", b"after the snapshot"))
    want = live_rows(store)
    store.close()
    restored = ShardStore.open(tmp_path / "b", log, 2, options=MANUAL)
    assert restored.restore_report.source == "snapshot"
    assert rows(restored.db_path) == want
    assert digest(restored.db_path) == digest(tmp_path / "a" / "shard.db")


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "delete", "shrink", "snapshot"]),
            st.integers(min_value=1, max_value=60),
            st.integers(min_value=1, max_value=6000),
        ),
        min_size=1,
        max_size=8,
    ),
    crash=st.tuples(st.sampled_from(COMMIT_POINTS), st.integers(min_value=1, max_value=8)),
)
def test_random_workloads_and_crash_points(
    tmp_path_factory: pytest.TempPathFactory,
    new_log: NewLog,
    ops: list[tuple[str, int, int]],
    crash: tuple[FaultPoint, int],
) -> None:
    """Random transactions (growing, deleting, shrinking the file), snapshots in between,
    and a crash at a random step of a random commit. A shadow SQLite database that runs
    the same statements says what recovery must show."""
    point, nth = crash
    hook = CrashAt()
    log = new_log(faults=hook)
    base = tmp_path_factory.mktemp("random")
    store = primary(base / "a", log, 1)
    hook.point, hook.nth = point, nth
    shadow = sqlite3.connect(":memory:", isolation_level=None)
    durable = COMMIT_POINTS.index(point) >= COMMIT_POINTS.index(COMMIT_DURABLE_FROM)

    def statements(
        index: int, op: str, count: int, size: int
    ) -> list[tuple[str, tuple[object, ...]]]:
        plan: list[tuple[str, tuple[object, ...]]] = [
            ("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)", ())
        ]
        if op == "put":
            plan += [
                ("INSERT OR REPLACE INTO kv VALUES (?, ?)", row)
                for row in batch(f"op{index}", count, size)
            ]
        elif op == "delete":
            plan.append(("DELETE FROM kv WHERE rowid % ? = 0", (count % 5 + 2,)))
        else:
            plan.append(("DELETE FROM kv WHERE length(v) > ?", (size,)))
        return plan

    crashed = False
    for index, (op, count, size) in enumerate(ops):
        if op == "snapshot":
            store.snapshot()
            continue
        plan = statements(index, op, count, size)
        try:
            with store.transaction() as txn:
                for sql, args in plan:
                    txn.execute(sql, args)
        except Crash:
            crashed = True
            if durable:
                for sql, args in plan:
                    shadow.execute(sql, args)
            break
        for sql, args in plan:
            shadow.execute(sql, args)
    expected = (
        shadow.execute("SELECT k, v FROM kv ORDER BY k").fetchall() if ops_wrote(shadow) else []
    )
    clean = RecoveryLog(log.store, log.name)
    if crashed:
        volume = killed_copy(base / "a", base / "killed")
    else:
        store.close()
        volume = base / "a"
    for target, epoch in ((volume, 2), (base / "fresh", 3)):
        recovered = ShardStore.open(target, clean, epoch, options=MANUAL)
        got = rows(recovered.db_path) if recovered.last_commit else []
        assert got == expected
        if recovered.last_commit:
            assert integrity(recovered.db_path) == "ok"


def ops_wrote(shadow: sqlite3.Connection) -> bool:
    return shadow.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kv'").fetchone()[0] > 0


def test_a_corrupted_or_missing_snapshot_part_is_reported(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    store = primary(tmp_path / "a", log, 1)
    put(store, *batch("x", count=200, size=1000))
    snapshot = store.snapshot()
    assert snapshot is not None
    assert len(snapshot.parts) > 1
    store.close()
    part = snapshot.parts[1]
    raw = log.store.get(part.key)
    assert raw is not None
    log.store.put(part.key, raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    with pytest.raises(errors.ChecksumMismatch, match=part.key):
        ShardStore.open(tmp_path / "b", log, 2, options=MANUAL)
    log.store.delete([part.key])
    with pytest.raises(errors.SnapshotCorrupt, match="lost its part"):
        ShardStore.open(tmp_path / "c", log, 2, options=MANUAL)
    # a failed restore leaves the volume marked torn: the next open starts over
    assert (tmp_path / "c" / "shard.db.replaying").exists()


def test_a_missing_log_fragment_stops_restore_with_a_gap(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    store = primary(tmp_path / "a", log, 1)
    put(store, ("a", b"1"))
    with store.transaction() as txn:
        txn.execute("INSERT INTO kv VALUES ('b', x'02')")
    assert txn.result is not None
    put(store, ("c", b"3"))
    store.close()
    log.store.delete([log.journal.key(txn.result.begin)])
    with pytest.raises(errors.JournalGap) as raised:
        ShardStore.open(tmp_path / "b", log, 2, options=MANUAL)
    assert raised.value.offset == txn.result.begin
    assert "restore the shard from a snapshot" in str(raised.value)
