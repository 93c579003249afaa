"""A split, carried out for its parent Shard: the one write that ``next_split_step`` asks
for in each pass (docs/splits.md).

A step is written as ``status.split`` by the Shard's own status write (server-side apply
of the operator's fields), so :meth:`Splits.advance` only says what that write carries.
Spec changes are JSON patches that first test the ``metadata.generation`` they were decided
from (a status write does not move it; a spec change does): a concurrent change makes
the patch fail, and the pass is retried from what the cache then shows. A write that the
cache does not show yet is remembered, so a pass in between does not repeat it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shardkeeper.api.meta import Condition, find_condition, format_range_bound
from shardkeeper.api.shard import Shard, SplitProgress, SplitStep, SplitStepRecord
from shardkeeper.api.task import SplitBy, Task
from shardkeeper.controller.engine import events, metrics
from shardkeeper.controller.engine.kube import ApiError
from shardkeeper.controller.reconcilers.base import Deps, RecentWrites
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.conditions import ConditionValue
from shardkeeper.controller.specs.objects import namespaced_name
from shardkeeper.controller.specs.shards import shard_manifest
from shardkeeper.controller.specs.splits import (
    SPLIT_ACCEPTED,
    STEP_EVENTS,
    WITHDRAWN,
    Action,
    ClearRequest,
    ClearSource,
    CreateChild,
    DeleteChild,
    Idle,
    Narrow,
    Refuse,
    SetTargets,
    Wait,
    WriteProgress,
    accepted,
    next_split_step,
    refused,
    step_message,
    withdrawn,
)

log = logging.getLogger(__name__)

# a patch refused because the spec moved: looked at again after this, if no event came
RETRY_SECONDS = 2.0
SPLIT = "split"  # what RecentWrites keeps of the last spec write of a split


@dataclasses.dataclass(frozen=True)
class SplitPass:
    """What one pass of a Shard's reconcile does for its split."""

    progress: SplitProgress | None
    """status.split as the Shard's status write should carry it."""
    verdicts: tuple[ConditionValue, ...] = ()
    entered: SplitStep | None = None
    """The step that this pass's status write enters, if any."""
    left: SplitStepRecord | None = None
    """The step it leaves, with the time it was entered."""
    requeue: float | None = None


def with_split(shard: Shard, progress: SplitProgress | None) -> Shard:
    """``shard`` as it is once ``progress`` is its status.split."""
    return shard.model_copy(update={"status": shard.status.model_copy(update={"split": progress})})


def dump_progress(progress: SplitProgress | None) -> dict[str, Any] | None:
    if progress is None:
        return None
    return progress.model_dump(mode="json", by_alias=True, exclude_none=True)


async def patch_shard(deps: Deps, shard: Shard, ops: list[dict[str, Any]]) -> bool:
    """Patch ``shard``'s spec if its generation is still the one read; False if it moved on
    (or the Shard is gone)."""
    namespace, name = namespaced_name(shard)
    guard = {"op": "test", "path": "/metadata/generation", "value": shard.metadata.generation}
    try:
        await deps.kube.json_patch(shard.api_version, shard.KIND, namespace, name, [guard, *ops])
    except ApiError as err:
        if err.status in (404, 422):
            log.debug("Shard %s/%s moved on before a split write: %s", namespace, name, err)
            return False
        raise
    return True


async def request_split(deps: Deps, shard: Shard, by: SplitBy) -> bool:
    """Set ``shard``'s spec.split, as a person would; False if its spec moved on."""
    return await patch_shard(
        deps, shard, [{"op": "add", "path": "/spec/split", "value": {"by": str(by)}}]
    )


