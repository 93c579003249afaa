"""Reporting a replica's state into its Shard's status, by server-side apply.

Each writer applies only the fields it owns, under its own field manager (see
docs/shard-pod.md), so a replica never overwrites another replica's entry nor the
operator's phase and conditions:

- ``status.replicas[pod=<pod>]`` under ``shardkeeper-replica-<pod>``;
- ``status.primary``, ``epoch``, ``checkpoint``, ``recoveryLogHead``, ``lag`` and
  ``lastPrune`` under
  ``shardkeeper-primary``, forced, so a new primary takes them over from the old one.
  Forcing alone would let a paused old primary that wakes up write its stale fields back
  over its successor's, so the primary's apply is fenced like its commits: it goes out
  only while the status holds no newer epoch, as a compare-and-apply on the Shard's
  resourceVersion (see ``fenced_apply``).

Applies go out from one thread. A change people care about (state, epoch, message,
primary, the first commit) goes out at once; counters that move with every transaction
(last commit, lag, heads, checkpoint) at most every ``min_interval`` seconds
(``SHARDKEEPER_STATUS_INTERVAL``, 10 by default), so a busy shard with one standby costs
the API server about four requests per interval (the primary's fenced apply is a read
and a write), not four per second. Metrics carry the same counters at full rate.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.shard import Checkpoint, RecoveryLogPrune, ReplicaStatus, Shard
from shardkeeper.kube.client import ApiError, Transport, request
from shardkeeper.kube.paths import resource_path
from shardkeeper.runtime.shell.settings import DEFAULT_STATUS_INTERVAL

log = logging.getLogger(__name__)

REPLICA_MANAGER_PREFIX = "shardkeeper-replica-"
PRIMARY_MANAGER = "shardkeeper-primary"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MESSAGE_LIMIT = 4096  # ReplicaStatus.message's maxLength in the CRD


def replica_manager(pod: str) -> str:
    return REPLICA_MANAGER_PREFIX + pod


# --- pure: what to apply ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PrimaryStatus:
    """The fields of a Shard's status that its primary owns."""

    pod: str | None  # None once it handed over: the field is dropped from the status
    epoch: int
    checkpoint: Checkpoint | None = None
    recovery_log_head: int | None = None
    lag: int | None = None
    last_prune: RecoveryLogPrune | None = None


def _shard_object(namespace: str, shard: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": Shard.KIND,
        "metadata": {"name": shard, "namespace": namespace},
        "status": status,
    }


def clip_message(message: str) -> str:
    """A message that fits ReplicaStatus.message (the model refuses a longer one)."""
    if len(message) <= MESSAGE_LIMIT:
        return message
    return message[: MESSAGE_LIMIT - 3] + "..."


def replica_apply(namespace: str, shard: str, replica: ReplicaStatus) -> dict[str, Any]:
    """The apply configuration of one replica's own entry of ``status.replicas``."""
    entry = replica.model_dump(mode="json", exclude_none=True)
    return _shard_object(namespace, shard, {"replicas": [entry]})


def primary_apply(namespace: str, shard: str, primary: PrimaryStatus) -> dict[str, Any]:
    """The apply configuration of the primary's fields; a field left out is given up."""
    status: dict[str, Any] = {"epoch": primary.epoch}
    if primary.pod is not None:
        status["primary"] = primary.pod
    if primary.checkpoint is not None:
        status["checkpoint"] = primary.checkpoint.model_dump(mode="json", exclude_none=True)
    if primary.recovery_log_head is not None:
        status["recoveryLogHead"] = primary.recovery_log_head
    if primary.lag is not None:
        status["lag"] = primary.lag
    if primary.last_prune is not None:
        status["lastPrune"] = primary.last_prune.model_dump(mode="json", exclude_none=True)
    return _shard_object(namespace, shard, status)


class Superseded(Exception):
    """The status holds a newer primary's epoch: this replica's primary fields are stale."""


def superseded(status: dict[str, Any] | None, epoch: int) -> bool:
    return int((status or {}).get("epoch") or 0) > epoch


