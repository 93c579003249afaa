"""The split state machine of docs/splits.md as a pure function: every refusal, each step
and the write that leaves it, aborts (by removal, by timeout, never after HandOff), and a
resume from every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.unit.controller.models import shard_of, task

from shardkeeper.api.shard import Shard, SplitProgress, SplitRequest, SplitStep
from shardkeeper.api.task import SplitBy, Task
from shardkeeper.controller.specs.splits import (
    ClearRequest,
    ClearSource,
    CreateChild,
    DeleteChild,
    Idle,
    Narrow,
    Refuse,
    SetTargets,
    SplitSettings,
    Wait,
    WriteProgress,
    child_shard,
    next_split_step,
    plan,
    refusal,
)

PARENT = "customer-totals-00000000-00000000"
CHILD = "customer-totals-80000000-00000000"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)
TASK = task()  # maxShards 4, one hot standby


def running(**status: Any) -> dict[str, Any]:
    return {
        "phase": "Running",
        "primary": f"{PARENT}-0",
        "replicas": [{"pod": f"{PARENT}-0", "state": "PRIMARY"}],
        **status,
    }


def parent(
    split: str | None = "key",
    progress: SplitProgress | None = None,
    *,
    owner: Task = TASK,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> Shard:
    found = shard_of(owner, running() if status is None else status)
    changes: dict[str, Any] = dict(spec)
    if split is not None:
        changes["split"] = SplitRequest(by=SplitBy(split))
    update = found.spec.model_copy(update=changes)
    out = found.model_copy(update={"spec": update})
    if progress is not None:
        out.status.split = progress
    return out


def planned(step: SplitStep = SplitStep.PLAN, at: datetime = NOW, **changes: Any) -> SplitProgress:
    progress = plan(parent(), TASK, SplitBy.KEY, at)
    return progress.model_copy(update={"step": step, **changes})


def child(*replicas: dict[str, Any], primary: str | None = None, source: bool = True) -> Shard:
    made = child_shard(parent(), TASK, SplitBy.KEY, 0x80000000)
    doc = made.to_k8s()
    doc["metadata"].update(uid="uid-child", generation=1, resourceVersion="5")
    if not source:
        doc["spec"].pop("splitSource")
    doc["status"] = {"replicas": list(replicas), **({"primary": primary} if primary else {})}
    return Shard.from_k8s(doc)


def standby(lag: int | None, head: int | None = 100) -> dict[str, Any]:
    entry: dict[str, Any] = {"pod": f"{CHILD}-0", "state": "STANDBY", "recoveryLogHead": head}
    if lag is not None:
        entry["lag"] = lag
    return entry


def step(
    p: Shard, c: Shard | None = None, now: datetime = LATER, shards: list[Shard] | None = None
) -> Any:
    return next_split_step(p, c, TASK, shards or [p], now=now, settings=SplitSettings())


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shard", "others", "reason"),
    [
        (parent(status={"phase": "Recovering"}), [], "NotReady"),
        (parent(status=running(primary=None)), [], "NotReady"),
        (parent(progress=planned(SplitStep.CATCH_UP)), [], "AlreadySplitting"),
        (parent(split_source="customer-totals-00000000-00000001"), [], "BeingBuilt"),
        (parent(key_end=0), [], "SingleValue"),
        (parent(split="rClock", r_clock_end=0), [], "SingleValue"),
        (parent(), ["a", "b", "c"], "MaxShards"),
    ],
)
def test_a_split_that_cannot_start_is_refused_with_its_reason(
    shard: Shard, others: list[str], reason: str
) -> None:
    extra = [
        shard_of(TASK).model_copy(
            update={"metadata": shard.metadata.model_copy(update={"name": n})}
        )
        for n in others
    ]
    found = refusal(shard, TASK, [shard, *extra])
    assert found is not None
    assert found.reason == reason, found
    if shard.status.split is None:
        assert step(shard, shards=[shard, *extra]) == Refuse(found)


def test_a_ready_shard_with_room_is_not_refused_and_a_planned_child_counts() -> None:
    shard = parent()
    assert refusal(shard, TASK, [shard]) is None
    # three shards and one split under way whose child is not created yet: four of four
    busy = parent(progress=planned()).model_copy(
        update={"metadata": shard.metadata.model_copy(update={"name": "other"})}
    )
    two = [
        shard_of(TASK).model_copy(
            update={"metadata": shard.metadata.model_copy(update={"name": n})}
        )
        for n in ("x", "y")
    ]
    found = refusal(shard, TASK, [shard, busy, *two])
    assert found is not None
    assert found.reason == "MaxShards"


def test_no_request_no_split() -> None:
    assert step(parent(split=None)) == Idle()


# --- the steps -----------------------------------------------------------------------------


def test_plan_picks_the_pivot_and_the_child() -> None:
    action = step(parent(), now=NOW)
    assert isinstance(action, WriteProgress)
    progress = action.progress
    assert (progress.step, progress.by, progress.pivot) == (SplitStep.PLAN, "key", 0x80000000)
    assert progress.children == [CHILD]
    assert progress.started_at == NOW
    assert [(r.step, r.at) for r in progress.steps] == [(SplitStep.PLAN, NOW)]


def test_the_child_is_the_upper_half_built_from_the_parent() -> None:
    made = child_shard(parent(), TASK, SplitBy.KEY, 0x80000000)
    spec = made.spec
    assert made.metadata.name == CHILD
    assert (spec.key_begin, spec.key_end) == (0x80000000, 0xFFFFFFFF)
    assert (spec.r_clock_begin, spec.r_clock_end) == (0, 0xFFFFFFFF)
    assert spec.split_source == PARENT
    assert spec.recovery_log.endswith("/customer-totals/80000000-00000000")
    assert [o.kind for o in made.metadata.owner_references] == ["Task"]
    by_r_clock = child_shard(parent(), TASK, SplitBy.R_CLOCK, 0x80000000)
    assert by_r_clock.metadata.name == "customer-totals-00000000-80000000"
    assert (by_r_clock.spec.key_end, by_r_clock.spec.r_clock_begin) == (0xFFFFFFFF, 0x80000000)


def test_plan_creates_the_child_then_sets_targets_then_enters_children() -> None:
    p = parent(progress=planned())
    created = step(p)
    assert isinstance(created, CreateChild)
    assert created.child.metadata.name == CHILD
    assert step(p, child()) == SetTargets((CHILD,))
    moved = step(parent(progress=planned(), split_targets=[CHILD]), child())
    assert isinstance(moved, WriteProgress)
    assert moved.step == SplitStep.CHILDREN
    assert [r.step for r in moved.progress.steps] == [SplitStep.PLAN, SplitStep.CHILDREN]


def test_children_waits_for_a_replica_tailing_then_catch_up_waits_for_small_lag() -> None:
    p = parent(progress=planned(SplitStep.CHILDREN), split_targets=[CHILD])
    waiting = step(p, child({"pod": f"{CHILD}-0", "state": "BACKFILL"}))
    assert isinstance(waiting, Wait)
    assert waiting.seconds == pytest.approx(9 * 60)
    tailing = step(p, child(standby(lag=None)))
    assert isinstance(tailing, WriteProgress)
    assert tailing.step == SplitStep.CATCH_UP
    c = parent(progress=planned(SplitStep.CATCH_UP), split_targets=[CHILD])
    assert isinstance(step(c, child(standby(lag=5 * 1024 * 1024))), Wait)
    assert isinstance(step(c, child(standby(lag=None))), Wait)
    backfill_small = {"pod": f"{CHILD}-0", "state": "BACKFILL", "lag": 0}
    assert isinstance(step(c, child(backfill_small)), Wait)
    ready = step(c, child(standby(lag=4 * 1024 * 1024)))
    assert isinstance(ready, WriteProgress)
    assert ready.step == SplitStep.HAND_OFF


def test_hand_off_narrows_the_parent_then_waits_for_the_child_primary() -> None:
    h = parent(progress=planned(SplitStep.HAND_OFF), split_targets=[CHILD])
    assert step(h, child(standby(0))) == Narrow("keyEnd", 0xFFFFFFFF, 0x7FFFFFFF)
    narrowed = parent(
        progress=planned(SplitStep.HAND_OFF), split_targets=[CHILD], key_end=0x7FFFFFFF
    )
    assert step(narrowed, child(standby(0))) == Wait(None)
    # a replica that says PRIMARY before the child names it is not enough
    early = child({"pod": f"{CHILD}-0", "state": "PRIMARY"})
    assert step(narrowed, early) == Wait(None)
    took = child({"pod": f"{CHILD}-0", "state": "PRIMARY"}, primary=f"{CHILD}-0")
    done = step(narrowed, took)
    assert isinstance(done, WriteProgress)
    assert done.step == SplitStep.FINISH


def test_an_r_clock_split_narrows_r_clock_end() -> None:
    progress = plan(parent(split="rClock"), TASK, SplitBy.R_CLOCK, NOW)
    h = parent(split="rClock", progress=progress.model_copy(update={"step": SplitStep.HAND_OFF}))
    assert step(h, None) == CreateChild(child_shard(h, TASK, SplitBy.R_CLOCK, 0x80000000))


def test_finish_clears_the_child_source_then_the_parent_fields_then_is_done() -> None:
    fields = {"split_targets": [CHILD], "key_end": 0x7FFFFFFF}
    f = parent(progress=planned(SplitStep.FINISH), **fields)
    assert step(f, child()) == ClearSource(CHILD, PARENT)
    assert step(f, child(source=False)) == ClearRequest(targets=True, split=True)
    cleared = parent(split=None, progress=planned(SplitStep.FINISH), key_end=0x7FFFFFFF)
    done = step(cleared, child(source=False))
    assert isinstance(done, WriteProgress)
    assert done.step == SplitStep.DONE
    assert step(parent(split=None, progress=done.progress), child(source=False)) == Idle()


def test_a_new_request_after_done_or_aborted_replaces_the_record() -> None:
    old = planned(SplitStep.DONE, at=NOW - timedelta(days=1))
    again = step(parent(progress=old, key_end=0x7FFFFFFF), now=NOW)
    assert isinstance(again, WriteProgress)
    assert again.step == SplitStep.PLAN
    assert again.progress.pivot == 0x40000000
    assert [r.step for r in again.progress.steps] == [SplitStep.PLAN]
    aborted = step(parent(progress=planned(SplitStep.ABORTED)), now=NOW)
    assert isinstance(aborted, WriteProgress)
    assert aborted.progress.started_at == NOW


# --- aborts ------------------------------------------------------------------------------


@pytest.mark.parametrize("at", [SplitStep.PLAN, SplitStep.CHILDREN, SplitStep.CATCH_UP])
def test_removing_spec_split_before_the_hand_off_aborts(at: SplitStep) -> None:
    action = step(parent(split=None, progress=planned(at), split_targets=[CHILD]), child())
    assert isinstance(action, WriteProgress)
    assert action.step == SplitStep.ABORT
    assert "removed" in action.progress.message


@pytest.mark.parametrize("at", [SplitStep.PLAN, SplitStep.CHILDREN, SplitStep.CATCH_UP])
def test_the_catch_up_timeout_aborts(at: SplitStep) -> None:
    p = parent(progress=planned(at), split_targets=[CHILD])
    assert (
        not isinstance(step(p, child(), now=NOW + timedelta(minutes=9)), WriteProgress)
        or at == SplitStep.PLAN
    )
    action = step(p, child(), now=NOW + timedelta(minutes=10))
    assert isinstance(action, WriteProgress)
    assert action.step == SplitStep.ABORT
    assert "catch-up timeout" in action.progress.message
    short = next_split_step(
        p,
        child(),
        TASK,
        [p],
        now=LATER,
        settings=SplitSettings(catch_up_timeout=timedelta(seconds=30)),
    )
    assert isinstance(short, WriteProgress)
    assert short.step == SplitStep.ABORT


def test_a_child_deleted_before_the_hand_off_aborts() -> None:
    action = step(parent(progress=planned(SplitStep.CATCH_UP), split_targets=[CHILD]), None)
    assert isinstance(action, WriteProgress)
    assert action.step == SplitStep.ABORT


@pytest.mark.parametrize("at", [SplitStep.HAND_OFF, SplitStep.FINISH])
def test_no_abort_from_the_hand_off_on(at: SplitStep) -> None:
    late = NOW + timedelta(hours=2)
    p = parent(split=None, progress=planned(at), split_targets=[CHILD], key_end=0x7FFFFFFF)
    action = step(p, child(standby(0)), now=late)
    if at == SplitStep.HAND_OFF:
        # the removal is noted once, and changes nothing
        assert isinstance(action, WriteProgress)
        assert action.step == SplitStep.HAND_OFF
        assert "only rolls forward" in action.progress.message
        assert step(
            parent(split=None, progress=action.progress, split_targets=[CHILD], key_end=0x7FFFFFFF),
            child(standby(0)),
            now=late,
        ) == Wait(None)
    else:
        assert action == ClearSource(CHILD, PARENT)
    # a child deleted by hand after the narrowing is not guessed back: a person is told
    gone = step(p, None, now=late)
    assert isinstance(gone, WriteProgress)
    assert "no shard owns" in gone.progress.message
    # before the narrowing it is re-created as planned
    early = parent(split=None, progress=planned(SplitStep.HAND_OFF), split_targets=[CHILD])
    assert isinstance(step(early, None, now=late), CreateChild)


def test_abort_deletes_the_child_then_clears_the_parent_then_is_aborted() -> None:
    a = parent(progress=planned(SplitStep.ABORT, message="timed out"), split_targets=[CHILD])
    assert step(a, child()) == DeleteChild(CHILD, "uid-child")
    deleting = child().model_copy(deep=True)
    deleting.metadata.deletion_timestamp = NOW
    assert step(a, deleting) == Wait(None)
    assert step(a, None) == ClearRequest(targets=True, split=True)
    cleared = parent(split=None, progress=planned(SplitStep.ABORT, message="timed out"))
    done = step(cleared, None)
    assert isinstance(done, WriteProgress)
    assert done.step == SplitStep.ABORTED
    assert done.progress.message == "timed out"


def test_a_shard_that_is_not_the_childs_is_never_deleted() -> None:
    stranger = child(source=False)
    action = step(parent(progress=planned()), stranger)
    assert isinstance(action, WriteProgress)
    assert action.step == SplitStep.ABORT
    aborting = parent(progress=action.progress)
    assert step(aborting, stranger) == ClearRequest(targets=False, split=True)


def test_the_history_keeps_the_newest_sixteen_steps() -> None:
    progress = planned(SplitStep.CATCH_UP, steps=planned().steps * 16)
    moved = step(parent(progress=progress, split_targets=[CHILD]), child(standby(0)))
    assert isinstance(moved, WriteProgress)
    assert len(moved.progress.steps) == 16
    assert moved.progress.steps[-1].step == SplitStep.HAND_OFF


def test_a_capture_splits_by_r_clock_and_is_refused_a_key_split() -> None:
    capture = task("ingest-orders", **{"spec.shards.scaling": {"maxShards": 2}})
    by_key = parent("key", owner=capture)
    found = refusal(by_key, capture, [by_key])
    assert found is not None
    assert found.reason == "CaptureSplitsByRClock"
    assert "rClock" in found.message
    assert next_split_step(by_key, None, capture, [by_key], now=NOW) == Refuse(found)
    by_r_clock = parent("rClock", owner=capture)
    assert refusal(by_r_clock, capture, [by_r_clock]) is None
    progress = plan(by_r_clock, capture, SplitBy.R_CLOCK, NOW)
    assert progress.children == ["ingest-orders-00000000-80000000"]