class Splits:
    """The split side of a Shard's reconcile, for the shard as a parent."""

    def __init__(
        self,
        deps: Deps,
        recent: RecentWrites,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.deps = deps
        self.recent = recent
        self.clock = clock
        # the last step change announced per Shard uid: a pass whose cache still shows the
        # step before (another writer's event arrived first) writes the same change again
        self._announced: dict[str, tuple[SplitStep, SplitStepRecord | None, datetime | None]] = {}

    def view(self, shard: Shard) -> SplitProgress | None:
        """status.split as this operator last wrote it, if the cache does not show that yet."""
        observed = shard.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        raw = self.recent.current(shard, "status", observed).get("split")
        return SplitProgress.model_validate(raw) if raw else None

    async def advance(self, shard: Shard, task: Task) -> SplitPass:
        cache = self.deps.cache
        namespace, name = namespaced_name(shard)
        current = self.view(shard)
        seen = with_split(shard, current)
        shards = [
            seen if s.metadata.name == name else s
            for s in cache.shards_of(namespace, task.metadata.name or "")
        ]
        child_name = current.children[0] if current is not None and current.children else None
        child = cache.shard(namespace, child_name) if child_name else None
        action = next_split_step(
            seen, child, task, shards, now=self.clock(), settings=self.deps.splits
        )
        if isinstance(action, Idle):
            return SplitPass(current, self._withdrawn(shard.status.conditions))
        if isinstance(action, Refuse):
            return SplitPass(current, (refused(action.refusal),))
        if isinstance(action, Wait):
            return SplitPass(current, requeue=action.seconds)
        if isinstance(action, WriteProgress):
            return self._progress(current, action.progress)
        uid = shard.metadata.uid or ""
        versions = (
            f"{shard.metadata.resource_version}|{child.metadata.resource_version if child else ''}"
        )
        if self.recent.current_at(uid, SPLIT, versions, None) == action:
            return SplitPass(current, requeue=self.recent.held_for(uid, SPLIT))
        if not await self._apply(seen, child, action):
            return SplitPass(current, requeue=RETRY_SECONDS)
        self.recent.wrote_at(uid, SPLIT, versions, action)
        return SplitPass(current)

    @staticmethod
    def _withdrawn(conditions: list[Condition]) -> tuple[ConditionValue, ...]:
        found = find_condition(conditions, SPLIT_ACCEPTED)
        if found is None or found.status == cond.TRUE or found.reason == WITHDRAWN:
            return ()
        return (withdrawn(),)

    @staticmethod
    def _progress(current: SplitProgress | None, wanted: SplitProgress) -> SplitPass:
        verdicts = (accepted(wanted),) if wanted.step == SplitStep.PLAN else ()
        moved = current is None or current.step != wanted.step or wanted.step == SplitStep.PLAN
        if not moved:
            return SplitPass(wanted, verdicts)
        left = current.steps[-1] if current is not None and current.steps else None
        if wanted.step == SplitStep.PLAN:
            left = None  # a new split: the old one's last step ended it
        return SplitPass(wanted, verdicts, entered=wanted.step, left=left)

    async def _apply(self, parent: Shard, child: Shard | None, action: Action) -> bool:
        """Make the write; False if it was refused because what it read moved on."""
        namespace = namespaced_name(parent)[0]
        if isinstance(action, CreateChild):
            try:
                await self.deps.kube.create(shard_manifest(action.child))
            except ApiError as err:
                if err.status != 409:
                    raise
            return True
        if isinstance(action, SetTargets):
            ops = [{"op": "add", "path": "/spec/splitTargets", "value": list(action.targets)}]
            return await patch_shard(self.deps, parent, ops)
        if isinstance(action, Narrow):
            path = f"/spec/{action.field}"
            ops = [
                {"op": "test", "path": path, "value": format_range_bound(action.before)},
                {"op": "replace", "path": path, "value": format_range_bound(action.value)},
            ]
            return await patch_shard(self.deps, parent, ops)
        if isinstance(action, ClearSource):
            assert child is not None
            ops = [
                {"op": "test", "path": "/spec/splitSource", "value": action.source},
                {"op": "remove", "path": "/spec/splitSource"},
            ]
            return await patch_shard(self.deps, child, ops)
        if isinstance(action, ClearRequest):
            ops = []
            if action.targets:
                ops.append({"op": "remove", "path": "/spec/splitTargets"})
            if action.split:
                ops.append({"op": "remove", "path": "/spec/split"})
            return await patch_shard(self.deps, parent, ops)
        if isinstance(action, DeleteChild):
            # foreground: the child goes only after its StatefulSet and pods, so a later
            # split that picks the same name never meets them
            await self.deps.kube.delete(
                parent.api_version,
                parent.KIND,
                namespace,
                action.name,
                uid=action.uid,
                propagation="Foreground",
            )
            return True
        raise AssertionError(f"not a write: {action}")

    async def announce(self, shard: Shard, done: SplitPass) -> None:
        """The Event and metrics of a step that a status write entered."""
        progress, step = done.progress, done.entered
        if progress is None or step is None:
            return
        namespace, name = namespaced_name(shard)
        change = (step, done.left, progress.started_at)
        uid = shard.metadata.uid or ""
        if self._announced.get(uid) == change:
            return
        self._announced[uid] = change
        now = self.clock()
        if done.left is not None:
            # from the record in status.split, so a restarted operator measures it too
            seconds = max(0.0, (now - done.left.at).total_seconds())
            metrics.SPLIT_STEP_SECONDS.labels(step=str(done.left.step)).observe(seconds)
            if done.left.step == SplitStep.HAND_OFF and step == SplitStep.FINISH:
                metrics.SPLIT_HANDOFF_SECONDS.labels(
                    namespace=namespace, task=shard.spec.task
                ).observe(seconds)
        counter = {
            SplitStep.PLAN: metrics.SPLITS_STARTED,
            SplitStep.DONE: metrics.SPLITS_FINISHED,
            SplitStep.ABORT: metrics.SPLITS_ABORTED,
        }.get(step)
        if counter is not None:
            counter.labels(namespace=namespace, task=shard.spec.task).inc()
        reason = STEP_EVENTS.get(step)
        if reason is None:
            return
        cancelled = progress.message.startswith("spec.split was removed")
        kind = events.WARNING if step == SplitStep.ABORT and not cancelled else events.NORMAL
        await self.deps.recorder.post(
            shard, events.Notice(kind, reason, step_message(progress, name))
        )
