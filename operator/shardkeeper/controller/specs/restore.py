"""A restored Task's shards (spec.restoreFrom, docs/backup-and-restore.md), as pure functions.

The restored task takes the shape of its source as it is when the restore is planned: one
shard per source shard, with the same key and r-clock ranges, each forking that shard's
recovery log (or the log it was split from, when the restore point lies before the split)
at the point the storage layer chose (``storage.pointintime``). A source whose shards are
splitting is waited for, so that the ranges planned cover the key space exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from shardkeeper.api.shard import RestoreSource, Shard
from shardkeeper.api.task import RestoredShard, RestoreStatus, Task, TaskType
from shardkeeper.controller.specs.objects import namespaced_name
from shardkeeper.controller.specs.references import Problem
from shardkeeper.controller.specs.shards import new_shard


@dataclasses.dataclass(frozen=True)
class PlannedRestore:
    """A shard of the restored task, before its restore point is chosen."""

    source: Shard
    shard: Shard  # without restoreSource yet


@dataclasses.dataclass(frozen=True)
class ChosenPoint:
    """What the storage layer chose for one planned shard (relative log name)."""

    recovery_log: str
    offset: int
    seq: int = 0
    committed_at: datetime.datetime | None = None


def restore_problems(
    task: Task, source: Task | None, source_shards: Sequence[Shard]
) -> list[Problem]:
    """Why the shards of ``task`` cannot be planned from ``source`` now."""
    spec = task.spec.restore_from
    if spec is None:
        return []
    _, name = namespaced_name(task)
    if spec.task == name:
        return [Problem("RestoreSourceInvalid", "spec.restoreFrom.task names this task itself")]
    if source is None:
        return [
            Problem(
                "RestoreSourceNotFound",
                f"Task {spec.task} (spec.restoreFrom.task) does not exist in this namespace",
            )
        ]
    if source.spec.type != task.spec.type:
        return [
            Problem(
                "RestoreSourceKindDiffers",
                f"Task {spec.task} (spec.restoreFrom.task) is a {source.spec.type}, this task "
                f"a {task.spec.type}: a restore starts from a task of the same type",
            )
        ]
    if source.spec.type == TaskType.MATERIALIZATION:
        return [Problem("RestoreSourceInvalid", "a materialization cannot be restored")]
    if source.spec.storage_mapping != task.spec.storage_mapping:
        return [
            Problem(
                "RestoreStorageMappingDiffers",
                f"Task {spec.task} keeps its recovery logs in StorageMapping "
                f"{source.spec.storage_mapping}, this task in {task.spec.storage_mapping}: "
                "a restore forks logs within one StorageMapping",
            )
        ]
    if not source_shards:
        return [
            Problem(
                "RestoreSourceHasNoShards",
                f"Task {spec.task} has no shards yet",
                waiting=True,
            )
        ]
    splitting = [
        s.metadata.name
        for s in source_shards
        if s.spec.split_source is not None or s.spec.split_targets
    ]
    if splitting:
        return [
            Problem(
                "RestoreSourceSplitting",
                f"shard {splitting[0]} of Task {spec.task} is splitting: the restore is "
                "planned once the split is done",
                waiting=True,
            )
        ]
    return []


def plan_restore(task: Task, source_shards: Sequence[Shard]) -> list[PlannedRestore]:
    """One shard of ``task`` per source shard, of the same ranges, in name order."""
    planned = []
    for source in sorted(source_shards, key=lambda s: s.metadata.name or ""):
        spec = source.spec
        shard = new_shard(
            task, (spec.key_begin, spec.key_end), (spec.r_clock_begin, spec.r_clock_end)
        )
        planned.append(PlannedRestore(source, shard))
    return planned


def _overlaps(a: Shard, b: Shard) -> bool:
    x, y = a.spec, b.spec
    return (
        x.key_begin <= y.key_end
        and y.key_begin <= x.key_end
        and x.r_clock_begin <= y.r_clock_end
        and y.r_clock_begin <= x.r_clock_end
    )


def missing_restored(
    task: Task, source_shards: Sequence[Shard], existing: Sequence[Shard]
) -> list[PlannedRestore]:
    """The planned shards still to create: all of them for a task without shards; after a
    pass that created only some (an operator stopped in the middle), those whose ranges no
    existing shard overlaps. Once the task's own splits began, none."""
    if any(s.spec.restore_source is None for s in existing):
        return []
    return [
        planned
        for planned in plan_restore(task, source_shards)
        if not any(_overlaps(planned.shard, shard) for shard in existing)
    ]


def restored_shard(planned: PlannedRestore, point: ChosenPoint) -> Shard:
    """The planned shard, starting from ``point``."""
    spec = planned.shard.spec.model_copy(
        update={
            "restore_source": RestoreSource(
                shard=planned.source.metadata.name or "",
                recovery_log=point.recovery_log,
                offset=point.offset,
                seq=point.seq,
                committed_at=point.committed_at,
            )
        }
    )
    return planned.shard.model_copy(update={"spec": spec})


def restore_status(task: Task, shards: Sequence[Shard]) -> RestoreStatus | None:
    """``status.restore``: what each shard's restoreSource says, written with the shard."""
    spec = task.spec.restore_from
    if spec is None:
        return None
    entries = [
        RestoredShard(
            shard=shard.metadata.name or "",
            source_shard=source.shard,
            recovery_log=source.recovery_log,
            offset=source.offset,
            seq=source.seq,
            committed_at=source.committed_at,
        )
        for shard in sorted(shards, key=lambda s: s.metadata.name or "")
        if (source := shard.spec.restore_source) is not None
    ]
    return RestoreStatus(task=spec.task, before=spec.before, shards=entries)
