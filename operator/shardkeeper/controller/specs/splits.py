"""The split state machine of docs/splits.md, as pure functions of what is observed.

:func:`next_split_step` looks at a parent Shard, its child (if any), its Task and the time,
and says the one write that moves the split on: a step recorded in the parent's
``status.split``, or a change of spec (the child created, the parent's ``splitTargets``,
its narrowed range, the split fields cleared, the child deleted). The reconciler makes
that write and waits for its watch event, so every decision starts from what the API
server holds, and an operator restarted at any point resumes at the step it finds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from shardkeeper.api.meta import Duration
from shardkeeper.api.shard import (
    SPLIT_ENDED,
    ReplicaState,
    Shard,
    ShardPhase,
    SplitProgress,
    SplitStep,
    SplitStepRecord,
)
from shardkeeper.api.task import SplitBy, Task, TaskType
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.conditions import ConditionValue
from shardkeeper.controller.specs.shards import new_shard
from shardkeeper.controller.specs.status import live_replicas, primary_replica
from shardkeeper.controller.specs.workload import replicas as wanted_replicas

CATCH_UP_LAG = 4 * 1024 * 1024
"""Bytes of the parent's log a child STANDBY may still lack when the hand-off starts."""
CATCH_UP_TIMEOUT = timedelta(minutes=10)
"""Default time from Plan to the hand-off after which a split is aborted."""
MAX_STEP_RECORDS = 16  # SplitProgress.steps holds at most this many
# before HandOff a split can be undone; from it on, it only rolls forward
ABORTABLE = frozenset({SplitStep.PLAN, SplitStep.CHILDREN, SplitStep.CATCH_UP})
ROLLS_FORWARD_NOTE = (
    "spec.split was removed after the hand-off began: a split only rolls forward from HandOff"
)


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """What the operator's flags decide for every split."""

    catch_up_timeout: timedelta = CATCH_UP_TIMEOUT
    catch_up_lag: int = CATCH_UP_LAG


# --- refusals ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a split cannot start: a condition reason and what to tell a person."""

    reason: str
    message: str

    def __str__(self) -> str:
        return self.message


def in_progress(shard: Shard) -> bool:
    return shard.status.split is not None and shard.status.split.step not in SPLIT_ENDED


def counted(shards: Sequence[Shard]) -> list[Shard]:
    """The shards that count against maxShards: all but the retired ones."""
    return [s for s in shards if s.status.phase != ShardPhase.RETIRED]


def pending_children(shards: Sequence[Shard]) -> int:
    """Children that splits under way have chosen but not created yet."""
    names = {s.metadata.name for s in shards}
    return sum(
        1
        for s in counted(shards)
        if s.status.split is not None and in_progress(s) and s.status.split.step != SplitStep.ABORT
        for child in s.status.split.children
        if child not in names
    )


def requested(shard: Shard) -> bool:
    """Asked to split (spec.split) and not splitting yet."""
    return shard.spec.split is not None and not in_progress(shard)


def single_value(shard: Shard, by: SplitBy) -> bool:
    spec = shard.spec
    if by == SplitBy.KEY:
        return spec.key_begin == spec.key_end
    return spec.r_clock_begin == spec.r_clock_end


def split_by_for(task: Task, by: SplitBy) -> SplitBy:
    """How a split that scaling asks for halves a shard of ``task``: as ``by`` says, except
    that a capture always splits by r-clock (see ``refusal``)."""
    return SplitBy.R_CLOCK if task.spec.type == TaskType.CAPTURE else by


