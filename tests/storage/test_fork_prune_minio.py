"""Forks for splits and pruning, against MinIO."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.storage.conftest import NewLog
from tests.storage.storage_helpers import LATER, MANUAL, put, rows

from shardkeeper.storage import errors
from shardkeeper.storage.prune import plan_prune, prune
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore
from shardkeeper_dev.environment import EnvInfo


def state(store: ShardStore) -> list[tuple[object, ...]]:
    return store.query("SELECT k, v FROM kv ORDER BY k")


def split(tmp_path: Path, new_log: NewLog) -> tuple[RecoveryLog, RecoveryLog, ShardStore, int]:
    """A parent that committed, snapshotted, committed more, and was handed off to a child
    (tailing the parent as a standby, then forking at the hand-off fence)."""
    parent_log = new_log()
    parent = ShardStore.open(tmp_path / "parent", parent_log, 1, options=MANUAL)
    parent.fence()
    put(parent, "p1")
    assert parent.snapshot() is not None
    put(parent, "p2")
    child_standby = ShardStore.open(tmp_path / "child", parent_log, 5, options=MANUAL)
    put(parent, "p3")
    child_standby.catch_up()
    put(parent, "p4")
    handed_at = state(parent)
    fence = parent_log.fence(2, note="split hand-off")
    with pytest.raises(errors.Fenced):
        put(parent, "after-hand-off")
    child_log = new_log()
    child_standby.fork_into(child_log, fence.offset)
    assert rows(child_standby.db_path) == handed_at
    return parent_log, child_log, child_standby, fence.offset


def test_fork_continues_in_its_own_log_and_restores(tmp_path: Path, new_log: NewLog) -> None:
    parent_log, child_log, child, fence_offset = split(tmp_path, new_log)
    put(child, "c1")
    want = state(child)
    child.close()
    # a fresh volume of the child: parent's snapshot, parent's tail to the fence, child log
    restored = ShardStore.open(tmp_path / "child-restored", child_log, 6, options=MANUAL)
    assert restored.restore_report.source == "snapshot"
    assert rows(restored.db_path) == want
    # the child's own volume needs only its tail
    again = ShardStore.open(tmp_path / "child", child_log, 6, options=MANUAL)
    assert again.restore_report.source == "volume"
    assert rows(again.db_path) == want
    # forking twice into the same log is refused unless it is the same fork
    with pytest.raises(errors.ForkMismatch):
        ShardStore.fork(tmp_path / "x", parent_log, fence_offset - 1, child_log, 7)
    redo = ShardStore.fork(tmp_path / "y", parent_log, fence_offset, child_log, 7)
    assert state(redo) == want


def test_fork_then_prune_keeps_the_child_restorable(tmp_path: Path, new_log: NewLog) -> None:
    parent_log, child_log, child, fence_offset = split(tmp_path, new_log)
    put(child, "c1")
    want = state(child)
    # the parent goes on as one half of the split, with a newer snapshot past the fence
    narrowed = ShardStore.open(tmp_path / "narrowed", parent_log, 3, options=MANUAL)
    narrowed.fence()
    put(narrowed, "p5")
    newest = narrowed.snapshot()
    assert newest is not None
    assert newest.offset > fence_offset
    plan = prune(parent_log, now=LATER)
    # the child still needs the parent's older snapshot and the log from it to the fence
    fork_need = next(req for req in plan.requirements if "fork" in req.why)
    assert fork_need.snapshot is not None
    assert fork_need.offset < fence_offset < newest.offset
    assert plan.keep_from == fork_need.offset
    assert fork_need.snapshot.snapshot_id not in {m.rsplit("/", 1)[-1][:-5] for m in plan.manifests}
    restored = ShardStore.open(tmp_path / "after-prune", child_log, 8, options=MANUAL)
    assert restored.restore_report.source == "snapshot"
    assert rows(restored.db_path) == want

    # once the child has its own snapshot it no longer reaches into the parent
    assert child.snapshot() is not None
    put(child, "c2")
    want = state(child)
    dry = prune(parent_log, dry_run=True, now=LATER)
    assert dry.registrations  # the fork registration is stale now
    assert dry.fragments
    assert parent_log.store.get(dry.fragments[0]) is not None  # dry run deleted nothing
    done = prune(parent_log, now=LATER)
    assert done.keys == dry.keys
    for key in done.keys:
        assert parent_log.store.get(key) is None
    prune(child_log, now=LATER)
    restored = ShardStore.open(tmp_path / "after-second-prune", child_log, 9, options=MANUAL)
    assert restored.restore_report.source == "snapshot"
    assert rows(restored.db_path) == want
    # the parent's own recovery still works from its newest snapshot
    want_parent = state(narrowed)
    parent_again = ShardStore.open(tmp_path / "parent-again", parent_log, 9, options=MANUAL)
    assert parent_again.restore_report.snapshot_id == newest.snapshot_id
    assert rows(parent_again.db_path) == want_parent


def test_prune_keeps_what_own_recovery_needs(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    store = ShardStore.open(tmp_path / "a", log, 1, options=MANUAL)
    store.fence()
    put(store, "a")
    old = store.snapshot()
    put(store, "b")
    newest = store.snapshot()
    put(store, "c")
    want = state(store)
    assert old is not None
    assert newest is not None
    plan = plan_prune(log, now=LATER)
    assert plan.keep_from == newest.offset
    assert log.manifest_key(old.snapshot_id) in plan.manifests
    assert log.manifest_key(newest.snapshot_id) not in plan.manifests
    assert all(
        key.startswith(f"{log.snapshot_data_prefix}{old.snapshot_id}/")
        for key in plan.snapshot_data
    )
    assert plan.snapshot_data
    prune(log, now=LATER)
    restored = ShardStore.open(tmp_path / "b", log, 2, options=MANUAL)
    assert rows(restored.db_path) == want
    # the store itself goes on committing after its old log data is gone
    put(store, "d")
    again = ShardStore.open(tmp_path / "b", log, 3, options=MANUAL)
    assert again.restore_report.source == "volume"
    # a pruned journal no longer starts at 0; its head and fencing still work from there
    bounds = log.journal.bounds()
    assert bounds is not None
    assert bounds[0] > 0
    assert log.journal.head() == bounds[1]
    fence = log.fence(4)
    assert fence.offset == bounds[1]
    with pytest.raises(errors.Fenced):
        put(store, "e")


def test_prune_cli_dry_run_prints_the_plan(
    tmp_path: Path, new_log: NewLog, dev_env: EnvInfo
) -> None:
    log = new_log()
    store = ShardStore.open(tmp_path / "a", log, 1, options=MANUAL)
    store.fence()
    put(store, "a")
    assert store.snapshot() is not None
    put(store, "b")
    assert store.snapshot() is not None
    env = {
        **os.environ,
        "SHARDKEEPER_S3_ENDPOINT": dev_env.s3_endpoint,
        "SHARDKEEPER_S3_ACCESS_KEY": dev_env.s3_access_key,
        "SHARDKEEPER_S3_SECRET_KEY": dev_env.s3_secret_key,
        "SHARDKEEPER_S3_REGION": dev_env.s3_region,
    }
    command = [
        sys.executable,
        "-m",
        "shardkeeper.storage.prune",
        "--bucket",
        log.store.bucket,
        "--log",
        log.name,
        "--dry-run",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "DRY RUN: nothing deleted" in result.stdout
    assert "1 snapshot manifests to remove" in result.stdout
    assert f"{log.name}/journal/" in result.stdout
    assert len(plan_prune(log).manifests) == 1  # still there
