"""The process node against the real control plane: StatefulSets with volume claims,
pod deletion and recreation, namespace deletion, garbage collection, environment and
volumes, probes, restarts, termination, and the node's own restart."""

from __future__ import annotations

import ipaddress
import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.wait import wait_for

from shardkeeper_dev import environment
from shardkeeper_dev.node.kube import ApiError, Kube, namespaced

pytestmark = pytest.mark.env

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]

# A small HTTP server as a shard will be: it binds $POD_IP, serves /readyz, and keeps
# a count of its starts on its volume.
APP = r"""
import http.server, os, pathlib, signal, socket, sys
data = pathlib.Path(os.environ.get("DATA_DIR", "/data"))
boots = data / "boots"
count = int(boots.read_text()) + 1 if boots.exists() else 1
boots.write_text(str(count))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
answers = {
    "/readyz": b"ok",
    "/boots": str(count).encode(),
    "/name": os.environ["POD_NAME"].encode(),
    "/hostname": socket.gethostname().encode(),
}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = answers.get(self.path)
        self.send_response(404 if body is None else 200)
        self.end_headers()
        self.wfile.write(body or b"")
    def log_message(self, *args):
        pass
print("serving on", os.environ["POD_IP"], flush=True)
http.server.HTTPServer((os.environ["POD_IP"], 8080), Handler).serve_forever()
"""

POD_ENV = [
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
]


def app_container(**extra: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "image": "python:3.11",  # ignored: the node runs the command on the host
        "command": ["python", "-c", APP],
        "env": POD_ENV,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        **extra,
    }


def statefulset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 10, "containers": [app_container()]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }


def pod_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def kube(kube_api: Any) -> Kube:
    return Kube(kube_api)