def refusal(
    shard: Shard, task: Task, shards: Sequence[Shard], by: SplitBy | None = None
) -> Refusal | None:
    """Why a split of ``shard`` by ``by`` (default: what spec.split asks, else key) cannot
    start now, or None. ``shards`` are all of the task's shards.

    Shards asked to split whose names sort before this one's are counted as if planned, so
    two requests seen at once cannot both take the last place under maxShards.
    """
    by = by if by is not None else (shard.spec.split.by if shard.spec.split else SplitBy.KEY)
    name = shard.metadata.name or ""
    if in_progress(shard):
        assert shard.status.split is not None
        return Refusal(
            "AlreadySplitting", f"a split of this shard is at step {shard.status.split.step}"
        )
    if shard.spec.split_source is not None:
        return Refusal(
            "BeingBuilt",
            f"a split of {shard.spec.split_source} is still building this shard (splitSource)",
        )
    if shard.status.primary is None or shard.status.phase != ShardPhase.RUNNING:
        return Refusal(
            "NotReady",
            f"the shard is not ready: its phase is {shard.status.phase}"
            + ("" if shard.status.primary else " and it has no primary"),
        )
    if by == SplitBy.KEY and task.spec.type == TaskType.CAPTURE:
        # every capture primary accepts posts of any key, so a key range would claim keys
        # that the other half goes on writing; an r-clock half claims no particular key
        return Refusal(
            "CaptureSplitsByRClock",
            "a capture splits by r-clock only: each of its primaries accepts documents of "
            "every key, so a key range would not say which shard writes a key; ask for "
            "split: {by: rClock}",
        )
    if single_value(shard, by):
        spec = shard.spec
        begin = spec.key_begin if by == SplitBy.KEY else spec.r_clock_begin
        return Refusal(
            "SingleValue", f"its {by} range holds one value ({begin:08x}) and cannot be halved"
        )
    limit = task.spec.shards.scaling.effective_max_shards()
    ahead = sum(1 for s in shards if requested(s) and (s.metadata.name or "") < name)
    total = len(counted(shards)) + pending_children(shards) + ahead
    if total >= limit:
        planned = total - len(counted(shards))
        more = f" and {planned} more are planned or asked for first" if planned else ""
        return Refusal(
            "MaxShards",
            f"the task has {len(counted(shards))} shards{more}; maxShards is {limit}",
        )
    return None


# --- the child --------------------------------------------------------------------------------


def child_shard(parent: Shard, task: Task, by: SplitBy, pivot: int) -> Shard:
    """The upper half of ``parent``'s ``by`` range, ``[pivot, end]``, with its other range,
    built from the parent's recovery log (splitSource)."""
    spec = parent.spec
    keys, r_clocks = (spec.key_begin, spec.key_end), (spec.r_clock_begin, spec.r_clock_end)
    if by == SplitBy.KEY:
        keys = (pivot, spec.key_end)
    else:
        r_clocks = (pivot, spec.r_clock_end)
    return new_shard(task, keys, r_clocks, split_source=parent.metadata.name)


def narrowed_field(by: SplitBy) -> Literal["keyEnd", "rClockEnd"]:
    return "keyEnd" if by == SplitBy.KEY else "rClockEnd"


def range_end(shard: Shard, by: SplitBy) -> int:
    return shard.spec.key_end if by == SplitBy.KEY else shard.spec.r_clock_end


# --- actions ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Idle:
    """No split is asked for or running."""


@dataclasses.dataclass(frozen=True)
class Refuse:
    """A split is asked for and cannot start (it stays asked for)."""

    refusal: Refusal


@dataclasses.dataclass(frozen=True)
class WriteProgress:
    """Write ``progress`` as status.split: a new step, or a new message in the same one."""

    progress: SplitProgress

    @property
    def step(self) -> SplitStep:
        return self.progress.step


@dataclasses.dataclass(frozen=True)
class CreateChild:
    child: Shard


@dataclasses.dataclass(frozen=True)
class SetTargets:
    """The parent's spec.splitTargets becomes ``targets``."""

    targets: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Narrow:
    """The parent's ``field`` goes from ``before`` to ``value`` (``pivot - 1``)."""

    field: Literal["keyEnd", "rClockEnd"]
    before: int
    value: int


@dataclasses.dataclass(frozen=True)
class ClearSource:
    """Remove spec.splitSource (``source``) from the child ``child``."""

    child: str
    source: str


@dataclasses.dataclass(frozen=True)
class ClearRequest:
    """Remove the parent's spec.splitTargets and spec.split (those that are set)."""

    targets: bool
    split: bool


@dataclasses.dataclass(frozen=True)
class DeleteChild:
    name: str
    uid: str | None


@dataclasses.dataclass(frozen=True)
class Wait:
    """Nothing to write; look again after ``seconds`` (None: when something changes)."""

    seconds: float | None


Action = (
    Idle
    | Refuse
    | WriteProgress
    | CreateChild
    | SetTargets
    | Narrow
    | ClearSource
    | ClearRequest
    | DeleteChild
    | Wait
)


def enter(
    progress: SplitProgress, step: SplitStep, now: datetime, message: str = ""
) -> SplitProgress:
    """``progress`` at ``step``, entered ``now``; the history keeps the newest records."""
    steps = [*progress.steps, SplitStepRecord(step=step, at=now)][-MAX_STEP_RECORDS:]
    return progress.model_copy(update={"step": step, "steps": steps, "message": message})


