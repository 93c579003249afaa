"""The Role of docs/shard-pod.md is all a replica needs: run one with a service-account
token bound to exactly that Role, from start-up to a clean hand-over."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import SECRET, Feeder, ShardSetup, check_counts_exact, wait_outputs

from shardkeeper.api.meta import GROUP

POD = "replica-0"


def runtime_role(setup: ShardSetup) -> dict[str, Any]:
    """The Role `<shard>-runtime`, rule for rule as the contract's table has it."""
    shard = setup.shard
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": f"{shard}-runtime"},
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": ["shards"],
                "resourceNames": [shard],
                "verbs": ["get", "watch"],
            },
            {
                "apiGroups": [GROUP],
                "resources": ["shards/status"],
                "resourceNames": [shard],
                "verbs": ["get", "patch"],
            },
            {
                "apiGroups": [GROUP],
                "resources": ["tasks", "collections", "storagemappings"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [SECRET],
                "verbs": ["get"],
            },
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [shard],
                "verbs": ["get", "update", "patch"],
            },
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            # the contract names the StatefulSet's pods; here the one pod run by hand
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": [POD],
                "verbs": ["patch"],
            },
        ],
    }


def service_account_kubeconfig(setup: ShardSetup, path: Path) -> Path:
    core = client.CoreV1Api(setup.kube_api)
    rbac = client.RbacAuthorizationV1Api(setup.kube_api)
    name = f"{setup.shard}-runtime"
    core.create_namespaced_service_account(
        setup.namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    rbac.create_namespaced_role(setup.namespace, runtime_role(setup))
    rbac.create_namespaced_role_binding(
        setup.namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": setup.namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        name, setup.namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = yaml.safe_load(setup.dev_env.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": admin["clusters"][0]["name"], "user": name}}
        ],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_replica_runs_with_only_the_contracts_role(
    new_shard: NewShard, spawn: Spawn, tmp_path: Path
) -> None:
    setup = new_shard()
    kubeconfig = service_account_kubeconfig(setup, tmp_path / "runtime.kubeconfig")
    replica = spawn(setup, POD, KUBECONFIG=str(kubeconfig))
    entry = replica.wait_state("PRIMARY", timeout=60)
    assert entry["message"] == ""
    feeder = Feeder(setup)
    feeder.send(["a", "b", "a"])
    wait_outputs(setup, 3, timeout=30)
    check_counts_exact(setup, feeder.sent)
    replica.signal(signal.SIGTERM)
    assert replica.wait(30) == 0
    # status, Lease renewal and release all went through with the Role's permissions
    assert setup.lease_holder() is None
    assert setup.replica(POD)["state"] == "IDLE"
    warnings = [line["msg"] for line in replica.log_lines() if line["level"] != "info"]
    assert warnings == []
