"""Pruning never unfences a paused old writer (issue 11), against MinIO.

The old primary's next append goes at the key of its successor's fence. Pruning that
fence away would free the key: the old primary, waking up, would create it and believe
it committed into the pruned range.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.storage.conftest import NewLog
from tests.storage.storage_helpers import LATER, MANUAL, put, rows

from shardkeeper.storage import errors
from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.prune import plan_prune, prune
from shardkeeper.storage.snapshot import Manifest
from shardkeeper.storage.store import ShardStore


def test_a_paused_old_writer_is_still_fenced_after_pruning(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log()
    old = ShardStore.open(tmp_path / "old", log, 1, options=MANUAL)
    old.fence()
    put(old, "a")
    # the old primary pauses here: its next commit would go at the head
    new = ShardStore.open(tmp_path / "new", log, 2, options=MANUAL)
    fence = new.fence()
    put(new, "b")
    snapshot = new.snapshot()
    assert snapshot is not None
    put(new, "c")
    plan = prune(log, now=LATER)
    # the new primary's fence, right at the old writer's head, was in the pruned range
    assert fence.end < plan.keep_from == snapshot.offset
    assert [t.begin for t in plan.tombstones] == [0, fence.offset]
    assert plan.fragments
    assert all(log.store.get(key) is None for key in plan.fragments)
    # the old writer wakes up: its commit must not land, in the pruned range or anywhere
    with pytest.raises(errors.Fenced):
        put(old, "zombie")
    # the log reads as before: contiguous from the oldest needed point, tombstones unlisted
    bounds = log.journal.bounds()
    assert bounds is not None
    assert bounds[0] < plan.keep_from <= bounds[1]
    assert all(info.end > info.begin for info in log.journal.list_fragments())
    put(new, "d")
    want = new.query("SELECT k, v FROM kv ORDER BY k")
    assert not any(str(k).startswith("zombie") for k, _ in want)
    restored = ShardStore.open(tmp_path / "restored", log, 3, options=MANUAL)
    assert restored.restore_report.source == "snapshot"
    assert rows(restored.db_path) == want
    # pruning again finds nothing more to do, and leaves the tombstones where they are
    again = plan_prune(log, now=LATER)
    assert again.fragments == ()
    assert again.tombstones == ()
    assert log.store.get(plan.tombstones[1].key) is not None
    # fencing goes on at the head: the new primary is fenced in turn
    restored.fence()
    with pytest.raises(errors.Fenced):
        put(new, "e")
    kinds = [f.kind for f in log.journal.read(bounds[0])]
    assert kinds[-1] is FragmentKind.FENCE


def test_a_standby_behind_the_newest_snapshot_keeps_what_it_has_yet_to_read(
    tmp_path: Path, new_log: NewLog
) -> None:
    log = new_log()
    primary = ShardStore.open(tmp_path / "primary", log, 1, options=MANUAL)
    primary.fence()
    put(primary, "a")
    standby = ShardStore.open(tmp_path / "standby", log, 0, options=MANUAL)
    behind = standby.position
    put(primary, "b")
    put(primary, "c")
    seen: list[Manifest] = []
    primary.on_snapshot = seen.append
    snapshot = primary.snapshot()
    assert snapshot is not None
    assert seen == [snapshot]  # the store tells its listener (the shell's pruner)
    assert behind < snapshot.offset
    put(primary, "d")
    unbounded = plan_prune(log, now=LATER)
    assert unbounded.keep_from == snapshot.offset
    plan = prune(log, now=LATER, retain_from=behind)
    assert plan.keep_from == behind
    assert plan.requirements[-1].offset == behind
    # what ends at or after the standby's position stays, and the byte counts add up
    listed = log.journal.list_fragments()
    assert listed[0].end >= behind
    assert plan.kept_bytes + plan.removed_bytes == unbounded.kept_bytes + unbounded.removed_bytes
    assert plan.removed_bytes < unbounded.removed_bytes
    # the standby tails on from where it was, and ends with the primary's rows
    standby.catch_up()
    assert standby.position == primary.position
    standby.close()
    assert rows(standby.db_path) == primary.query("SELECT k, v FROM kv ORDER BY k")
    # once the standby is past the snapshot, the snapshot bounds the prune again
    again = prune(log, now=LATER, retain_from=standby.position)
    assert again.keep_from == snapshot.offset
    assert again.fragments
    assert all(info.end >= snapshot.offset for info in log.journal.list_fragments())
