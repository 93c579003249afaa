"""A real primary prunes its own recovery log after a snapshot, and a hot standby tailing it
loses nothing: it takes over later with exact counts, and a fresh restore of what is left
gives the same rows."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import (
    PREFIX,
    Feeder,
    ShardSetup,
    check_counts_exact,
    roles,
    wait_outputs,
)
from tests.runtime.test_shard_failover import metric
from tests.storage.storage_helpers import rows
from tests.support.wait import wait_for

from shardkeeper.storage.layout import object_key
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions

# a long key makes each commit's page images large, so 1Mi of log (a snapshot) comes soon
PAD = "x" * 200
KEYS = [f"k{i:03d}-{PAD}" for i in range(400)]


def recovery_log(setup: ShardSetup) -> RecoveryLog:
    spec = setup.get_shard()["spec"]
    return RecoveryLog(setup.objects, object_key(PREFIX, spec["recoveryLog"]))


def last_prune(setup: ShardSetup) -> dict[str, Any] | None:
    prune: dict[str, Any] | None = (setup.get_shard().get("status") or {}).get("lastPrune")
    return prune


def test_the_primary_prunes_after_a_snapshot_keeping_what_its_standby_reads(
    new_shard: NewShard, spawn: Spawn, tmp_path: Path
) -> None:
    setup = new_shard(
        hot_standbys=1,
        max_txn="200ms",
        shard_settings={"snapshotEvery": "1Mi", "pruneEvery": "10s"},
    )
    env = {"SHARDKEEPER_STATUS_INTERVAL": "1"}
    a, b = spawn(setup, "replica-0", **env), spawn(setup, "replica-1", **env)
    primary, standby = wait_for(lambda: roles(a, b), timeout=60, what="one PRIMARY and one STANDBY")
    log = recovery_log(setup)
    assert log.journal.list_fragments()[0].begin == 0

    feeder = Feeder(setup)
    with feeder.sending(KEYS, every=0.1):
        pruned = wait_for(
            lambda: last_prune(setup), timeout=120, what="status.lastPrune", interval=0.5
        )
    print(f"pruned: {pruned}")
    assert pruned["keptFrom"] > 0
    assert pruned["removedBytes"] > 0
    assert pruned["removedObjects"] > 0
    assert pruned["logBytes"] > 0
    # the old fragments are gone: the log now begins at or after where the prune kept from
    # (a fragment ending right there stays, so the head can always be found)
    kept = log.journal.list_fragments()
    assert kept[0].begin > 0
    assert kept[0].end >= pruned["keptFrom"]
    assert log.store.get(log.journal.key(0)) is not None  # the first fence: a tombstone
    # the standby's reported position was a bound of the plan
    done = [line for line in primary.log_lines() if line["msg"] == "pruned the recovery log"]
    assert done
    assert done[0]["retain_from"] is not None
    assert done[0]["kept_from"] <= done[0]["retain_from"]
    metrics = primary.get("/metrics")[1]
    assert metric(metrics, "shardkeeper_recovery_log_prunes_total", setup.shard) >= 1
    assert metric(metrics, "shardkeeper_recovery_log_prune_failures_total", setup.shard) == 0
    pruned_bytes = metric(metrics, "shardkeeper_recovery_log_pruned_bytes_total", setup.shard)
    assert pruned_bytes >= pruned["removedBytes"]
    objects = metric(metrics, "shardkeeper_recovery_log_pruned_objects_total", setup.shard)
    assert objects >= pruned["removedObjects"]

    # the standby went on tailing through the prune, without a failure or a new restore
    total = sum(feeder.sent.values())
    wait_outputs(setup, total, timeout=60)
    head = setup.get_shard()["status"]["recoveryLogHead"]
    wait_for(
        lambda: (setup.replica(standby.pod).get("recoveryLogHead") or 0) >= head,
        timeout=30,
        what=f"{standby.pod} to tail up to {head:#x}",
    )
    assert standby.state() == "STANDBY"
    errors = [line for line in standby.log_lines() if line.get("level") == "error"]
    assert errors == []
    restores = [line for line in standby.log_lines() if line["msg"].startswith("restored")]
    assert len(restores) == 1

    # it takes over from what it tailed, and the counts stay exact
    primary.kill()
    feeder.send(KEYS[:50])
    wait_outputs(setup, total + 50, timeout=60)
    check_counts_exact(setup, feeder.sent)
    standby.signal(signal.SIGTERM)
    assert standby.wait(30) == 0

    # what is left of the log restores, from a snapshot, to exactly the same rows
    fresh = ShardStore.open(
        tmp_path / "fresh", log, 0, options=StoreOptions(background_snapshots=False)
    )
    try:
        assert fresh.restore_report.source == "snapshot"
        restored = rows(fresh.db_path, "SELECT key, n FROM counts ORDER BY key")
    finally:
        fresh.close()
    assert restored == sorted(feeder.sent.items())
