"""Stands in for kube-scheduler: binds every unscheduled pod of the served namespaces to
this node. It honours no scheduling constraint (resources, affinity, taints, topology):
there is one node, and it takes everything addressed to the default scheduler."""

from __future__ import annotations

import logging
from typing import Any

from shardkeeper_dev.node.events import Events
from shardkeeper_dev.node.informer import ObjectsByKey
from shardkeeper_dev.node.kube import ApiError, Kube, namespaced
from shardkeeper_dev.node.podcontext import Obj

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"


def needs_binding(pod: Obj) -> bool:
    spec = pod.get("spec", {})
    return (
        not spec.get("nodeName")
        and spec.get("schedulerName", DEFAULT_SCHEDULER) in ("", DEFAULT_SCHEDULER)
        and not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase", "Pending") == "Pending"
    )


def binding(pod: Obj, node_name: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        # the uid makes the binding fail for a pod recreated under the same name since
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
    }


class Binder:
    def __init__(self, kube: Kube, pods: ObjectsByKey, node_name: str, events: Events) -> None:
        self._kube = kube
        self._events = events
        self._pods = pods
        self._node_name = node_name

    def reconcile(self, key: str) -> None:
        pod = self._pods.get(key)
        if pod is None or not needs_binding(pod):
            return
        namespace, name = key.split("/", 1)
        try:
            self._kube.create(
                namespaced("pods", namespace, name, "binding"), binding(pod, self._node_name)
            )
        except ApiError as err:
            # 409: bound meanwhile or a different pod now; 404: gone. Either way, done.
            if err.status in (404, 409):
                return
            raise
        log.info("bound pod %s to %s", key, self._node_name)
        message = f"Successfully assigned {key} to {self._node_name}"
        self._events.pod(pod, "Normal", "Scheduled", message, component="default-scheduler")
