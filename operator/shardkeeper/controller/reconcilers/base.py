"""What every reconciler shares: its dependencies, status writes and finalizer edits.

A reconcile reads the cache, decides with the pure modules, and writes only what differs
from what it read. Status is server-side-applied with the operator's field manager and
only the operator's fields, so the runtime's fields on a Shard are never touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shardkeeper.api.meta import Condition, Resource
from shardkeeper.controller.engine import events
from shardkeeper.controller.engine.cache import Cache
from shardkeeper.controller.engine.kube import ApiError, AsyncKube
from shardkeeper.controller.engine.queue import Backoff, WorkQueue
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.names import FINALIZER
from shardkeeper.controller.specs.objects import Object, namespaced_name
from shardkeeper.controller.specs.refusals import Refusal, is_refusal
from shardkeeper.controller.specs.retention import RETENTION_EVERY
from shardkeeper.controller.specs.splits import SplitSettings
from shardkeeper.controller.specs.workload import WorkloadDefaults
from shardkeeper.redact import redact_all


@dataclasses.dataclass
class Deps:
    cache: Cache
    kube: AsyncKube
    recorder: events.Recorder
    queue: WorkQueue
    defaults: WorkloadDefaults
    splits: SplitSettings = dataclasses.field(default_factory=SplitSettings)
    # how often a Collection's spec.retention is applied (--retention-every)
    retention_every: timedelta = RETENTION_EVERY


class Reconciler(Protocol):
    kind: str

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one object closer to what it should be; seconds until it should be looked
        at again even if nothing changes (None: only when something changes)."""
        ...


