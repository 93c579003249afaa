"""Events about pods, as `kubectl describe pod` shows them: Scheduled, Started, Killing,
Unhealthy, BackOff, Failed, FailedMount.

A repeated event (same pod, reason and message) is counted on the first one's object,
and the count is written at most every REPEAT_PATCH seconds, to keep writes few.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from shardkeeper_dev.node.clock import rfc3339
from shardkeeper_dev.node.kube import Kube, namespaced
from shardkeeper_dev.node.podcontext import Obj

log = logging.getLogger(__name__)

COMPONENT = "shardkeeper.io/process-node"
REPEAT_PATCH = 30.0


def event_body(
    pod: Obj,
    *,
    kind: str,
    reason: str,
    message: str,
    container: str | None,
    node_name: str,
    component: str,
    now: float,
) -> dict[str, Any]:
    meta = pod["metadata"]
    involved: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
    }
    if container:
        involved["fieldPath"] = f"spec.containers{{{container}}}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": involved,
        "type": kind,
        "reason": reason,
        "message": message,
        "count": 1,
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "eventTime": None,
        "source": {"component": component, "host": node_name},
        "reportingComponent": COMPONENT,
        "reportingInstance": node_name,
    }


class Events:
    def __init__(self, kube: Kube, node_name: str) -> None:
        self._kube = kube
        self._node_name = node_name
        # (pod uid, reason, message) -> [event name, count, count last written, when]
        self._seen: dict[tuple[str, str, str], list[Any]] = {}
        self._lock = threading.Lock()

    def pod(
        self,
        pod: Obj,
        kind: str,
        reason: str,
        message: str,
        *,
        container: str | None = None,
        component: str = "kubelet",
    ) -> None:
        """Record an event; never raises (events are for people, not for the node)."""
        now = time.time()
        key = (str(pod["metadata"]["uid"]), reason, message)
        try:
            with self._lock:
                seen = self._seen.get(key)
                if seen is not None:
                    seen[1] += 1
                    if now - seen[3] < REPEAT_PATCH:
                        return
                    name, count = seen[0], seen[1]
                    seen[2], seen[3] = count, now
            if seen is not None:
                path = namespaced("events", pod["metadata"]["namespace"], name)
                self._kube.patch(path, {"count": count, "lastTimestamp": rfc3339(now)})
                return
            body = event_body(
                pod,
                kind=kind,
                reason=reason,
                message=message,
                container=container,
                node_name=self._node_name,
                component=component,
                now=now,
            )
            created = self._kube.create(namespaced("events", pod["metadata"]["namespace"]), body)
            with self._lock:
                self._seen[key] = [created["metadata"]["name"], 1, 1, now]
        except Exception as err:  # the API server may be busy or restarting
            log.debug("event %s for %s: %s", reason, pod["metadata"].get("name"), err)

    def forget(self, pod_uid: str) -> None:
        with self._lock:
            for key in [k for k in self._seen if k[0] == pod_uid]:
                del self._seen[key]
