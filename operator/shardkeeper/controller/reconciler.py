"""What every reconciler shares: its dependencies, status writes and finalizer edits.

A reconcile reads the cache, decides with the pure modules, and writes only what differs
from what it read. Status is server-side-applied with the operator's field manager and
only the operator's fields, so the runtime's fields on a Shard are never touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from shardkeeper.api.meta import Condition, Resource
from shardkeeper.controller import conditions as cond
from shardkeeper.controller import events
from shardkeeper.controller.cache import Cache
from shardkeeper.controller.kube import ApiError, AsyncKube
from shardkeeper.controller.names import FINALIZER
from shardkeeper.controller.objects import namespaced_name
from shardkeeper.controller.queue import Key, WorkQueue
from shardkeeper.controller.workload import WorkloadDefaults


@dataclasses.dataclass
class Deps:
    cache: Cache
    kube: AsyncKube
    recorder: events.Recorder
    queue: WorkQueue
    defaults: WorkloadDefaults


class Reconciler(Protocol):
    kind: str

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one object closer to what it should be; seconds until it should be looked
        at again even if nothing changes (None: only when something changes)."""
        ...


def _dump(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


class Base:
    kind = ""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # (uid, condition type) -> (status, reason) last announced: the cache may still
        # show the old status when the same object is reconciled again right away
        self._announced: dict[tuple[str, str], tuple[str, str]] = {}

    def enqueue(self, kind: str, namespace: str, name: str) -> None:
        self.deps.queue.add(Key(kind, namespace, name))

    async def write_status(
        self,
        obj: Resource,
        verdicts: Sequence[cond.Verdict],
        fields: Mapping[str, Any],
    ) -> bool:
        """Apply conditions, observedGeneration and ``fields`` (every other status field the
        operator owns, None for unset) to the status if any differs from what the object
        has, and post Events for the conditions that moved. Whether a write was made."""
        status_model = obj.status  # type: ignore[attr-defined]
        previous: list[Condition] = list(status_model.conditions)
        generation = obj.metadata.generation
        merged = cond.merge(previous, verdicts, generation=generation, now=datetime.now(UTC))
        # None and empty values are left out, which removes them if they were set: an
        # applied empty map whose keys are all removed would be stored as null
        wanted = {"observedGeneration": generation, "conditions": _dump(merged), **fields}
        wanted = {k: v for k, v in wanted.items() if v not in (None, {}, [])}
        current = status_model.model_dump(mode="json", by_alias=True, exclude_none=True)
        current["conditions"] = _dump(previous)
        current = {k: v for k, v in current.items() if v not in ({}, [])}
        written = any(current.get(k) != wanted.get(k) for k in {*fields, *wanted})
        if written:
            namespace, name = namespaced_name(obj)
            try:
                await self.deps.kube.apply(
                    {
                        "apiVersion": obj.api_version,
                        "kind": obj.kind,
                        "metadata": {"name": name, "namespace": namespace},
                        "status": wanted,
                    },
                    subresource="status",
                )
            except ApiError as err:
                if err.status == 404:  # deleted since the cache saw it: nothing to say
                    return False
                raise
        await self.announce(obj, cond.changes(previous, verdicts))
        return written

    async def announce(self, obj: Resource, changes: Sequence[cond.Change]) -> None:
        uid = obj.metadata.uid or ""
        fresh = []
        for change in changes:
            state = (str(change.verdict.status), change.verdict.reason)
            if self._announced.get((uid, change.verdict.type)) != state:
                self._announced[(uid, change.verdict.type)] = state
                fresh.append(change)
        await self.deps.recorder.post_all(obj, events.for_changes(fresh))

    def forget(self, uid: str | None) -> None:
        for key in [k for k in self._announced if k[0] == uid]:
            del self._announced[key]

    async def set_finalizer(self, obj: Resource, present: bool) -> bool:
        """Add or remove the operator's finalizer and no other; whether this call did.

        A JSON patch that first tests the list it read: a concurrent change makes it fail
        (and the reconcile retry) instead of overwriting another finalizer, and a patch,
        unlike an apply, never re-creates an object that is already gone.
        """
        current = list(obj.metadata.finalizers)
        if (FINALIZER in current) == present:
            return False
        wanted = [*current, FINALIZER] if present else [f for f in current if f != FINALIZER]
        namespace, name = namespaced_name(obj)
        ops: list[dict[str, Any]] = (
            [{"op": "test", "path": "/metadata/finalizers", "value": current}]
            if current
            else [{"op": "test", "path": "/metadata/uid", "value": obj.metadata.uid}]
        )
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": wanted})
        try:
            await self.deps.kube.json_patch(obj.api_version, obj.kind, namespace, name, ops)
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True
