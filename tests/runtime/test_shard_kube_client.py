"""The runtime's light client against the real API server: reads, a missing object, a write
on a stale resourceVersion, server-side apply; and a real replica that never loads the
official client."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import Feeder, wait_outputs

from shardkeeper.kube.client import ApiError, request
from shardkeeper.kube.transport import LightClient
from shardkeeper_dev.environment import EnvInfo


def config_maps(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def test_get_404_stale_write_and_server_side_apply(
    runtime_kube: LightClient, kubectl: Any, namespace: str
) -> None:
    kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=a=1")
    path = config_maps(namespace) + "/settings"
    first = request(runtime_kube, "GET", path, timeout=5.0)
    assert first["data"] == {"a": "1"}

    with pytest.raises(ApiError) as missing:
        request(runtime_kube, "GET", config_maps(namespace) + "/nothing")
    assert (missing.value.status, missing.value.reason) == (404, "Not Found")
    assert missing.value.message == 'configmaps "nothing" not found'

    second = request(runtime_kube, "PUT", path, body={**first, "data": {"a": "2"}})
    assert second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as stale:
        request(runtime_kube, "PUT", path, body={**first, "data": {"a": "3"}})
    assert stale.value.status == 409
    assert "the object has been modified" in stale.value.message

    applied = request(
        runtime_kube,
        "PATCH",
        path,
        query={"fieldManager": "runtime-test", "force": True},
        body={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"b": "x"},
        },
        content_type="application/apply-patch+yaml",
    )
    assert applied["data"] == {"a": "2", "b": "x"}
    managers = {entry["manager"] for entry in applied["metadata"]["managedFields"]}
    assert "runtime-test" in managers
    out = kubectl("get", "configmap", "settings", "-n", namespace, "-o", "jsonpath={.data.b}")
    assert out.stdout == "x"


def test_in_cluster_token_and_ca_files_authenticate(
    dev_env: EnvInfo, kubectl: Any, namespace: str, tmp_path: Path
) -> None:
    """The pod's way: the service account's token and the CA from their files, the server
    from KUBERNETES_SERVICE_HOST/PORT."""
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "role", "reader", "-n", namespace, "--verb=get", "--resource=configmaps")
    kubectl(
        "create",
        "rolebinding",
        "reader",
        "-n",
        namespace,
        "--role=reader",
        f"--serviceaccount={namespace}:reader",
    )
    kubectl("create", "configmap", "visible", "-n", namespace)
    token = kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    admin = yaml.safe_load(dev_env.kubeconfig.read_text())
    ca = base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "token").write_text(token)
    server = urlsplit(dev_env.server)
    env = {
        "KUBERNETES_SERVICE_HOST": server.hostname or "",
        "KUBERNETES_SERVICE_PORT": str(server.port),
    }
    kube = LightClient.in_cluster(env, tmp_path)
    found = request(kube, "GET", config_maps(namespace) + "/visible")
    assert found["metadata"]["name"] == "visible"
    with pytest.raises(ApiError) as forbidden:
        request(kube, "GET", f"/api/v1/namespaces/{namespace}/secrets/anything")
    assert forbidden.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in forbidden.value.message


def test_a_replica_never_loads_the_official_client(new_shard: NewShard, spawn: Spawn) -> None:
    """Python lists every module it imports on stderr (the replica's log) with
    PYTHONPROFILEIMPORTTIME: none is the official client's, through start-up, the Lease,
    status applies and transactions."""
    setup = new_shard()
    replica = spawn(setup, "replica-0", PYTHONPROFILEIMPORTTIME="1")
    replica.wait_state("PRIMARY", 60)
    Feeder(setup).send(["a", "b", "a"])
    wait_outputs(setup, 3, 60)
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in replica.log_path.read_text().splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "shardkeeper.runtime.core.processor" in imported
    assert "shardkeeper.kube.transport" in imported
    assert [name for name in imported if name.split(".")[0] == "kubernetes"] == []