def _dump(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


class RecentWrites:
    """What this operator last wrote to each object, until its cache shows a newer version.

    A write's own watch event arrives a moment later; a reconcile in between would see
    the object as it was and write the same thing again. Only an optimisation: after a
    restart the cache is fresh, and a repeated write would change nothing. A record is
    kept for ``HOLD_SECONDS`` at most, so that a cache which never moves on (an object
    created and deleted again before a reconcile looked) only delays the next write.
    """

    HOLD_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (uid, what) -> (the version written over, what was written, until when)
        self._last: dict[tuple[str, str], tuple[str | None, Any, float]] = {}

    def current(self, obj: Resource, what: str, observed: Any) -> Any:
        """``observed``, unless this operator wrote over exactly that version of ``obj``."""
        return self.current_at(
            obj.metadata.uid or "", what, obj.metadata.resource_version, observed
        )

    def wrote(self, obj: Resource, what: str, value: Any) -> None:
        self.wrote_at(obj.metadata.uid or "", what, obj.metadata.resource_version, value)

    def current_at(self, uid: str, what: str, version: str | None, observed: Any) -> Any:
        """``observed``, unless this operator wrote ``what`` of ``uid`` over ``version`` (the
        version its cache shows; None when it shows no object) within the hold."""
        key = (uid, what)
        last = self._last.get(key)
        if last is not None and last[0] == version and self._clock() < last[2]:
            return last[1]
        self._last.pop(key, None)
        return observed

    def wrote_at(self, uid: str, what: str, version: str | None, value: Any) -> None:
        self._last[(uid, what)] = (version, value, self._clock() + self.HOLD_SECONDS)

    def held_for(self, uid: str, what: str) -> float | None:
        """Seconds until the record of ``what`` of ``uid`` lapses, if there is one."""
        last = self._last.get((uid, what))
        return max(0.0, last[2] - self._clock()) if last is not None else None

    def forget(self, uid: str | None) -> None:
        for key in [k for k in self._last if k[0] == uid]:
            del self._last[key]


# A refused object is sent again after this back-off (per owner and object set), at once
# when what would be sent changes: only a changed cluster rule could need the retry.
REFUSAL_BACKOFF = Backoff(base=2.0, cap=300.0)
log = logging.getLogger(__name__)


class RefusedApplies:
    """The last refusal of what was applied for each owner, and when to try it again.

    Keyed by (owner uid, what) and kept with the hash of what was refused: a different
    hash (the spec changed) is applied at once, the same one only after a bounded
    exponential back-off, so a refused object costs no request per watch event.
    """

    def __init__(
        self, backoff: Backoff = REFUSAL_BACKOFF, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._backoff = backoff
        self._clock = clock
        # (uid, what) -> (hash refused, refusals of it in a row, retry when, the refusal)
        self._last: dict[tuple[str, str], tuple[str, int, float, Refusal]] = {}

    def standing(self, uid: str, what: str, digest: str) -> tuple[Refusal, float] | None:
        """The refusal of ``digest`` and the seconds left before it may be tried again, if
        it was the last thing refused and that time has not come."""
        last = self._last.get((uid, what))
        if last is None or last[0] != digest:
            return None
        left = last[2] - self._clock()
        return (last[3], left) if left > 0 else None

    def refused(self, uid: str, what: str, digest: str, refusal: Refusal) -> float:
        """Record a refusal of ``digest``; seconds until it should be tried again."""
        last = self._last.get((uid, what))
        count = last[1] + 1 if last is not None and last[0] == digest else 1
        delay = self._backoff.delay(count)
        self._last[(uid, what)] = (digest, count, self._clock() + delay, refusal)
        return delay

    def accepted(self, uid: str, what: str) -> None:
        self._last.pop((uid, what), None)

    def forget(self, uid: str | None) -> None:
        for key in [k for k in self._last if k[0] == uid]:
            del self._last[key]


class Base:
    kind = ""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.recent = RecentWrites()
        self.refusals = RefusedApplies()
        # (uid, condition type) -> its news (cond.news) last announced
        self._announced: dict[tuple[str, str], tuple[str, str, str]] = {}

    async def write_status(
        self,
        obj: Resource,
        verdicts: Sequence[cond.ConditionValue],
        fields: Mapping[str, Any],
    ) -> bool:
        """Apply conditions, observedGeneration and ``fields`` (every other status field the
        operator owns, None for unset) to the status if any differs from what the object
        has, and post Events for the conditions that moved. Whether a write was made."""
        status_model = obj.status  # type: ignore[attr-defined]
        observed = status_model.model_dump(mode="json", by_alias=True, exclude_none=True)
        current = self.recent.current(obj, "status", observed)
        current = {k: v for k, v in current.items() if v not in ({}, [])}
        previous = [Condition.model_validate(c) for c in current.get("conditions", [])]
        generation = obj.metadata.generation
        merged = cond.merge(previous, verdicts, generation=generation, now=datetime.now(UTC))
        # None and empty values are left out, which removes them if they were set: an
        # applied empty map whose keys are all removed would be stored as null
        wanted = {"observedGeneration": generation, "conditions": _dump(merged), **fields}
        wanted = redact_all({k: v for k, v in wanted.items() if v not in (None, {}, [])})
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
            # the operator's fields as written: one left out of ``wanted`` was removed
            kept = {k: v for k, v in observed.items() if k not in fields}
            self.recent.wrote(obj, "status", {**kept, **wanted})
        await self.announce(obj, cond.changes(previous, verdicts))
        return written

    async def announce(self, obj: Resource, changes: Sequence[cond.Change]) -> None:
        uid = obj.metadata.uid or ""
        fresh = []
        for change in changes:
            state = cond.news(change.verdict)
            if self._announced.get((uid, change.verdict.type)) != state:
                self._announced[(uid, change.verdict.type)] = state
                fresh.append(change)
        await self.deps.recorder.post_all(obj, events.for_changes(fresh))

    def forget(self, uid: str | None) -> None:
        self.recent.forget(uid)
        self.refusals.forget(uid)
        for key in [k for k in self._announced if k[0] == uid]:
            del self._announced[key]

    async def apply_all(self, owner: Resource, objects: Sequence[Object]) -> Refusal | None:
        """Apply ``objects`` at once; the first refusal among them (see refusals.py), if
        any. Every other error is raised, after every apply has ended."""
        results = await asyncio.gather(
            *(self.deps.kube.apply(obj) for obj in objects), return_exceptions=True
        )
        first: Refusal | None = None
        for obj, result in zip(objects, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if not (isinstance(result, ApiError) and is_refusal(result.status, result.message)):
                raise result
            refusal = Refusal(obj["kind"], obj["metadata"]["name"], result.status, result.message)
            log.warning("%s %s: %s", owner.kind, namespaced_name(owner)[1], refusal.text)
            first = first or refusal
        return first

    async def set_finalizer(self, obj: Resource, present: bool) -> bool:
        """Add or remove the operator's finalizer and no other; whether this call did.

        A JSON patch that first tests the list it read: a concurrent change makes it fail
        (and the reconcile retry) instead of overwriting another finalizer, and a patch,
        unlike an apply, never re-creates an object that is already gone.
        """
        current = list(self.recent.current(obj, "finalizers", obj.metadata.finalizers))
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
        self.recent.wrote(obj, "finalizers", wanted)
        return True
