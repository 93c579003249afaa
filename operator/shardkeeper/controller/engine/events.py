"""Kubernetes Events for the transitions a person cares about.

Reconciles are level-based and may run many times for one state, so Events come from
*changes*: a condition that moved (see :func:`for_changes`), or an action the operator took
(a shard created, a pod replaced, data deleted). A restarted operator finds the status
already moved and posts nothing again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from shardkeeper.api.meta import (
    DEGRADED,
    PROGRESSING,
    READY,
    ConditionStatus,
    Resource,
    format_time,
)
from shardkeeper.controller.engine import metrics
from shardkeeper.controller.engine.kube import AsyncKube
from shardkeeper.controller.specs.conditions import Change
from shardkeeper.controller.specs.objects import namespaced_name
from shardkeeper.controller.specs.splits import SPLIT_ACCEPTED, WITHDRAWN
from shardkeeper.redact import redact

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"
COMPONENT = "shardkeeper-operator"
ASKED_FOR = frozenset({"Deleting", "Disabling"})


@dataclasses.dataclass(frozen=True)
class Notice:
    type: str
    reason: str
    message: str


def for_changes(changes: Sequence[Change]) -> list[Notice]:
    """The Events that condition changes deserve.

    Ready turning True (or False again after it was True), Degraded turning True (a
    warning) or False again, and the end of a Progressing spell. The first False of a new
    object is no news: its status says it.
    """
    out = []
    for change in changes:
        verdict, before = change.verdict, change.before
        true = verdict.status == ConditionStatus.TRUE
        if verdict.type == READY:
            if true:
                out.append(Notice(NORMAL, verdict.reason, verdict.message or "ready"))
            elif before is not None and before.status == ConditionStatus.TRUE:
                # stopping because someone asked for it is no warning
                kind = NORMAL if verdict.reason in ASKED_FOR else WARNING
                out.append(Notice(kind, verdict.reason, verdict.message or "not ready"))
        elif verdict.type == DEGRADED:
            if true:
                out.append(Notice(WARNING, verdict.reason, verdict.message))
            elif before is not None and before.status == ConditionStatus.TRUE:
                out.append(Notice(NORMAL, "Recovered", f"no longer degraded ({before.reason})"))
        elif verdict.type == SPLIT_ACCEPTED:
            if not true and verdict.reason != WITHDRAWN:
                out.append(Notice(WARNING, "SplitRefused", verdict.message))
        elif (
            verdict.type == PROGRESSING
            and not true
            and before is not None
            and (before.status, before.reason) == (ConditionStatus.TRUE, "RollingUpdate")
        ):
            out.append(Notice(NORMAL, "RollComplete", "every pod runs the current template"))
    return out


class Recorder:
    """Posts core/v1 Events about the operator's objects, in the background: a reconcile
    does not wait for its Events, and a failure to post one is logged, not raised (an
    Event is worth less than the reconcile that wanted to post it)."""

    def __init__(self, kube: AsyncKube, instance: str) -> None:
        self.kube = kube
        self.instance = instance
        self._pending: set[asyncio.Task[None]] = set()

    async def post(self, obj: Resource, notice: Notice) -> None:
        task = asyncio.create_task(self._post(obj, notice))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Wait for the Events still being posted (at shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5)

    async def _post(self, obj: Resource, notice: Notice) -> None:
        namespace, name = namespaced_name(obj)
        notice = dataclasses.replace(notice, message=redact(notice.message))
        now = format_time(datetime.now(UTC))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.api_version,
                "kind": obj.kind,
                "name": name,
                "namespace": namespace,
                "uid": obj.metadata.uid,
            },
            "type": notice.type,
            "reason": notice.reason,
            "message": notice.message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": f"shardkeeper.io/{COMPONENT}",
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        log.info("%s %s/%s: %s: %s", obj.kind, namespace, name, notice.reason, notice.message)
        metrics.EVENTS.labels(type=notice.type, reason=notice.reason).inc()
        try:
            await self.kube.create(event)
        except Exception as exc:
            log.warning("could not post Event %s for %s %s: %s", notice.reason, obj.kind, name, exc)

    async def post_all(self, obj: Resource, notices: Sequence[Notice]) -> None:
        for notice in notices:
            await self.post(obj, notice)
