"""A Secret's value never reaches a shard's status or log, even when a library quotes it
back: the real shard runtime against the real API server, with a malformed DSN."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import GROUP, SOURCE, TASK, VERSION, apply
from tests.support.wait import wait_for

PASSWORD = "Tr0ub4dor-never-printed"
# libpq refuses the %zz and quotes the piece it stopped at: the password, all of it
DSN = f"postgresql://bob:{PASSWORD}%zz@127.0.0.1:1/db"


def test_a_malformed_dsn_is_reported_without_the_password_it_holds(
    new_shard: NewShard, spawn: Spawn, kube_api: Any
) -> None:
    setup = new_shard()
    namespace = setup.namespace
    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="pg"), string_data={"dsn": DSN}),
    )
    # the counter Task, made a materialization of its source
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "tasks", TASK
    )
    materialization = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Task",
        "metadata": {"name": TASK},
        "spec": {
            "type": "materialization",
            "storageMapping": "store",
            "sources": [SOURCE],
            "materialize": {
                "postgres": {
                    "dsnSecretRef": {"name": "pg", "key": "dsn"},
                    "tables": {SOURCE: "events"},
                }
            },
        },
    }
    apply(kube_api, namespace, materialization)  # no operator runs: no finalizer to wait for
    replica = spawn(setup, "replica-0")

    def failed() -> dict[str, Any] | None:
        assert replica.running(), "a task that cannot run is reported, not exited"
        entry = setup.replica(replica.pod)
        message = entry.get("message", "")
        return entry if entry.get("state") == "FAILED" and "percent-encoded" in message else None

    entry = wait_for(failed, timeout=60, what="FAILED with libpq's complaint")
    assert PASSWORD not in entry["message"]
    assert "Secret 'pg' (key 'dsn') is not valid" in entry["message"]
    wait_for(
        lambda: any("percent-encoded" in line["msg"] for line in replica.log_lines()),
        timeout=20,
        what="the failure in the log",
    )
    assert PASSWORD not in replica.log_path.read_text()
    assert PASSWORD not in str(setup.get_shard())