def fenced_apply(
    read: Callable[[], dict[str, Any]],
    apply: Callable[[dict[str, Any]], None],
    body: dict[str, Any],
    *,
    attempts: int = 5,
) -> None:
    """Apply the primary's fields unless a newer epoch is in the status.

    The body carries the resourceVersion it was checked against, so the API server refuses
    it (409) if anything changed in between, a successor's takeover included; then it is
    checked again. Other writers (replica entries, the operator) also move the version, so a
    busy Shard may take a few rounds; after ``attempts`` the conflict is raised and the
    reporter retries later.
    """
    epoch = int(body["status"]["epoch"])
    for attempt in range(attempts):
        current = read()
        if superseded(current.get("status"), epoch):
            raise Superseded(
                f"the status holds epoch {current['status']['epoch']}, newer than {epoch}"
            )
        version = current["metadata"]["resourceVersion"]
        guarded = {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
        try:
            apply(guarded)
            return
        except ApiError as exc:
            if exc.status != 409 or attempt == attempts - 1:
                raise


def is_urgent(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether the change from ``before`` to ``after`` is one a person or the operator is
    waiting for (a new state, epoch, message or primary, a replica's or primary's first
    commit, or a prune of the recovery log: at most one per pruneEvery), as opposed to
    progress."""
    if before is None:
        return True

    def key(body: dict[str, Any]) -> tuple[Any, ...]:
        status = body["status"]
        replicas = status.get("replicas") or [{}]
        entry = replicas[0]
        return (
            entry.get("state"),
            entry.get("epoch"),
            entry.get("message"),
            # a commit's time is there once this replica, as primary, has committed
            "time" in (entry.get("lastCommit") or {}),
            status.get("primary"),
            status.get("epoch"),
            "committedAt" in (status.get("checkpoint") or {}),
            (status.get("lastPrune") or {}).get("at"),
        )

    return key(before) != key(after)


def is_due(
    desired: dict[str, Any] | None,
    applied: dict[str, Any] | None,
    applied_at: float,
    now: float,
    min_interval: float,
) -> bool:
    if desired is None or desired == applied:
        return False
    return is_urgent(applied, desired) or now - applied_at >= min_interval


# --- I/O ------------------------------------------------------------------------------------


class ShardStatusApi:
    """Server-side apply on the Shard's status subresource."""

    def __init__(self, transport: Transport, namespace: str, shard: str, *, timeout: float) -> None:
        self.transport = transport
        self.namespace = namespace
        self.shard = shard
        self.timeout = timeout
        self.path = resource_path(API_VERSION, Shard.PLURAL, namespace, shard, "status")

    def apply(self, field_manager: str, body: dict[str, Any]) -> None:
        if field_manager == PRIMARY_MANAGER:
            fenced_apply(self._read, lambda guarded: self._apply(field_manager, guarded), body)
        else:
            self._apply(field_manager, body)

    def _read(self) -> dict[str, Any]:
        shard: dict[str, Any] = request(self.transport, "GET", self.path, timeout=self.timeout)
        return shard

    def _apply(self, field_manager: str, body: dict[str, Any]) -> None:
        request(
            self.transport,
            "PATCH",
            self.path,
            query={"fieldManager": field_manager, "force": True},
            body=body,
            content_type=APPLY_CONTENT_TYPE,
            timeout=self.timeout,
        )


@dataclasses.dataclass
class _Channel:
    field_manager: str
    desired: dict[str, Any] | None = None
    applied: dict[str, Any] | None = None
    applied_at: float = 0.0
    failed_at: float | None = None


class StatusReporter:
    """Applies the latest replica and primary status from a thread of its own."""

    def __init__(
        self,
        apply: Callable[[str, dict[str, Any]], None],
        namespace: str,
        shard: str,
        pod: str,
        *,
        min_interval: float = DEFAULT_STATUS_INTERVAL,
        retry_after: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apply = apply
        self.namespace = namespace
        self.shard = shard
        self.pod = pod
        self.min_interval = min_interval
        self.retry_after = retry_after
        self._monotonic = monotonic
        self._replica = _Channel(replica_manager(pod))
        self._primary = _Channel(PRIMARY_MANAGER)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: str | None = None

    def replica(self, status: ReplicaStatus) -> None:
        self._set(self._replica, replica_apply(self.namespace, self.shard, status))

    def primary(self, status: PrimaryStatus) -> None:
        self._set(self._primary, primary_apply(self.namespace, self.shard, status))

    def _set(self, channel: _Channel, body: dict[str, Any]) -> None:
        with self._lock:
            channel.desired = body
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def flush(self) -> bool:
        """Apply whatever is pending now, from the calling thread (the reporter thread must
        be stopped). True if nothing is left unapplied."""
        ok = True
        for channel in (self._primary, self._replica):
            with self._lock:
                body = channel.desired
            if body is not None and body != channel.applied:
                ok = self._send(channel, body) and ok
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self._pass()
            self._wake.wait(wait)

    def _pass(self) -> float:
        """Send what is due; return how long to wait before the next look."""
        wait = 5.0
        # the primary's fields first: a new primary's takeover is what people wait for
        for channel in (self._primary, self._replica):
            now = self._monotonic()
            with self._lock:
                body = channel.desired
            if channel.failed_at is not None and now - channel.failed_at < self.retry_after:
                wait = min(wait, self.retry_after - (now - channel.failed_at))
                continue
            if is_due(body, channel.applied, channel.applied_at, now, self.min_interval):
                assert body is not None
                self._send(channel, body)
            elif body is not None and body != channel.applied:
                wait = min(wait, self.min_interval - (now - channel.applied_at))
        return max(wait, 0.01)

    def _send(self, channel: _Channel, body: dict[str, Any]) -> bool:
        try:
            self._apply(channel.field_manager, body)
        except Superseded as exc:
            # a successor owns the primary's fields; there is nothing left to say in them
            log.info("primary status not applied: %s", exc)
            with self._lock:
                if channel.desired is body:
                    channel.desired = None
            channel.applied = None
            channel.failed_at = None
            return True
        except Exception as exc:
            channel.failed_at = self._monotonic()
            text = f"status apply as {channel.field_manager} failed: {_brief(exc)}"
            if text != self._warned:  # the same failure repeats every second: say it once
                log.warning(text)
                self._warned = text
            return False
        channel.applied = body
        channel.applied_at = self._monotonic()
        channel.failed_at = None
        self._warned = None
        return True


def _brief(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.reason}: {exc.message:.500}"
    return str(exc) or type(exc).__name__
