"""Start-up against the real API server and MinIO: a missing Secret, then a missing bucket,
each shown as FAILED with what to fix, retried without exiting, until the shard runs."""

from __future__ import annotations

from typing import Any

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import (
    MAPPING,
    SECRET,
    ReplicaProcess,
    apply,
    create_secret,
    storage_mapping,
)
from tests.support.wait import wait_for

from shardkeeper_dev.environment import EnvInfo


def failed_with(replica: ReplicaProcess, text: str) -> dict[str, Any] | None:
    assert replica.running(), "a replica that cannot start must keep retrying, not exit"
    entry = replica.setup.replica(replica.pod)
    if entry.get("state") == "FAILED" and text in entry.get("message", ""):
        return entry
    return None


def test_missing_secret_and_bucket_are_reported_and_retried(
    new_shard: NewShard, spawn: Spawn, kube_api: Any, dev_env: EnvInfo
) -> None:
    setup = new_shard(secret=False)
    namespace, bucket = setup.namespace, setup.bucket
    replica = spawn(setup, "replica-0")
    entry = wait_for(
        lambda: failed_with(replica, f"Secret {SECRET!r}"),
        timeout=30,
        what="FAILED naming the missing Secret",
    )
    assert "does not exist: create it" in entry["message"]
    assert f"StorageMapping {MAPPING!r}" in entry["message"]
    code, body = replica.get("/readyz")
    assert code == 503
    assert "FAILED" in body
    assert replica.get("/healthz")[0] == 200
    logged = [line for line in replica.log_lines() if line["level"] == "error"]
    assert any(f"Secret {SECRET!r}" in line["msg"] for line in logged)
    assert all(line["shard"] == setup.shard for line in logged)
    assert all(line["pod"] == "replica-0" for line in logged)

    # the Secret is fixed, but the mapping names a bucket that does not exist
    apply(kube_api, namespace, storage_mapping(dev_env, f"{bucket}-gone"))
    create_secret(kube_api, namespace, dev_env)
    entry = wait_for(
        lambda: failed_with(replica, f"{bucket}-gone"),
        timeout=40,
        what="FAILED naming the missing bucket",
    )
    assert "does not exist" in entry["message"]

    apply(kube_api, namespace, storage_mapping(dev_env, bucket))
    entry = replica.wait_state("PRIMARY", timeout=40)
    assert entry["message"] == ""
    assert entry["epoch"] == 1
    status = setup.get_shard()["status"]
    assert status["primary"] == "replica-0"
    assert status["epoch"] == 1
    assert replica.get("/readyz")[0] == 200