def plan(parent: Shard, task: Task, by: SplitBy, now: datetime) -> SplitProgress:
    pivot = parent.spec.pivot(by)
    child = child_shard(parent, task, by, pivot)
    return SplitProgress(
        step=SplitStep.PLAN,
        by=by,
        pivot=pivot,
        children=[child.metadata.name or ""],
        started_at=now,
        steps=[SplitStepRecord(step=SplitStep.PLAN, at=now)],
        message=f"creating {child.metadata.name}",
    )


def tailing(child: Shard, task: Task) -> bool:
    """A replica of the child reads the parent's log: it reports its position in it."""
    return any(
        r.recovery_log_head is not None or r.state == ReplicaState.STANDBY
        for r in live_replicas(child, wanted_replicas(task))
    )


def caught_up(child: Shard, task: Task, lag: int) -> bool:
    return any(
        r.state == ReplicaState.STANDBY and r.lag is not None and r.lag <= lag
        for r in live_replicas(child, wanted_replicas(task))
    )


def took_over(child: Shard, task: Task) -> bool:
    """The child names a primary and that replica reports PRIMARY."""
    live = live_replicas(child, wanted_replicas(task))
    return child.status.primary is not None and primary_replica(child, live) is not None


def _abort_reason(
    parent: Shard, progress: SplitProgress, now: datetime, settings: SplitSettings
) -> str | None:
    if parent.spec.split is None:
        return "spec.split was removed before the hand-off: the split is cancelled"
    started = progress.started_at
    if started is not None and now - started >= settings.catch_up_timeout:
        limit = Duration(settings.catch_up_timeout // timedelta(microseconds=1) * 1000)
        return f"the child did not catch up within {limit} (the catch-up timeout); ask again"
    return None


def _until_timeout(progress: SplitProgress, now: datetime, settings: SplitSettings) -> float:
    started = progress.started_at or now
    left = (started + settings.catch_up_timeout - now).total_seconds()
    return max(1.0, left)


def _waiting(progress: SplitProgress, message: str, seconds: float | None) -> Action:
    """Wait, after saying why in status.split.message if it does not already."""
    if progress.message != message:
        return WriteProgress(progress.model_copy(update={"message": message}))
    return Wait(seconds)


def next_split_step(
    parent: Shard,
    child: Shard | None,
    task: Task,
    shards: Sequence[Shard],
    *,
    now: datetime,
    settings: SplitSettings = SplitSettings(),
) -> Action:
    """The one thing to do next for the split of ``parent`` (``child``: the Shard named in
    its status.split.children, if it exists; ``shards``: all of the task's shards)."""
    progress = parent.status.split
    request = parent.spec.split
    name = parent.metadata.name or ""
    if progress is None or progress.step in SPLIT_ENDED:
        if request is None:
            return Idle()
        refused = refusal(parent, task, shards, request.by)
        if refused is not None:
            return Refuse(refused)
        return WriteProgress(plan(parent, task, request.by, now))

    step = progress.step
    child_name = progress.children[0] if progress.children else ""
    ours = child is not None and child.spec.split_source == name
    if step in ABORTABLE:
        why = _abort_reason(parent, progress, now, settings)
        if (
            why is None
            and child is not None
            and not ours
            and child.metadata.deletion_timestamp is None
        ):
            why = f"a shard named {child_name} exists and is not being built from {name}"
        gone = child is None or child.metadata.deletion_timestamp is not None
        if why is None and gone and step != SplitStep.PLAN:
            why = f"the child {child_name} was deleted before the hand-off"
        if why is not None:
            return WriteProgress(enter(progress, SplitStep.ABORT, now, why))
    pivot = progress.pivot if progress.pivot is not None else parent.spec.pivot(progress.by)
    deadline = _until_timeout(progress, now, settings)

    if step == SplitStep.PLAN:
        if child is not None and child.metadata.deletion_timestamp is not None:
            return _waiting(
                progress, f"waiting for an earlier {child_name} to be deleted", deadline
            )
        if child is None:
            return CreateChild(child_shard(parent, task, progress.by, pivot))
        if list(parent.spec.split_targets) != [child_name]:
            return SetTargets((child_name,))
        return WriteProgress(
            enter(
                progress,
                SplitStep.CHILDREN,
                now,
                f"waiting for a replica of {child_name} to tail the recovery log of {name}",
            )
        )
    if step == SplitStep.CHILDREN:
        assert child is not None
        if tailing(child, task):
            return WriteProgress(
                enter(
                    progress,
                    SplitStep.CATCH_UP,
                    now,
                    f"waiting for a STANDBY of {child_name} within "
                    f"{settings.catch_up_lag} bytes of the recovery log of {name}",
                )
            )
        return Wait(deadline)
    if step == SplitStep.CATCH_UP:
        assert child is not None
        if caught_up(child, task, settings.catch_up_lag):
            return WriteProgress(
                enter(
                    progress,
                    SplitStep.HAND_OFF,
                    now,
                    f"narrowing {name} to below {pivot:08x}; waiting for {child_name} "
                    "to fork at the hand-off fence and become PRIMARY",
                )
            )
        return Wait(deadline)
    if step == SplitStep.ABORT:
        if ours and child is not None and child.metadata.deletion_timestamp is None:
            return DeleteChild(child_name, child.metadata.uid)
        if ours:
            return Wait(None)  # being deleted: its deletion event comes
        if parent.spec.split_targets or request is not None:
            return ClearRequest(bool(parent.spec.split_targets), request is not None)
        return WriteProgress(enter(progress, SplitStep.ABORTED, now, progress.message))
    narrowed = range_end(parent, progress.by) == pivot - 1
    if child is None:
        if not narrowed:
            return CreateChild(child_shard(parent, task, progress.by, pivot))
        # deleted by hand after the narrowing: the end of its range is no longer known here
        return _waiting(
            progress,
            f"the child {child_name} was deleted after the hand-off: no shard owns the range "
            f"from {pivot:08x}; re-create it as it was (with splitSource {name})",
            None,
        )
    if step == SplitStep.HAND_OFF:
        if not narrowed:
            return Narrow(narrowed_field(progress.by), range_end(parent, progress.by), pivot - 1)
        if took_over(child, task):
            return WriteProgress(
                enter(progress, SplitStep.FINISH, now, "clearing the split fields")
            )
        if request is None and ROLLS_FORWARD_NOTE not in progress.message:
            return WriteProgress(
                progress.model_copy(
                    update={"message": f"{progress.message}; {ROLLS_FORWARD_NOTE}".lstrip("; ")}
                )
            )
        return Wait(None)
    # SplitStep.FINISH
    if ours:
        return ClearSource(child_name, name)
    if parent.spec.split_targets or request is not None:
        return ClearRequest(bool(parent.spec.split_targets), request is not None)
    return WriteProgress(
        enter(progress, SplitStep.DONE, now, f"split at {pivot:08x} into {child_name}")
    )


# --- conditions and Events ----------------------------------------------------------------


SPLIT_ACCEPTED = "SplitAccepted"
WITHDRAWN = "Withdrawn"
STEP_EVENTS: dict[SplitStep, str] = {
    SplitStep.PLAN: "SplitPlanned",
    SplitStep.CHILDREN: "SplitChildrenCreated",
    SplitStep.CATCH_UP: "SplitCatchingUp",
    SplitStep.HAND_OFF: "SplitHandOff",
    SplitStep.DONE: "SplitFinished",
    SplitStep.ABORT: "SplitAborted",
}
"""The Event each step deserves when entered; Finish and Aborted follow at once and say
nothing new."""


def accepted(progress: SplitProgress) -> ConditionValue:
    pivot = f"{progress.pivot:08x}" if progress.pivot is not None else "?"
    return ConditionValue(
        SPLIT_ACCEPTED,
        cond.TRUE,
        "Accepted",
        f"split by {progress.by} at {pivot} into {', '.join(progress.children)}",
    )


def refused(found: Refusal) -> ConditionValue:
    return ConditionValue(SPLIT_ACCEPTED, cond.FALSE, found.reason, found.message)


def withdrawn() -> ConditionValue:
    return ConditionValue(SPLIT_ACCEPTED, cond.FALSE, WITHDRAWN, "spec.split was removed")


def step_message(progress: SplitProgress, shard: str) -> str:
    pivot = f"{progress.pivot:08x}" if progress.pivot is not None else "?"
    children = ", ".join(progress.children)
    texts = {
        SplitStep.PLAN: f"split of {shard} by {progress.by} at {pivot} planned: child {children}",
        SplitStep.CHILDREN: f"created {children}, which restores the recovery log of {shard}",
        SplitStep.CATCH_UP: f"{children} tails the recovery log of {shard}",
        SplitStep.HAND_OFF: f"{children} caught up: narrowing {shard} to below {pivot}",
        SplitStep.DONE: f"{shard} split at {pivot}: {children} is primary for the upper half",
        SplitStep.ABORT: f"split of {shard} aborted: {progress.message}",
    }
    return texts.get(progress.step, progress.message)
