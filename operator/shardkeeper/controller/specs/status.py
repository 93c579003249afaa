"""Status of each resource, derived from what is observed: a pure function per kind.

A Shard's phase comes from what its replicas report (``status.replicas``, written by the
runtime) and from its StatefulSet; a Task's from its Shards and its references; a
StorageMapping's from the last bucket check; a Collection's from its StorageMapping.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from shardkeeper.api.meta import DEGRADED, PROGRESSING, READY, find_condition
from shardkeeper.api.shard import (
    SPLIT_ENDED,
    ReplicaState,
    ReplicaStatus,
    Shard,
    ShardPhase,
)
from shardkeeper.api.task import Task
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.conditions import ConditionValue
from shardkeeper.controller.specs.names import pod_ordinal
from shardkeeper.controller.specs.references import Problem, summary
from shardkeeper.controller.specs.refusals import Refusal, refused_verdicts
from shardkeeper.controller.specs.views import StatefulSetView
from shardkeeper.controller.specs.workload import replicas as wanted_replicas

PROCESSING = frozenset({ShardPhase.RUNNING, ShardPhase.SPLITTING})


# --- Shard ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardVerdict:
    phase: ShardPhase
    verdicts: tuple[ConditionValue, ...]


def live_replicas(shard: Shard, wanted: int) -> list[ReplicaStatus]:
    """Entries of the pods that should exist; a scaled-down pod's entry is left behind."""
    name = shard.metadata.name or ""
    out = []
    for entry in shard.status.replicas:
        ordinal = pod_ordinal(name, entry.pod)
        if ordinal is not None and ordinal < wanted:
            out.append(entry)
    return out


def primary_replica(shard: Shard, live: Sequence[ReplicaStatus]) -> ReplicaStatus | None:
    # A primary that died leaves its entry PRIMARY; the new one names itself in
    # status.primary, so an entry counts only if it agrees.
    named = shard.status.primary
    for entry in live:
        if entry.state == ReplicaState.PRIMARY and (named is None or entry.pod == named):
            return entry
    return None


def shard_verdict(
    shard: Shard,
    task: Task | None,
    sts: StatefulSetView | None,
    problems: Sequence[Problem] = (),
    refusal: Refusal | None = None,
) -> ShardVerdict:
    """``refusal``: the API server's answer to the last apply of the shard's workload."""
    verdict = _shard_verdict(shard, task, sts, problems)
    if refusal is None:
        return verdict
    # a refused change leaves the StatefulSet's pods running as they were
    return ShardVerdict(
        verdict.phase,
        _overridden(verdict.verdicts, refused_verdicts(refusal, running=sts is not None)),
    )


def _overridden(
    verdicts: Sequence[ConditionValue], overrides: Sequence[ConditionValue]
) -> tuple[ConditionValue, ...]:
    """``verdicts`` with those of the types in ``overrides`` replaced by them."""
    by_type = {v.type: v for v in overrides}
    return tuple(by_type.get(v.type, v) for v in verdicts)


