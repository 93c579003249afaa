"""Status by server-side apply against the real API server: each replica owns its entry,
the primary its fields, and nobody overwrites the operator's."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from tests.runtime.conftest import NewShard
from tests.runtime.shard_harness import ShardSetup

from shardkeeper.api.meta import GROUP, VERSION
from shardkeeper.api.shard import Checkpoint, ReplicaState, ReplicaStatus
from shardkeeper.kube.client import ApiError
from shardkeeper.runtime.shell.reporting import (
    PRIMARY_MANAGER,
    PrimaryStatus,
    ShardStatusApi,
    StatusReporter,
    primary_apply,
)


def reporter(setup: ShardSetup, pod: str) -> StatusReporter:
    api = ShardStatusApi(setup.runtime_kube, setup.namespace, setup.shard, timeout=10)
    return StatusReporter(api.apply, setup.namespace, setup.shard, pod)


def operator_apply(setup: ShardSetup, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(setup.kube_api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        setup.namespace,
        "shards",
        setup.shard,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Shard",
            "metadata": {"name": setup.shard},
            "status": status,
        },
        field_manager="shardkeeper-operator",
        _content_type="application/apply-patch+yaml",
    )


def test_replicas_primary_and_operator_write_side_by_side(new_shard: NewShard) -> None:
    setup = new_shard(hot_standbys=1)
    operator_apply(
        setup,
        {
            "phase": "Running",
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "PrimaryRunning",
                    "lastTransitionTime": "2024-05-01T12:00:00Z",
                }
            ],
        },
    )
    first, second = reporter(setup, "replica-0"), reporter(setup, "replica-1")
    first.replica(ReplicaStatus(pod="replica-0", state=ReplicaState.PRIMARY, epoch=1))
    first.primary(PrimaryStatus("replica-0", 1, Checkpoint(transactions=3), 500, 0))
    second.replica(
        ReplicaStatus(pod="replica-1", state=ReplicaState.STANDBY, epoch=1, recovery_log_head=400)
    )
    assert first.flush()
    assert second.flush()
    status = setup.get_shard()["status"]
    assert status["phase"] == "Running"
    assert status["conditions"][0]["reason"] == "PrimaryRunning"
    assert (status["primary"], status["epoch"], status["recoveryLogHead"]) == ("replica-0", 1, 500)
    assert status["checkpoint"]["transactions"] == 3
    assert setup.replica("replica-1")["recoveryLogHead"] == 400

    # replica-1 takes over; replica-0's entry is its own, and stays until it writes it
    second.replica(ReplicaStatus(pod="replica-1", state=ReplicaState.PRIMARY, epoch=2))
    second.primary(PrimaryStatus("replica-1", 2, recovery_log_head=700))
    assert second.flush()
    status = setup.get_shard()["status"]
    assert (status["primary"], status["epoch"], status["recoveryLogHead"]) == ("replica-1", 2, 700)
    # the new primary's apply gives up what it did not set: no stale checkpoint stays behind
    assert "checkpoint" not in status
    assert setup.replica("replica-0")["state"] == "PRIMARY"
    first.replica(
        ReplicaStatus(pod="replica-0", state=ReplicaState.FAILED, epoch=1, message="fenced")
    )
    assert first.flush()
    replicas = setup.replicas()
    assert (replicas["replica-0"]["state"], replicas["replica-0"]["message"]) == (
        "FAILED",
        "fenced",
    )
    assert replicas["replica-1"]["state"] == "PRIMARY"
    assert status["phase"] == "Running"
    managers = {
        entry["manager"]
        for entry in setup.get_shard()["metadata"]["managedFields"]
        if entry.get("subresource") == "status"
    }
    assert managers == {
        "shardkeeper-operator",
        "shardkeeper-primary",
        "shardkeeper-replica-replica-0",
        "shardkeeper-replica-replica-1",
    }


def test_an_old_primary_waking_up_cannot_write_its_fields_back(new_shard: NewShard) -> None:
    setup = new_shard(hot_standbys=1)
    old, new = reporter(setup, "replica-0"), reporter(setup, "replica-1")
    old.primary(PrimaryStatus("replica-0", 1, recovery_log_head=500))
    assert old.flush()
    new.primary(PrimaryStatus("replica-1", 2, recovery_log_head=700))
    assert new.flush()
    # the old primary's progress was pending when it paused; it goes out when it wakes up
    old.primary(PrimaryStatus("replica-0", 1, Checkpoint(transactions=9), 800, 0))
    assert old.flush()
    status = setup.get_shard()["status"]
    assert (status["primary"], status["epoch"], status["recoveryLogHead"]) == ("replica-1", 2, 700)


def test_a_primary_apply_checked_against_an_old_version_is_refused(new_shard: NewShard) -> None:
    setup = new_shard(hot_standbys=1)
    api = ShardStatusApi(setup.runtime_kube, setup.namespace, setup.shard, timeout=10)
    api.apply(PRIMARY_MANAGER, primary_apply(setup.namespace, setup.shard, PrimaryStatus("a", 1)))
    checked = setup.get_shard()["metadata"]["resourceVersion"]
    api.apply(PRIMARY_MANAGER, primary_apply(setup.namespace, setup.shard, PrimaryStatus("b", 2)))
    stale = primary_apply(setup.namespace, setup.shard, PrimaryStatus("a", 1))
    stale["metadata"]["resourceVersion"] = checked
    with pytest.raises(ApiError) as refused:
        api._apply(PRIMARY_MANAGER, stale)
    assert refused.value.status == 409
    assert setup.get_shard()["status"]["primary"] == "b"
