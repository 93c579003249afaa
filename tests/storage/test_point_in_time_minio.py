"""Point-in-time restore of a recovery log (storage/pointintime.py), against MinIO: a new
log forks a running one at the end of a commit, the source goes on untouched, and pruning
keeps what the fork needs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.storage.conftest import NewLog
from tests.storage.storage_helpers import LATER, MANUAL, put, rows

from shardkeeper.storage.pointintime import (
    NoRestorePoint,
    logged_commits,
    reserve_restore_point,
    restore_point,
)
from shardkeeper.storage.prune import prune
from shardkeeper.storage.store import ShardStore


def test_a_log_forks_at_a_commit_no_later_than_a_time(tmp_path: Path, new_log: NewLog) -> None:
    source_log = new_log()
    source = ShardStore.open(tmp_path / "source", source_log, 1, options=MANUAL)
    source.fence()
    put(source, "a")
    assert source.snapshot() is not None
    put(source, "b")
    at_b = source.query("SELECT k, v FROM kv ORDER BY k")
    time.sleep(0.05)  # commit times are the writer's clock: leave a gap to choose in
    between = time.time()
    time.sleep(0.05)
    put(source, "c")
    times = [c.committed_at for c in logged_commits(source_log, 0, None)]
    assert all(t is not None for t in times)
    assert times == sorted(times)

    child_log = new_log()
    point = reserve_restore_point(source_log, child_log.name, between)
    assert point.log == source_log.name
    assert point.seq == 2
    assert point.committed_at is not None
    assert point.committed_at <= between
    # the registration is there before any child exists: pruning keeps its history
    registration = source_log.read_fork_registration(child_log.name)
    assert registration is not None
    assert registration.fence_offset == point.offset
    # asked again (an operator that restarted), the point stays
    assert reserve_restore_point(source_log, child_log.name, time.time()) == point

    # the source goes on: it was not fenced
    put(source, "d")
    child = ShardStore.fork(
        tmp_path / "child", source_log, point.offset, child_log, 2, options=MANUAL, at_fence=False
    )
    assert rows(child.db_path) == at_b
    put(child, "e")
    want = child.query("SELECT k, v FROM kv ORDER BY k")
    put(source, "f")
    assert source.last_commit is not None
    assert source.last_commit.seq == 5

    # the source's newest snapshot is past the fork: pruning keeps the older one for it
    assert source.snapshot() is not None
    prune(source_log, now=LATER)
    child.close()
    restored = ShardStore.open(tmp_path / "child-again", child_log, 3, options=MANUAL)
    assert restored.restore_report.source == "snapshot"
    assert rows(restored.db_path) == want
    restored.close()

    # the last commit, by default
    last = restore_point(source_log, None)
    assert last.seq == 5
    assert last.offset == source.position
    source.close()


def test_a_time_before_what_the_log_still_holds_is_refused(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    store = ShardStore.open(tmp_path / "s", log, 1, options=MANUAL)
    store.fence()
    with pytest.raises(NoRestorePoint, match="holds no commit yet"):
        restore_point(log, None)
    put(store, "a")
    early = time.time()
    time.sleep(0.05)
    put(store, "b")
    assert restore_point(log, early).seq == 1
    assert store.snapshot() is not None
    put(store, "c")
    prune(log, now=LATER)
    with pytest.raises(NoRestorePoint, match="nothing older is kept"):
        restore_point(log, early)
    with pytest.raises(NoRestorePoint, match="nothing older is kept"):
        restore_point(log, 0.0)
    assert restore_point(log, time.time()).seq == 3
    store.close()


def test_a_split_child_restores_before_its_split_from_its_parent(
    tmp_path: Path, new_log: NewLog
) -> None:
    parent_log = new_log()
    parent = ShardStore.open(tmp_path / "parent", parent_log, 1, options=MANUAL)
    parent.fence()
    put(parent, "p1")
    before_split = time.time()
    time.sleep(0.05)
    put(parent, "p2")
    standby = ShardStore.open(tmp_path / "child", parent_log, 5, options=MANUAL)
    fence = parent_log.fence(2, note="hand-off")
    child_log = new_log()
    standby.fork_into(child_log, fence.offset)
    put(standby, "c1")
    point = restore_point(child_log, before_split)
    assert (point.log, point.seq) == (parent_log.name, 1)
    standby.close()
    parent.close()
