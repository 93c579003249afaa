"""The Node object and its heartbeat (a Lease in kube-node-lease, and the Ready condition).

The node-lifecycle controller judges a node by its Lease's renewTime; the Ready condition
is refreshed too, less often, as a kubelet does. Taints are never touched: the node adds
none, and removes none that others added.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from shardkeeper import __version__
from shardkeeper.kube.lease import LEASE_API_VERSION
from shardkeeper.kube.paths import resource_path
from shardkeeper_dev.node import timing
from shardkeeper_dev.node.clock import micro_time, rfc3339
from shardkeeper_dev.node.ipam import HOST_IP
from shardkeeper_dev.node.kube import STRATEGIC_MERGE_PATCH, ApiError, Kube

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
NODE_LABEL = "shardkeeper.io/process-node"
MAX_PODS = 110
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def _memory_kib() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def host_resources(state_dir: Path) -> dict[str, str]:
    """What the node offers: this machine's CPUs, memory and the state dir's disk."""
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{_memory_kib()}Ki",
        "ephemeral-storage": str(shutil.disk_usage(state_dir).total),
        "pods": str(MAX_PODS),
    }


def node_info(kubelet_version: str) -> dict[str, str]:
    machine_id = _read("/etc/machine-id", "process-node")
    return {
        "machineID": machine_id,
        "systemUUID": machine_id,
        "bootID": _read("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": platform.release(),
        "osImage": _os_image(),
        "containerRuntimeVersion": f"shardkeeper-process-node://{__version__}",
        "kubeletVersion": kubelet_version,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
    }


def node_conditions(now: float, since: float) -> list[dict[str, Any]]:
    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": rfc3339(now),
            "lastTransitionTime": rfc3339(since),
        }

    return [
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
        condition("Ready", "True", "KubeletReady", "process node is posting ready status"),
    ]


def node_status(
    resources: dict[str, str], info: dict[str, str], kubelet_port: int, now: float, since: float
) -> dict[str, Any]:
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": node_conditions(now, since),
        # no Hostname address: the API server would prefer it to reach the kubelet API,
        # and the node's name does not resolve
        "addresses": [{"type": "InternalIP", "address": HOST_IP}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": info,
    }


def node_labels(name: str, arch: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        NODE_LABEL: "true",
    }


def lease(name: str, node_uid: str, now: float) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            # as a kubelet does: the Lease goes when the Node goes
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": timing.LEASE_DURATION,
            "renewTime": micro_time(now),
        },
    }


class Registration:
    """Registers the Node, then keeps its Lease and Ready condition fresh."""

    def __init__(self, kube: Kube, name: str, resources: dict[str, str], kubelet_port: int) -> None:
        self._kube = kube
        self.name = name
        self.resources = resources
        self.kubelet_port = kubelet_port
        self._since = time.time()
        self._node_uid = ""
        self._info: dict[str, str] = {}

    @property
    def _node_path(self) -> str:
        return resource_path("v1", "nodes", name=self.name)

    @property
    def _lease_path(self) -> str:
        return resource_path(LEASE_API_VERSION, "leases", LEASE_NAMESPACE, self.name)

    def register(self) -> None:
        version = self._kube.request("GET", "/version") or {}
        self._info = node_info(str(version.get("gitVersion", "v0.0.0")))
        now = time.time()
        status = self._status(now)
        labels = node_labels(self.name, self._info["architecture"])
        node = self._kube.get(self._node_path)
        if node is None:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": self.name, "labels": labels},
                "spec": {},
                "status": status,
            }
            try:
                node = self._kube.create(resource_path("v1", "nodes"), body)
            except ApiError as err:
                if err.status != 409:
                    raise
                node = self._kube.request("GET", self._node_path)
        else:
            node = self._kube.patch(self._node_path, {"metadata": {"labels": labels}})
        self._node_uid = node["metadata"]["uid"]
        self._patch_status(now)
        self._renew_lease(now)
        log.info("node %s registered", self.name)

    def _status(self, now: float) -> dict[str, Any]:
        return node_status(self.resources, self._info, self.kubelet_port, now, self._since)

    def _patch_status(self, now: float) -> None:
        status = self._status(now)
        # replace, not merge: an address an earlier node process reported must go
        status["addresses"] = [{"$patch": "replace"}, *status["addresses"]]
        self._kube.patch(self._node_path + "/status", {"status": status}, STRATEGIC_MERGE_PATCH)

    def _renew_lease(self, now: float) -> None:
        body = lease(self.name, self._node_uid, now)
        try:
            self._kube.patch(self._lease_path, {"spec": body["spec"]})
        except ApiError as err:
            if err.status != 404:
                raise
            self._kube.create(self._lease_path.rsplit("/", 1)[0], body)

    def run(self, stop: threading.Event) -> None:
        """Heartbeat until ``stop``; failures are retried at the next beat."""
        last_status = time.monotonic()
        while not stop.wait(timing.LEASE_RENEW):
            try:
                if not self._node_uid:
                    self.register()
                    last_status = time.monotonic()
                    continue
                self._renew_lease(time.time())
                if time.monotonic() - last_status >= timing.NODE_STATUS_REFRESH:
                    self._patch_status(time.time())
                    last_status = time.monotonic()
            except ApiError as err:
                if err.status == 404:
                    # the Node was deleted: register it again
                    self._node_uid = ""
                log.warning("node heartbeat: %s", err)
            except Exception as err:
                log.warning("node heartbeat: %r", err)