def _shard_verdict(
    shard: Shard,
    task: Task | None,
    sts: StatefulSetView | None,
    problems: Sequence[Problem],
) -> ShardVerdict:
    if task is None:
        message = f"Task {shard.spec.task} does not exist; the shard is being removed"
        return ShardVerdict(
            ShardPhase.PENDING,
            (
                cond.ready(False, "TaskNotFound", message),
                cond.progressing(False, "TaskNotFound", message),
                cond.degraded(True, "TaskNotFound", message),
            ),
        )
    wanted = wanted_replicas(task)
    hot = task.spec.shards.hot_standbys
    live = live_replicas(shard, wanted)
    primary = primary_replica(shard, live)
    failed = [e for e in live if e.state == ReplicaState.FAILED]
    standbys = [e for e in live if e.state == ReplicaState.STANDBY]
    ready_pods = sts.ready if sts is not None else 0
    splitting = shard.status.split is not None and shard.status.split.step not in SPLIT_ENDED

    if task.spec.shards.disable:
        phase = ShardPhase.DISABLED
        ready = cond.ready(
            True, "Disabled", "the task is disabled: the shard runs no pods and keeps its data"
        )
    elif primary is not None and ready_pods >= 1:
        phase = ShardPhase.SPLITTING if splitting else ShardPhase.RUNNING
        ready = cond.ready(
            True, "Running", f"{primary.pod} is primary at epoch {shard.status.epoch}"
        )
    elif failed:
        phase = ShardPhase.FAILED
        ready = cond.ready(False, "ReplicaFailed", _failures(failed))
    elif live:
        # how far each replica got is in status.replicas; a message that followed it would
        # have the status written at every step of every replica
        phase = ShardPhase.RECOVERING
        ready = cond.ready(False, "Recovering", "the replicas are recovering; none is primary yet")
    else:
        phase = ShardPhase.PENDING
        ready = cond.ready(
            False,
            "PodsStarting",
            f"{ready_pods} of {wanted} pods ready; no replica has reported yet",
        )
    progressing = _shard_progressing(phase, sts, wanted, _was_rolling(shard))
    if progressing.reason in ("Starting", "Stable") and shard.spec.split_source is not None:
        progressing = cond.progressing(
            True,
            "BeingBuilt",
            f"a split of {shard.spec.split_source} builds this shard from its recovery log",
        )
    elif progressing.reason in ("Starting", "Stable") and splitting:
        assert shard.status.split is not None
        progressing = cond.progressing(
            True, "Splitting", f"a split of this shard is at step {shard.status.split.step}"
        )
    # a roll replaces standbys on purpose: that is no degradation to warn about
    rolling = progressing.reason == "RollingUpdate"
    return ShardVerdict(
        phase,
        (
            ready,
            progressing,
            _shard_degraded(phase, failed, standbys, hot, problems, rolling=rolling),
        ),
    )


def _failures(failed: Sequence[ReplicaStatus]) -> str:
    return "; ".join(f"{e.pod}: {e.message or 'failed'}" for e in failed)


def _was_rolling(shard: Shard) -> bool:
    found = find_condition(shard.status.conditions, PROGRESSING)
    return found is not None and found.reason == "RollingUpdate" and found.status == cond.TRUE


def _shard_progressing(
    phase: ShardPhase, sts: StatefulSetView | None, wanted: int, was_rolling: bool
) -> ConditionValue:
    if sts is None:
        return cond.progressing(True, "Creating", "creating the StatefulSet")
    if phase == ShardPhase.DISABLED:
        if sts.current > 0:
            return cond.progressing(True, "Stopping", f"{sts.current} pods are still running")
        return cond.progressing(False, "Disabled", "no pods run while the task is disabled")
    if sts.rolling:
        return cond.progressing(
            True,
            "RollingUpdate",
            f"{sts.updated} of {sts.current} pods run the current template; "
            "standbys are replaced first, the primary last",
        )
    if was_rolling and (sts.ready < wanted or phase not in PROCESSING):
        # the last pod replaced (the primary) is still coming back: the roll is not over
        # until it is, and its end is what the RollComplete Event marks
        return cond.progressing(
            True,
            "RollingUpdate",
            "every pod runs the current template; waiting for the last one to be ready",
        )
    if sts.current != wanted:
        return cond.progressing(True, "Scaling", f"{sts.current} of {wanted} pods exist")
    if phase in (ShardPhase.PENDING, ShardPhase.RECOVERING):
        return cond.progressing(True, "Starting", "waiting for a replica to become primary")
    return cond.progressing(False, "Stable", "every pod runs the current template")


def _shard_degraded(
    phase: ShardPhase,
    failed: Sequence[ReplicaStatus],
    standbys: Sequence[ReplicaStatus],
    hot: int,
    problems: Sequence[Problem],
    *,
    rolling: bool,
) -> ConditionValue:
    if failed:
        return cond.degraded(True, "ReplicaFailed", _failures(failed))
    blocking = [p for p in problems if not p.waiting]
    if blocking:
        return cond.degraded(True, blocking[0].reason, summary(blocking))
    if phase in PROCESSING and len(standbys) < hot and not rolling:
        return cond.degraded(
            True,
            "StandbysNotReady",
            f"{len(standbys)} of {hot} hot standbys are tailing the recovery log",
        )
    return cond.degraded(False, "Healthy", "")


