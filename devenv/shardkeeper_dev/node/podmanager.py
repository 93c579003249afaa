"""One worker per pod bound to this node, keyed by uid: a pod recreated under the same
name (a StatefulSet's) is a new pod with a new worker, even while the old one stops."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterable
from typing import Any

from shardkeeper_dev.node.layout import Layout
from shardkeeper_dev.node.podworker import NodeServices, PodWorker

log = logging.getLogger(__name__)


class PodManager:
    def __init__(self, node: NodeServices) -> None:
        self._node = node
        self._workers: dict[str, PodWorker] = {}
        # uids whose worker finished: late events for them must not start a new one
        self._finished: set[str] = set()
        self._stopping = False
        self._lock = threading.Lock()

    def handle(self, kind: str, pod: dict[str, Any]) -> None:
        """Informer handler for pod events."""
        if pod.get("spec", {}).get("nodeName") != self._node.node_name:
            return
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.gone()
                return
            if worker is not None:
                worker.update(pod)
                return
            if uid in self._finished or self._stopping:
                return
            worker = PodWorker(self._node, pod, self._done)
            self._workers[uid] = worker
            worker.start()

    def _done(self, uid: str) -> None:
        with self._lock:
            self._workers.pop(uid, None)
            self._finished.add(uid)

    def shutdown(self, timeout: float) -> None:
        """Stop every pod's processes (the pods stay bound here, for the next start)."""
        with self._lock:
            self._stopping = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.shutdown()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(deadline - time.monotonic(), 0.1))
        with self._lock:
            left = [w.key for w in self._workers.values()]
        if left:
            log.warning("pods still stopping at shutdown: %s", ", ".join(left))


def remove_stale_pod_dirs(layout: Layout, found_at_start: Iterable[str], live: set[str]) -> None:
    """Pods deleted while the node was down leave their per-pod directories (emptyDirs,
    file volumes) behind: remove those of the pods that no longer exist."""
    for uid in found_at_start:
        if uid not in live:
            shutil.rmtree(layout.pod_run_dir(uid), ignore_errors=True)
            log.info("removed the directories of pod %s, deleted while the node was down", uid)
