"""The replica's role as a label on its own pod: ``shardkeeper.io/role: primary`` while it
is PRIMARY, no label otherwise (docs/shard-pod.md).

A capture task's Service selects the pods that carry it, so its endpoints are the capture
primaries and not their standbys, which are Ready too (they tail the recovery log, and a
roll and the PodDisruptionBudget count on that) but accept no posts.

The label follows the replica's state from a thread of its own, so a slow or failing API
server never holds up a takeover: a failed patch is tried again with back-off. A replica
removes the label when it starts, so a container restarted in the same pod (a primary
that lost its Lease, say) never keeps the label of its last life. A pod that does not
exist (the runtime run by hand) is left alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from shardkeeper.api.shard import PRIMARY_ROLE, ROLE_LABEL
from shardkeeper.kube.client import ApiError, Transport, request
from shardkeeper.kube.paths import resource_path

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
RETRY_MIN = 0.5
RETRY_MAX = 15.0


def role_patch(primary: bool) -> dict[str, Any]:
    """The merge patch that sets (or, with null, removes) the role label."""
    return {"metadata": {"labels": {ROLE_LABEL: PRIMARY_ROLE if primary else None}}}


def pod_patcher(
    transport: Transport, namespace: str, pod: str, *, timeout: float
) -> Callable[[dict[str, Any]], None]:
    path = resource_path("v1", "pods", namespace, pod)

    def patch(body: dict[str, Any]) -> None:
        request(transport, "PATCH", path, body=body, content_type=MERGE_PATCH, timeout=timeout)

    return patch


class RoleLabel:
    """Keeps the pod's role label as the last :meth:`set` said."""

    def __init__(self, patch: Callable[[dict[str, Any]], None]) -> None:
        self._patch = patch
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._desired = False
        self._applied: bool | None = None  # unknown until the first patch: remove it then
        self._gone = False  # the pod does not exist
        self._thread: threading.Thread | None = None

    def set(self, primary: bool) -> None:
        with self._lock:
            self._desired = primary
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pod role", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then make one last attempt from the caller's."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.sync()

    def sync(self) -> bool:
        """Patch the label if it differs from what was last applied; False if that failed."""
        with self._lock:
            wanted = self._desired
        if self._gone or wanted == self._applied:
            return True
        try:
            self._patch(role_patch(wanted))
        except ApiError as exc:
            if exc.status == 404:
                log.info("no pod to label (%s): the runtime is not run by a pod", exc.message)
                self._gone = True
                return True
            log.warning("could not set the pod's role label: %s", exc)
            return False
        except Exception as exc:
            log.warning("could not set the pod's role label: %s", exc)
            return False
        self._applied = wanted
        return True

    def _run(self) -> None:
        delay = RETRY_MIN
        while not self._stop.is_set():
            self._wake.clear()
            if self.sync():
                delay = RETRY_MIN
                self._wake.wait()
            else:
                self._wake.wait(delay)
                delay = min(RETRY_MAX, delay * 2)