# --- Task -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskVerdict:
    shards: int
    ready_shards: int
    by_phase: dict[str, int]
    verdicts: tuple[ConditionValue, ...]


def _condition_text(shard: Shard, type_: str) -> str:
    found = find_condition(shard.status.conditions, type_)
    if found is None:
        return f"{shard.metadata.name} has no {type_} condition yet"
    return f"{shard.metadata.name}: {found.reason}: {found.message}".rstrip(": ")


def task_verdict(
    task: Task,
    shards: Sequence[Shard],
    problems: Sequence[Problem],
    *,
    creating: int = 0,
    deleting: bool = False,
    refusal: Refusal | None = None,
) -> TaskVerdict:
    """``refusal``: the API server's answer to the last apply of the task's own Service."""
    by_phase = Counter(str(s.status.phase) for s in shards)
    processing = [s for s in shards if s.status.phase in PROCESSING]
    count = len(shards)
    blocking = [p for p in problems if not p.waiting]
    # a child that a split still builds serves nothing yet: its parent still owns its range
    serving = [s for s in shards if s.spec.split_source is None]
    return TaskVerdict(
        shards=count,
        ready_shards=len(processing),
        by_phase=dict(sorted(by_phase.items())),
        verdicts=(
            _task_ready(
                task, serving, problems, deleting, len([s for s in serving if s in processing])
            ),
            _task_progressing(task, shards, problems, creating, deleting),
            _task_degraded(shards, blocking, refusal),
        ),
    )


def _task_ready(
    task: Task,
    shards: Sequence[Shard],
    problems: Sequence[Problem],
    deleting: bool,
    processing: int,
) -> ConditionValue:
    count = len(shards)
    if deleting:
        return cond.ready(False, "Deleting", f"stopping {count} shards")
    if not shards:
        if problems:
            return cond.ready(False, problems[0].reason, summary(problems))
        return cond.ready(False, "CreatingShards", "creating the task's first shard")
    if task.spec.shards.disable:
        if all(s.status.phase == ShardPhase.DISABLED for s in shards):
            return cond.ready(
                True,
                "Disabled",
                f"the task is disabled: {count} shards keep their data and run no pods",
            )
        return cond.ready(False, "Disabling", "waiting for the shards to stop")
    if processing == count:
        return cond.ready(True, "Running", f"{count} of {count} shards running")
    failed = [s for s in shards if s.status.phase == ShardPhase.FAILED]
    if failed:
        return cond.ready(False, "ShardFailed", _condition_text(failed[0], READY))
    refused = [s for s in shards if _reason(s, READY) == cond.REFUSED]
    if refused:
        return cond.ready(False, cond.REFUSED, _condition_text(refused[0], READY))
    waiting = next(s for s in shards if s.status.phase not in PROCESSING)
    return cond.ready(
        False,
        "ShardsNotReady",
        f"{processing} of {count} shards running; "
        f"{waiting.metadata.name} is {waiting.status.phase}",
    )


