"""The ownership checker on a split of real shard stores, against MinIO.

This branch's ShardStore fences claim nothing yet (the runtime's claims land with the split
work), so the test states each claim the way the runtime does: in the claim index
``<log>/claims/<fence offset>.json`` ({"epoch", "owns"}), written right after the fence
lands and before the first commit under it (docs/splits.md, "Fences claim ranges").
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from shardkeeper.storage.journal import FenceInfo
from shardkeeper.storage.layout import recovery_log_name
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions
from shardkeeper_dev.ownership import (
    EVERYTHING,
    FULL,
    OwnershipViolation,
    Ranges,
    check_task_ownership,
    claim_index_body,
    claim_index_key,
)

MANUAL = StoreOptions(background_snapshots=False)
LOWER = Ranges(0, 0x7FFFFFFF, 0, FULL)
UPPER = Ranges(0x80000000, FULL, 0, FULL)


def put(store: ShardStore, tag: str, count: int = 3) -> None:
    for i in range(count):
        with store.transaction() as txn:
            txn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
            txn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"{tag}-{i}", os.urandom(64)))


def claim(objects: ObjectStore, log: RecoveryLog, fence: FenceInfo, owns: Ranges) -> None:
    objects.put(claim_index_key(log.name, fence.offset), claim_index_body(fence.epoch, owns))


def test_a_split_of_real_stores_passes_and_a_lost_registration_fails(
    tmp_path: Path, objects: ObjectStore
) -> None:
    namespace, task = f"ns-{secrets.token_hex(4)}", "task"
    parent_log = RecoveryLog(objects, recovery_log_name(namespace, task, 0, 0))
    child_log = RecoveryLog(objects, recovery_log_name(namespace, task, 0x80000000, 0))

    # the task's one shard: epoch 1 claims everything
    first = ShardStore.open(tmp_path / "parent", parent_log, 1, options=MANUAL)
    claim(objects, parent_log, first.fence(), EVERYTHING)
    put(first, "before")
    first.close()

    # the hand-off: the parent's primary fences again (epoch 2) claiming its lower half
    parent = ShardStore.open(tmp_path / "parent", parent_log, 2, options=MANUAL)
    hand_off = parent.fence()
    claim(objects, parent_log, hand_off, LOWER)
    # the child's standby applies the parent's log up to that fence and forks there
    child = ShardStore.open(
        tmp_path / "child", parent_log, 1, until=hand_off.offset, options=MANUAL
    )
    claim(objects, child_log, child.fork_into(child_log, hand_off.offset), UPPER)
    put(parent, "parent")
    put(child, "child")
    rows = [(f"{task}-00000000-00000000", 2, None), (f"{task}-80000000-00000000", 1, None)]

    report = check_task_ownership(objects, namespace, task, checkpoints=rows)
    assert report.warnings == []
    assert (len(report.logs), report.commits, report.fences, report.forks) == (2, 9, 3, 1)
    assert report.logs[child_log.name].fork == (parent_log.name, hand_off.offset)
    assert report.logs[parent_log.name].current_claim == LOWER
    assert report.logs[child_log.name].current_claim == UPPER

    # without its registration, pruning could drop the child's history: the checker says so
    objects.delete([parent_log.fork_key(child_log.name)])
    with pytest.raises(OwnershipViolation) as raised:
        check_task_ownership(objects, namespace, task)
    assert [v.check for v in raised.value.violations] == ["fork-registration"]
    parent.close()
    child.close()
