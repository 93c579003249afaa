"""A restored Task's shards (controller/specs/restore.py): the checks of spec.restoreFrom,
the plan of one shard per source shard, and status.restore."""

from __future__ import annotations

from tests.unit.controller.models import shard_of, task

from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task
from shardkeeper.controller.specs.restore import (
    ChosenPoint,
    missing_restored,
    plan_restore,
    restore_problems,
    restore_status,
    restored_shard,
)
from shardkeeper.controller.specs.shards import new_shard

SOURCE = "customer-totals"


def restored(**restore_from: object) -> Task:
    changes = {"metadata.name": "totals-back", "spec.restoreFrom": {"task": SOURCE, **restore_from}}
    return task(SOURCE, **changes)


def halves(owner: Task) -> list[Shard]:
    return [
        new_shard(owner, (0, 0x7FFFFFFF), (0, 0xFFFFFFFF)),
        new_shard(owner, (0x80000000, 0xFFFFFFFF), (0, 0xFFFFFFFF)),
    ]


def reasons(*args: object) -> list[str]:
    return [p.reason for p in restore_problems(*args)]  # type: ignore[arg-type]


def test_bad_sources_are_problems_with_reasons() -> None:
    source = task(SOURCE)
    shards = [shard_of(source)]
    assert reasons(restored(), source, shards) == []
    assert reasons(restored(), None, []) == ["RestoreSourceNotFound"]
    assert reasons(restored(), task("ingest-orders"), shards) == ["RestoreSourceKindDiffers"]
    assert reasons(task(SOURCE, **{"spec.restoreFrom": {"task": SOURCE}}), source, shards) == [
        "RestoreSourceInvalid"
    ]
    other = task(SOURCE, **{"spec.storageMapping": "elsewhere"})
    assert reasons(restored(), other, shards) == ["RestoreStorageMappingDiffers"]
    waiting = restore_problems(restored(), source, [])
    assert [(p.reason, p.waiting) for p in waiting] == [("RestoreSourceHasNoShards", True)]
    splitting = shards[0].model_copy(deep=True)
    splitting.spec.split_targets = ["customer-totals-80000000-00000000"]
    waiting = restore_problems(restored(), source, [splitting])
    assert [(p.reason, p.waiting) for p in waiting] == [("RestoreSourceSplitting", True)]


def test_one_shard_per_source_shard_of_the_same_ranges() -> None:
    target = restored()
    plan = plan_restore(target, halves(task(SOURCE)))
    assert [p.source.metadata.name for p in plan] == [
        "customer-totals-00000000-00000000",
        "customer-totals-80000000-00000000",
    ]
    assert [p.shard.metadata.name for p in plan] == [
        "totals-back-00000000-00000000",
        "totals-back-80000000-00000000",
    ]
    for planned in plan:
        theirs, ours = planned.source.spec, planned.shard.spec
        assert (ours.key_begin, ours.key_end, ours.r_clock_begin, ours.r_clock_end) == (
            theirs.key_begin,
            theirs.key_end,
            theirs.r_clock_begin,
            theirs.r_clock_end,
        )
        assert ours.recovery_log != theirs.recovery_log
        assert ours.task == "totals-back"


def test_only_missing_shards_are_planned_again() -> None:
    target = restored()
    sources = halves(task(SOURCE))
    plan = plan_restore(target, sources)
    first = restored_shard(plan[0], ChosenPoint("recovery/x", 42))
    assert first.spec.restore_source is not None
    assert first.spec.restore_source.offset == 42
    assert first.spec.restore_source.shard == "customer-totals-00000000-00000000"
    assert [p.shard.metadata.name for p in missing_restored(target, sources, [])] == [
        p.shard.metadata.name for p in plan
    ]
    missing = missing_restored(target, sources, [first])
    assert [p.shard.metadata.name for p in missing] == ["totals-back-80000000-00000000"]
    # once the restored task split on its own, nothing more is planned
    child = new_shard(target, (0x40000000, 0x7FFFFFFF), (0, 0xFFFFFFFF))
    assert missing_restored(target, sources, [first, child]) == []


def test_status_says_where_each_shard_restored_from() -> None:
    target = restored(before="2026-12-07T20:00:00Z")
    plan = plan_restore(target, halves(task(SOURCE)))
    shards = [
        restored_shard(p, ChosenPoint("recovery/log", 100 + i, seq=7 if i == 0 else 0))
        for i, p in enumerate(plan)
    ]
    status = restore_status(target, shards)
    assert status is not None
    assert status.task == SOURCE
    assert status.before is not None
    assert [(e.shard, e.offset, e.seq) for e in status.shards] == [
        ("totals-back-00000000-00000000", 100, 7),
        ("totals-back-80000000-00000000", 101, 0),
    ]
    assert restore_status(task(SOURCE), shards) is None