def apply(kubectl: Kubectl, namespace: str, *objects: dict[str, Any]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    kubectl("apply", "-n", namespace, "-f", "-", input=body)


def http_get(ip: str, path: str, port: int = 8080) -> str:
    with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def dev_logs(dev_env: environment.EnvInfo, *args: str) -> subprocess.CompletedProcess[str]:
    """`shardkeeper dev logs`, as a user runs it."""
    command = [sys.executable, "-m", "shardkeeper", "dev", "logs"]
    return subprocess.run(
        [*command, "--state-dir", str(dev_env.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def get(kube: Kube, path: str) -> dict[str, Any] | None:
    obj: dict[str, Any] | None = kube.get(path)
    return obj


def pod(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return get(kube, namespaced("pods", namespace, name))


def condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond["type"] == kind:
            return str(cond["status"])
    return None


def ready_pod(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    found = pod(kube, namespace, name)
    return found if condition(found, "Ready") == "True" else None


def events_for(kube: Kube, namespace: str, name: str) -> set[tuple[str, str]]:
    """(type, reason) of the events about a pod."""
    query = {"fieldSelector": f"involvedObject.name={name}"}
    listing = kube.request("GET", namespaced("events", namespace), query=query)
    return {(e["type"], e["reason"]) for e in listing["items"]}


def container_pid(obj: dict[str, Any]) -> int:
    container_id = obj["status"]["containerStatuses"][0]["containerID"]
    assert container_id.startswith("process://"), container_id
    return int(container_id.removeprefix("process://"))


def process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def wait_ready_statefulset(kube: Kube, namespace: str, name: str, replicas: int) -> None:
    def ready() -> bool:
        sts = get(kube, f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}")
        return (sts or {}).get("status", {}).get("readyReplicas") == replicas

    wait_for(ready, timeout=120, what=f"statefulset {name} with {replicas} ready replicas")


def wait_default_service_account(kube: Kube, namespace: str) -> None:
    # pods are refused until the controller manager has made the namespace's account
    wait_for(
        lambda: get(kube, namespaced("serviceaccounts", namespace, "default")),
        timeout=30,
        what="the default service account",
    )


def test_node_is_registered_and_heartbeating(kube: Kube, dev_env: environment.EnvInfo) -> None:
    node = get(kube, f"/api/v1/nodes/{dev_env.node_name}")
    assert node is not None
    assert condition(node, "Ready") == "True"
    # the only address: the API server reaches the node's log endpoint through it
    assert node["status"]["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"}]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    assert int(node["status"]["allocatable"]["pods"]) > 0

    # the API server taints every new Node not-ready; the node-lifecycle controller
    # lifts it once it sees the node healthy, and adds none while the heartbeat goes on
    def untainted() -> bool:
        taints = (get(kube, f"/api/v1/nodes/{dev_env.node_name}") or {})["spec"].get("taints")
        return not any(t["key"].startswith("node.kubernetes.io/") for t in taints or [])

    wait_for(untainted, timeout=60, what="the node to carry no health taint")
    lease_path = (
        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node['metadata']['name']}"
    )
    first = get(kube, lease_path)
    assert first is not None
    wait_for(
        lambda: get(kube, lease_path)["spec"]["renewTime"] != first["spec"]["renewTime"],  # type: ignore[index]
        timeout=30,
        what="the node's lease to be renewed",
    )


def test_statefulset_with_volume_claims_becomes_ready(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, statefulset("web", 2))
    wait_ready_statefulset(kube, namespace, "web", 2)

    addresses = set()
    for name in ("web-0", "web-1"):
        obj = pod(kube, namespace, name)
        assert obj is not None
        status = obj["status"]
        assert status["phase"] == "Running"
        ip = ipaddress.IPv4Address(status["podIP"])
        assert ip.is_loopback
        assert str(ip) != "127.0.0.1"
        assert status["podIPs"] == [{"ip": str(ip)}]
        assert status["hostIP"] == "127.0.0.1"
        addresses.add(str(ip))
        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            assert condition(obj, kind) == "True", kind
        (container,) = status["containerStatuses"]
        assert container["ready"]
        assert container["started"]
        assert "running" in container["state"]
        # the server bound its own address, and sees its pod name as its host name
        assert http_get(str(ip), "/name") == name
        assert http_get(str(ip), "/hostname") == name

        claim = get(kube, namespaced("persistentvolumeclaims", namespace, f"data-{name}"))
        assert claim is not None
        assert claim["status"]["phase"] == "Bound"
        volume = get(kube, f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
        assert volume is not None
        assert (Path(volume["spec"]["hostPath"]["path"]) / "boots").read_text() == "1"
        assert ("Normal", "Scheduled") in events_for(kube, namespace, name)
    assert len(addresses) == 2


def test_deleted_pod_comes_back_to_its_volume(kube: Kube, kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, statefulset("db", 1))
    wait_ready_statefulset(kube, namespace, "db", 1)
    first = pod(kube, namespace, "db-0")
    assert first is not None
    assert http_get(first["status"]["podIP"], "/boots") == "1"
    old_pid = container_pid(first)

    kube.delete(namespaced("pods", namespace, "db-0"))

    def recreated() -> dict[str, Any] | None:
        obj = ready_pod(kube, namespace, "db-0")
        return obj if obj and obj["metadata"]["uid"] != first["metadata"]["uid"] else None

    second = wait_for(recreated, timeout=90, what="db-0 to be recreated and ready")
    assert process_gone(old_pid)
    assert http_get(second["status"]["podIP"], "/boots") == "2"


def test_deleting_a_namespace_cleans_everything_up(
    kube: Kube, kubectl: Kubectl, dev_env: environment.EnvInfo
) -> None:
    namespace = f"t-ns-cleanup-{secrets.token_hex(3)}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    apply(kubectl, namespace, statefulset("web", 2))
    wait_ready_statefulset(kube, namespace, "web", 2)
    pids = [container_pid(pod(kube, namespace, f"web-{i}") or {}) for i in range(2)]
    claims = kube.request("GET", namespaced("persistentvolumeclaims", namespace))["items"]
    volume_names = [c["spec"]["volumeName"] for c in claims]
    directories = []
    for name in volume_names:
        volume = get(kube, f"/api/v1/persistentvolumes/{name}")
        assert volume is not None
        directories.append(Path(volume["spec"]["hostPath"]["path"]))
    assert all(d.is_dir() for d in directories)

    kube.delete(f"/api/v1/namespaces/{namespace}")

    wait_for(
        lambda: get(kube, f"/api/v1/namespaces/{namespace}") is None,
        timeout=120,
        what=f"namespace {namespace} to be gone",
    )
    wait_for(
        lambda: all(get(kube, f"/api/v1/persistentvolumes/{n}") is None for n in volume_names),
        timeout=60,
        what="the namespace's persistent volumes to be deleted",
    )
    assert all(process_gone(pid) for pid in pids)
    assert not any(d.exists() for d in directories)
    # the pods' logs stay for inspection
    logs = dev_env.state_dir / "node" / "pods" / namespace / "web-0" / "app.log"
    assert "serving on" in logs.read_text()


def test_garbage_collection_removes_owned_objects(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, statefulset("gc", 1))
    wait_ready_statefulset(kube, namespace, "gc", 1)
    owned_pod = pod(kube, namespace, "gc-0")
    assert owned_pod is not None
    pid = container_pid(owned_pod)

    kube.delete(f"/apis/apps/v1/namespaces/{namespace}/statefulsets/gc")
    wait_for(
        lambda: pod(kube, namespace, "gc-0") is None,
        timeout=60,
        what="the statefulset's pod to be collected",
    )
    assert process_gone(pid)

    owner = kube.create(
        namespaced("configmaps", namespace), {"metadata": {"name": "owner"}, "data": {}}
    )
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    kube.create(
        namespaced("configmaps", namespace),
        {"metadata": {"name": "owned", "ownerReferences": [reference]}, "data": {}},
    )
    kube.create(namespaced("configmaps", namespace), {"metadata": {"name": "bystander"}})
    kube.delete(namespaced("configmaps", namespace, "owner"))
    wait_for(
        lambda: get(kube, namespaced("configmaps", namespace, "owned")) is None,
        timeout=60,
        what="the owned configmap to be collected",
    )
    assert get(kube, namespaced("configmaps", namespace, "bystander")) is not None


def test_generic_ephemeral_volume_lives_and_goes_with_its_pod(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    wait_default_service_account(kube, namespace)
    template = {
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }
    spec = {
        "containers": [app_container()],
        "volumes": [{"name": "data", "ephemeral": {"volumeClaimTemplate": template}}],
    }
    apply(kubectl, namespace, pod_manifest("scratchy", spec))
    ready = wait_for(lambda: ready_pod(kube, namespace, "scratchy"), timeout=90, what="ready")
    assert http_get(ready["status"]["podIP"], "/boots") == "1"
    claim = get(kube, namespaced("persistentvolumeclaims", namespace, "scratchy-data"))
    assert claim is not None
    volume_name = claim["spec"]["volumeName"]

    kube.delete(namespaced("pods", namespace, "scratchy"))
    wait_for(
        lambda: get(kube, f"/api/v1/persistentvolumes/{volume_name}") is None,
        timeout=90,
        what="the ephemeral volume to go with its pod",
    )


# what a pod reports about its own environment, volumes and API access
REPORT = r"""
import json, os, pathlib, socket
from kubernetes import client, config
config.load_incluster_config()
me = client.CoreV1Api().read_namespaced_pod(os.environ["POD_NAME"], os.environ["POD_NAMESPACE"])
sa = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
print(json.dumps({
    "env": {k: os.environ.get(k) for k in (
        "GREETING", "PASSWORD", "POD_NAME", "POD_NAMESPACE", "POD_IP", "NODE", "TIER",
        "EXPANDED", "CFG_extra", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HOSTNAME",
    )},
    "argv": os.environ.get("ARGS_SEEN"),
    "init": pathlib.Path("/scratch/init.txt").read_text(),
    "config_file": pathlib.Path("/etc/app/settings.conf").read_text(),
    "namespace_file": (sa / "namespace").read_text(),
    "api_sees_me": me.metadata.uid,
    "cwd": os.getcwd(),
}))
"""


def test_environment_volumes_and_in_cluster_api(
    kube: Kube, kubectl: Kubectl, namespace: str, dev_env: environment.EnvInfo
) -> None:
    wait_default_service_account(kube, namespace)
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + namespace
    kube.create(
        rbac + "/roles",
        {
            "metadata": {"name": "read-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    )
    kube.create(
        rbac + "/rolebindings",
        {
            "metadata": {"name": "read-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-pods",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"greeting": "hello", "settings.conf": "level=debug\n", "extra": "x"},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"},
    }
    env = [
        *POD_ENV,
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
        },
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {
            "name": "MISSING",
            "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
        },
        {"name": "EXPANDED", "value": "$(POD_NAME)/$(GREETING)/$$(POD_NAME)"},
    ]
    spec = {
        "restartPolicy": "Never",
        "initContainers": [
            {
                "name": "prepare",
                "image": "busybox",
                "command": ["sh", "-c", "echo prepared by $(POD_NAME) > /scratch/init.txt"],
                "env": POD_ENV,
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }
        ],
        "containers": [
            {
                "name": "report",
                "image": "python:3.11",
                "command": ["python", "-c", REPORT],
                "env": env,
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "settings", "mountPath": "/etc/app"},
                ],
            }
        ],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "settings", "configMap": {"name": "settings"}},
        ],
    }
    manifest = pod_manifest("report", spec)
    manifest["metadata"]["labels"] = {"tier": "backend"}
    apply(kubectl, namespace, config_map, secret, manifest)

    def finished() -> dict[str, Any] | None:
        obj = pod(kube, namespace, "report")
        phase = (obj or {}).get("status", {}).get("phase")
        return obj if phase in ("Succeeded", "Failed") else None

    done = wait_for(finished, timeout=90, what="the report pod to finish")
    logs = dev_logs(dev_env, f"{namespace}/report").stdout
    assert done["status"]["phase"] == "Succeeded", logs
    report = json.loads([line for line in logs.splitlines() if line.startswith("{")][-1])
    assert report["env"] == {
        "GREETING": "hello",
        "PASSWORD": "s3cret",
        "POD_NAME": "report",
        "POD_NAMESPACE": namespace,
        "POD_IP": done["status"]["podIP"],
        "NODE": dev_env.node_name,
        "TIER": "backend",
        "EXPANDED": "report/hello/$(POD_NAME)",
        "CFG_extra": "x",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": dev_env.server.rsplit(":", 1)[1],
        "HOSTNAME": "report",
    }
    assert report["init"] == "prepared by report\n"
    assert report["config_file"] == "level=debug\n"
    assert report["namespace_file"] == namespace
    assert report["api_sees_me"] == done["metadata"]["uid"]
    (init_status,) = done["status"]["initContainerStatuses"]
    assert init_status["state"]["terminated"]["reason"] == "Completed"
    (status,) = done["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    assert condition(done, "Ready") == "False"
    assert condition(done, "Initialized") == "True"


def test_a_missing_secret_holds_the_container_until_it_exists(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    wait_default_service_account(kube, namespace)
    container = app_container(
        env=[*POD_ENV, {"name": "T", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}]
    )
    spec = {"containers": [container], "volumes": [{"name": "data", "emptyDir": {}}]}
    apply(kubectl, namespace, pod_manifest("waits", spec))

    def waiting_reason() -> str | None:
        statuses = ((pod(kube, namespace, "waits") or {}).get("status") or {}).get(
            "containerStatuses"
        ) or [{}]
        return statuses[0].get("state", {}).get("waiting", {}).get("reason")

    wait_for(
        lambda: waiting_reason() == "CreateContainerConfigError",
        timeout=60,
        what="CreateContainerConfigError",
    )
    assert pod(kube, namespace, "waits")["status"]["phase"] == "Pending"  # type: ignore[index]
    kube.create(
        namespaced("secrets", namespace), {"metadata": {"name": "late"}, "stringData": {"t": "1"}}
    )
    wait_for(lambda: ready_pod(kube, namespace, "waits"), timeout=60, what="the pod to start")


def test_crashing_container_restarts_with_back_off(
    kube: Kube, kubectl: Kubectl, namespace: str, dev_env: environment.EnvInfo
) -> None:
    wait_default_service_account(kube, namespace)
    spec = {
        "containers": [
            {"name": "crash", "image": "x", "command": ["sh", "-c", "echo boom; exit 3"]}
        ]
    }
    apply(kubectl, namespace, pod_manifest("crash", spec))

    def looping() -> dict[str, Any] | None:
        obj = pod(kube, namespace, "crash")
        statuses = (obj or {}).get("status", {}).get("containerStatuses") or [{}]
        status = statuses[0]
        waiting = status.get("state", {}).get("waiting", {})
        if status.get("restartCount", 0) >= 2 and waiting.get("reason") == "CrashLoopBackOff":
            return obj
        return None

    obj = wait_for(looping, timeout=60, what="the container to crash-loop")
    status = obj["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert obj["status"]["phase"] == "Running"
    assert condition(obj, "Ready") == "False"
    log = dev_env.state_dir / "node" / "pods" / namespace / "crash" / "crash.log"
    assert log.read_text().count("boom") >= 3
    wait_for(
        lambda: (
            {("Normal", "Started"), ("Warning", "BackOff")} <= events_for(kube, namespace, "crash")
        ),
        timeout=30,
        what="Started and BackOff events",
    )


def test_liveness_failure_restarts_the_container(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    wait_default_service_account(kube, namespace)
    container = {
        "name": "sleeper",
        "image": "x",
        "command": ["python", "-c", "import time; time.sleep(600)"],
        # nothing listens: the probe fails from the start
        "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2},
    }
    spec = {"terminationGracePeriodSeconds": 1, "containers": [container]}
    apply(kubectl, namespace, pod_manifest("unhealthy", spec))

    def restarted() -> dict[str, Any] | None:
        obj = pod(kube, namespace, "unhealthy")
        statuses = (obj or {}).get("status", {}).get("containerStatuses") or [{}]
        return obj if statuses[0].get("restartCount", 0) >= 1 else None

    obj = wait_for(restarted, timeout=60, what="a liveness restart")
    last = obj["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert "Liveness probe failed" in last.get("message", "")
    assert last["exitCode"] in (137, 143)
    wait_for(
        lambda: (
            {("Warning", "Unhealthy"), ("Normal", "Killing")}
            <= events_for(kube, namespace, "unhealthy")
        ),
        timeout=30,
        what="Unhealthy and Killing events",
    )


def test_readiness_follows_an_exec_probe(
    kube: Kube, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    wait_default_service_account(kube, namespace)
    container = {
        "name": "app",
        "image": "x",
        "command": ["python", "-c", "import time; time.sleep(600)"],
        "readinessProbe": {
            "exec": {"command": ["test", "-e", "/control/ready"]},
            "periodSeconds": 1,
        },
        "volumeMounts": [{"name": "control", "mountPath": "/control"}],
    }
    spec = {
        "containers": [container],
        "volumes": [{"name": "control", "hostPath": {"path": str(tmp_path)}}],
    }
    apply(kubectl, namespace, pod_manifest("gated", spec))
    wait_for(
        lambda: (pod(kube, namespace, "gated") or {}).get("status", {}).get("phase") == "Running",
        timeout=60,
        what="the pod to run",
    )
    assert condition(pod(kube, namespace, "gated"), "Ready") == "False"
    (tmp_path / "ready").touch()
    wait_for(lambda: ready_pod(kube, namespace, "gated"), timeout=30, what="ready")
    (tmp_path / "ready").unlink()
    wait_for(
        lambda: condition(pod(kube, namespace, "gated"), "Ready") == "False",
        timeout=30,
        what="not ready again",
    )
    obj = pod(kube, namespace, "gated")
    assert condition(obj, "ContainersReady") == "False"
    assert obj["status"]["containerStatuses"][0]["restartCount"] == 0  # type: ignore[index]


def test_termination_is_sigterm_then_sigkill_after_the_grace_period(
    kube: Kube, kubectl: Kubectl, namespace: str, dev_env: environment.EnvInfo
) -> None:
    wait_default_service_account(kube, namespace)
    stubborn = {
        "name": "stubborn",
        "image": "x",
        "command": [
            "python",
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: print('got SIGTERM', flush=True))\n"
            "print('up', flush=True)\n"
            "time.sleep(600)\n",
        ],
    }
    apply(
        kubectl,
        namespace,
        pod_manifest("stubborn", {"terminationGracePeriodSeconds": 3, "containers": [stubborn]}),
    )
    wait_for(lambda: ready_pod(kube, namespace, "stubborn"), timeout=60, what="the pod to run")
    pid = container_pid(pod(kube, namespace, "stubborn") or {})
    log = dev_env.state_dir / "node" / "pods" / namespace / "stubborn" / "stubborn.log"
    wait_for(lambda: "up" in log.read_text(), timeout=30, what="the process to start")

    started = time.monotonic()
    kube.delete(namespaced("pods", namespace, "stubborn"))
    wait_for(lambda: "got SIGTERM" in log.read_text(), timeout=10, what="SIGTERM")
    wait_for(
        lambda: pod(kube, namespace, "stubborn") is None, timeout=30, what="the pod to be deleted"
    )
    took = time.monotonic() - started
    assert took >= 3.0  # it ignored SIGTERM, so it lasted the whole grace period
    assert process_gone(pid)
    assert "container exited with code 137" in log.read_text()


def test_a_force_deleted_pod_is_stopped_at_once(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    wait_default_service_account(kube, namespace)
    spec = {
        "terminationGracePeriodSeconds": 600,
        "containers": [{"name": "c", "image": "x", "command": ["sleep", "3600"]}],
    }
    apply(kubectl, namespace, pod_manifest("forced", spec))
    running = wait_for(lambda: ready_pod(kube, namespace, "forced"), timeout=60, what="ready")
    pid = container_pid(running)
    kube.delete(namespaced("pods", namespace, "forced"), {"gracePeriodSeconds": 0})
    # the object is gone at once; the node gives the process a short grace, not 600s
    wait_for(lambda: process_gone(pid), timeout=30, what="the process to be stopped")


@pytest.fixture
def second_node(
    dev_env: environment.EnvInfo, namespace: str, tmp_path: Path, kube: Kube
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts (and restarts) an extra node serving only the test's namespace, on its own
    address range; it is stopped and its Node deleted afterwards."""
    name = f"test-node-{secrets.token_hex(3)}"
    started: list[subprocess.Popen[bytes]] = []
    argv = [
        sys.executable,
        "-m",
        "shardkeeper",
        "dev",
        "node",
        f"--kubeconfig={dev_env.kubeconfig}",
        f"--state-dir={tmp_path / 'node'}",
        f"--name={name}",
        f"--namespace={namespace}",
        "--pod-network=127.77.0.0/16",
    ]

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / "node.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc

    start.node_name = name  # type: ignore[attr-defined]
    start.state_dir = tmp_path / "node"  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        kube.delete(f"/api/v1/nodes/{name}")


def test_node_restart_adopts_its_pods_and_leaves_nothing_behind(
    kube: Kube, kubectl: Kubectl, namespace: str, second_node: Any
) -> None:
    wait_default_service_account(kube, namespace)
    node = second_node()
    spec = {
        "nodeName": second_node.node_name,
        "containers": [app_container()],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    apply(kubectl, namespace, pod_manifest("adopted", spec))
    first = wait_for(lambda: ready_pod(kube, namespace, "adopted"), timeout=60, what="ready")
    ip = first["status"]["podIP"]
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("127.77.0.0/16")
    pid = container_pid(first)

    # a graceful stop ends the processes and exits 0
    node.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0
    assert process_gone(pid)

    # the next node process runs the pod again, with its address and emptyDir
    node = second_node()

    def rerun() -> dict[str, Any] | None:
        obj = ready_pod(kube, namespace, "adopted")
        return obj if obj and container_pid(obj) != pid else None

    second = wait_for(rerun, timeout=60, what="the pod to run again")
    assert second["status"]["podIP"] == ip
    assert second["status"]["containerStatuses"][0]["restartCount"] == 1
    assert http_get(ip, "/boots") == "2"

    # killed outright, the node still takes its processes with it
    pid = container_pid(second)
    node.kill()
    node.wait()
    wait_for(lambda: process_gone(pid), timeout=10, what="the container to die with the node")

    # a pod deleted while its node is down leaves no directories once the node is back
    run_dir = second_node.state_dir / "run" / second["metadata"]["uid"]
    assert (run_dir / "volumes" / "data" / "boots").exists()
    kube.delete(namespaced("pods", namespace, "adopted"), {"gracePeriodSeconds": 0})
    second_node()
    wait_for(lambda: not run_dir.exists(), timeout=60, what="the stale pod directory to go")


def test_logs_command_shows_the_containers_output(
    kube: Kube, kubectl: Kubectl, namespace: str, dev_env: environment.EnvInfo
) -> None:
    wait_default_service_account(kube, namespace)
    spec = {
        "restartPolicy": "OnFailure",
        "containers": [
            {"name": "first", "image": "x", "command": ["sh", "-c", "echo from first"]},
            {"name": "second", "image": "x", "command": ["sh", "-c", "echo from second >&2"]},
        ],
    }
    apply(kubectl, namespace, pod_manifest("two", spec))
    wait_for(
        lambda: (pod(kube, namespace, "two") or {}).get("status", {}).get("phase") == "Succeeded",
        timeout=60,
        what="the pod to succeed",
    )

    def logs(*args: str) -> subprocess.CompletedProcess[str]:
        return dev_logs(dev_env, f"{namespace}/two", *args)

    assert "from first" in logs().stdout  # the first container is the default
    second = logs("-c", "second")
    assert "from second" in second.stdout
    assert "from first" not in second.stdout
    assert logs("-c", "third").returncode == 1


def test_kubectl_logs_shows_the_current_and_previous_run(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    wait_default_service_account(kube, namespace)
    # undefined $(...) references are left alone by Kubernetes' expansion: plain shell
    script = (
        "n=$(cat /state/n 2>/dev/null || echo 0); echo run $n; "
        "echo $((n + 1)) > /state/n; sleep 1; exit 1"
    )
    spec = {
        "containers": [
            {
                "name": "c",
                "image": "x",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "state", "mountPath": "/state"}],
            }
        ],
        "volumes": [{"name": "state", "emptyDir": {}}],
    }
    apply(kubectl, namespace, pod_manifest("runs", spec))

    def restarts() -> int:
        statuses = ((pod(kube, namespace, "runs") or {}).get("status") or {}).get(
            "containerStatuses"
        ) or [{}]
        return int(statuses[0].get("restartCount", 0))

    wait_for(lambda: restarts() >= 2, timeout=60, what="two restarts")
    current = kubectl("logs", "-n", namespace, "runs").stdout
    previous = kubectl("logs", "-n", namespace, "runs", "--previous").stdout
    # each run says its number once; the node's own marker lines are not shown
    assert current.startswith("run ")
    assert previous.startswith("run ")
    assert int(current.split()[1]) == int(previous.split()[1]) + 1
    assert "process-node" not in current + previous
    # following ends with the run (at most a second and the back-off later)
    followed = kubectl("logs", "-n", namespace, "runs", "-f")
    assert followed.stdout.startswith("run ")


def test_only_pods_for_the_default_scheduler_are_bound(
    kube: Kube, kubectl: Kubectl, namespace: str
) -> None:
    wait_default_service_account(kube, namespace)
    spec = {
        "schedulerName": "some-other-scheduler",
        "containers": [{"name": "c", "image": "x", "command": ["true"]}],
    }
    apply(kubectl, namespace, pod_manifest("elsewhere", spec))
    apply(kubectl, namespace, pod_manifest("here", {"containers": spec["containers"]}))
    wait_for(
        lambda: (pod(kube, namespace, "here") or {}).get("spec", {}).get("nodeName"),
        timeout=30,
        what="the default-scheduler pod to be bound",
    )
    # both came through the same watch and queue, the other one first
    assert not (pod(kube, namespace, "elsewhere") or {})["spec"].get("nodeName")


def test_api_errors_are_reported(kube: Kube) -> None:
    with pytest.raises(ApiError) as caught:
        kube.create("/api/v1/namespaces", {"metadata": {"name": "Not Valid"}})
    assert caught.value.status == 422