def _task_progressing(
    task: Task,
    shards: Sequence[Shard],
    problems: Sequence[Problem],
    creating: int,
    deleting: bool,
) -> ConditionValue:
    if deleting:
        return cond.progressing(True, "Deleting", "stopping the shards before removing the task")
    if problems and not shards:
        first = problems[0]
        return cond.progressing(first.waiting, first.reason, summary(problems))
    if creating:
        return cond.progressing(True, "CreatingShards", f"creating {creating} shards")
    splitting = [
        s for s in shards if s.status.split is not None and s.status.split.step not in SPLIT_ENDED
    ]
    if splitting:
        shown = ", ".join(
            f"{s.metadata.name} ({s.status.split.step})" for s in splitting[:3] if s.status.split
        )
        more = f" and {len(splitting) - 3} more" if len(splitting) > 3 else ""
        return cond.progressing(
            True, "Splitting", f"{len(splitting)} splits under way: {shown}{more}"
        )
    scaling = task.spec.shards.scaling
    live = [s for s in shards if s.status.phase != ShardPhase.RETIRED]
    if shards and len(live) < scaling.min_shards:
        return cond.progressing(
            True,
            "ScalingUp",
            f"the task has {len(live)} of minShards {scaling.min_shards} shards; the widest "
            "are split as they become ready",
        )
    # a shard the operator has not looked at yet has no conditions: it is starting
    moving = [s for s in shards if not cond.is_false(s.status.conditions, PROGRESSING)]
    if moving:
        # which shards, not what each is doing (their own conditions say it): a task's
        # status need not be written at every step of every shard
        shown = ", ".join(s.metadata.name or "" for s in moving[:3])
        more = f" and {len(moving) - 3} more" if len(moving) > 3 else ""
        return cond.progressing(
            True,
            "ShardsProgressing",
            f"{len(moving)} of {len(shards)} shards are starting or changing: {shown}{more}",
        )
    # more shards than asked for: a lowered minShards (or maxShards), since only an
    # automatic split may go past minShards
    over_max = scaling.max_shards is not None and len(live) > scaling.max_shards
    if over_max or (len(live) > scaling.min_shards and scaling.auto_split is None):
        limit = (
            f"maxShards is {scaling.max_shards}"
            if over_max
            else f"minShards is {scaling.min_shards}"
        )
        return cond.progressing(
            False,
            "ShardsNotMerged",
            f"{limit} but the task has {len(live)} shards; shards are never merged",
        )
    return cond.progressing(False, "Stable", "")


def _task_degraded(
    shards: Sequence[Shard], blocking: Sequence[Problem], refusal: Refusal | None
) -> ConditionValue:
    if blocking:
        return cond.degraded(True, blocking[0].reason, summary(blocking))
    if refusal is not None:
        return cond.degraded(True, cond.REFUSED, refusal.text)
    worse = [s for s in shards if cond.is_true(s.status.conditions, DEGRADED)]
    # a refusal first: it is the task's spec (or the cluster's rules) to change, not a pod
    refused = [s for s in worse if _reason(s, DEGRADED) == cond.REFUSED]
    if refused:
        return cond.degraded(True, cond.REFUSED, _condition_text(refused[0], DEGRADED))
    if worse:
        return cond.degraded(True, "ShardDegraded", _condition_text(worse[0], DEGRADED))
    return cond.degraded(False, "Healthy", "")


def _reason(shard: Shard, type_: str) -> str | None:
    found = find_condition(shard.status.conditions, type_)
    return found.reason if found is not None else None


# --- StorageMapping ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoreCheck:
    """What one check of one store found."""

    bucket: str
    prefix: str
    reachable: bool | None
    conditional_writes: bool | None
    reason: str
    message: str
    checked_at: datetime

    @property
    def ok(self) -> bool:
        return bool(self.reachable and self.conditional_writes)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def mapping_verdicts(checks: Sequence[StoreCheck]) -> tuple[ConditionValue, ...]:
    first = checks[0]
    if first.ok:
        ready = cond.ready(
            True, "BucketReady", f"{first.url} is reachable and honours conditional writes"
        )
    else:
        ready = cond.ready(False, first.reason, f"{first.url}: {first.message}")
    failing = [c for c in checks if not c.ok]
    if failing:
        degraded = cond.degraded(
            True, failing[0].reason, "; ".join(f"{c.url}: {c.message}" for c in failing)
        )
    else:
        degraded = cond.degraded(False, "Healthy", "")
    progressing = cond.progressing(False, "Checked", f"{len(checks)} stores checked")
    return ready, progressing, degraded


# --- Collection -------------------------------------------------------------------------------


def collection_verdicts(problem: Problem | None) -> tuple[ConditionValue, ...]:
    if problem is None:
        return (
            cond.ready(True, "StorageMappingReady", "its StorageMapping is ready"),
            cond.progressing(False, "Stable", ""),
            cond.degraded(False, "Healthy", ""),
        )
    return (
        cond.ready(False, problem.reason, problem.message),
        cond.progressing(problem.waiting, problem.reason, problem.message),
        cond.degraded(not problem.waiting, problem.reason, problem.message),
    )
