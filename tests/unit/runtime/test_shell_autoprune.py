"""When a primary prunes its recovery log, and how far: the pure rules and the pruner."""

from __future__ import annotations

import datetime
import threading
from typing import Any, cast

import pytest
from tests.support.wait import wait_for

from shardkeeper.api.meta import Duration
from shardkeeper.api.shard import RecoveryLogPrune, Shard
from shardkeeper.api.task import ShardTemplate
from shardkeeper.runtime.shell.autoprune import (
    AutoPruner,
    StandbyFloor,
    due_at,
    interval_of,
    split_in_progress,
    standby_floor,
)
from shardkeeper.runtime.shell.reporting import PrimaryStatus, is_urgent, primary_apply
from shardkeeper.runtime.shell.settings import settings_from_env
from shardkeeper.storage import errors
from shardkeeper.storage.prune import PrunePlan
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import Manifest

NAME = "t-00000000-00000000"
T0 = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
MINUTE = datetime.timedelta(minutes=1)


def shard(
    replicas: list[dict[str, Any]] | None = None,
    *,
    spec: dict[str, Any] | None = None,
    split_step: str | None = None,
) -> Shard:
    status: dict[str, Any] = {"replicas": replicas or []}
    if split_step is not None:
        status["split"] = {"step": split_step, "by": "key"}
    return Shard.from_k8s(
        {
            "apiVersion": "shardkeeper.io/v1alpha1",
            "kind": "Shard",
            "metadata": {"name": NAME},
            "spec": {
                "task": "t",
                "keyBegin": "00000000",
                "keyEnd": "ffffffff",
                "rClockBegin": "00000000",
                "rClockEnd": "ffffffff",
                "recoveryLog": "recovery/ns/t/00000000-00000000",
                **(spec or {}),
            },
            "status": status,
        }
    )


def entry(ordinal: int | str, state: str = "STANDBY", head: int | None = 1000) -> dict[str, Any]:
    pod = f"{NAME}-{ordinal}" if isinstance(ordinal, int) else ordinal
    out: dict[str, Any] = {"pod": pod, "state": state}
    if head is not None:
        out["recoveryLogHead"] = head
    return out


PRIMARY = f"{NAME}-0"
SETTINGS_BASE = {"SHARDKEEPER_SHARD": NAME, "POD_NAME": PRIMARY, "POD_NAMESPACE": "ns"}


# --- the field -------------------------------------------------------------------------------


def test_prune_every_defaults_to_ten_minutes_and_zero_turns_pruning_off() -> None:
    # unset on the Task: the operator's --prune-every, passed as SHARDKEEPER_PRUNE_EVERY
    assert ShardTemplate().prune_every is None
    assert settings_from_env(SETTINGS_BASE).prune_every == Duration.parse("10m")
    assert interval_of(Duration.parse("10m")) == datetime.timedelta(minutes=10)
    assert interval_of(Duration.parse("0s")) is None
    for accepted in ("0s", "10s", "90m", "24h"):
        assert ShardTemplate.model_validate({"pruneEvery": accepted})
    for refused in ("1s", "9s", "24h1s"):
        with pytest.raises(ValueError, match="pruneEvery must be 0s"):
            ShardTemplate.model_validate({"pruneEvery": refused})


# --- when --------------------------------------------------------------------------------------


def test_nothing_is_due_without_a_snapshot_since_the_last_prune_or_with_pruning_off() -> None:
    assert due_at(pending=False, last_attempt=None, every=MINUTE) is None
    assert due_at(pending=False, last_attempt=T0, every=MINUTE) is None
    assert due_at(pending=True, last_attempt=T0, every=None) is None


def test_a_snapshot_makes_a_prune_due_at_once_then_at_most_once_per_interval() -> None:
    first = due_at(pending=True, last_attempt=None, every=MINUTE)
    assert first is not None
    assert first <= T0
    assert due_at(pending=True, last_attempt=T0, every=MINUTE) == T0 + MINUTE


# --- splits --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"spec": {"split": {"by": "key"}}}, "spec.split"),
        ({"spec": {"splitTargets": ["t-80000000-00000000"]}}, "t-80000000-00000000"),
        ({"spec": {"splitSource": "t-00000000-00000000x"}}, "still building"),
        ({"split_step": "CatchUp"}, "CatchUp"),
        ({"split_step": "Abort"}, "Abort"),
    ],
)
def test_a_split_in_progress_holds_pruning_back(kwargs: dict[str, Any], says: str) -> None:
    why = split_in_progress(shard(**kwargs))
    assert why is not None
    assert says in why


@pytest.mark.parametrize("step", [None, "Done", "Aborted"])
def test_no_split_or_an_ended_one_does_not(step: str | None) -> None:
    assert split_in_progress(shard(split_step=step)) is None


# --- standbys ------------------------------------------------------------------------------------


def test_without_standbys_nothing_bounds_the_plan() -> None:
    assert standby_floor(shard([entry(0, "PRIMARY", 5000)]), PRIMARY, 0) == StandbyFloor()


def test_the_lowest_standby_position_bounds_the_plan() -> None:
    replicas = [entry(0, "PRIMARY", 9000), entry(1, head=700), entry(2, head=400)]
    assert standby_floor(shard(replicas), PRIMARY, 2) == StandbyFloor(position=400)


def test_a_failed_or_idle_replica_counts_at_its_last_position() -> None:
    # it comes back from its volume, from about where it was
    replicas = [entry(1, "FAILED", 300), entry(2, "IDLE", 800)]
    assert standby_floor(shard(replicas), PRIMARY, 2) == StandbyFloor(position=300)


@pytest.mark.parametrize(
    ("replicas", "says"),
    [
        ([entry(1)], f"{NAME}-2 has not reported"),
        ([entry(1), entry(2, "BACKFILL")], "restoring"),
        ([entry(1), entry(2, "STANDBY", head=None)], "has not reported its position"),
    ],
)
def test_a_replica_whose_position_is_unknown_holds_pruning_back(
    replicas: list[dict[str, Any]], says: str
) -> None:
    floor = standby_floor(shard(replicas), PRIMARY, 2)
    assert floor.position is None
    assert floor.unknown is not None
    assert says in floor.unknown


def test_an_entry_left_behind_by_a_scale_down_is_not_waited_for() -> None:
    replicas = [entry(1, head=600), entry(3, "BACKFILL", head=None), entry(4, head=10)]
    assert standby_floor(shard(replicas), PRIMARY, 1) == StandbyFloor(position=600)


def test_the_primary_can_be_any_ordinal_and_its_own_entry_never_counts() -> None:
    replicas = [entry(0, head=500), entry(1, "PRIMARY", head=100)]
    assert standby_floor(shard(replicas), f"{NAME}-1", 1) == StandbyFloor(position=500)


def test_replicas_not_named_as_the_statefulset_names_them_count_as_reported() -> None:
    # replicas run by hand (tests/runtime): only their entries are known
    replicas = [entry("replica-0", "PRIMARY", 900), entry("replica-1", head=250)]
    assert standby_floor(shard(replicas), "replica-0", 1) == StandbyFloor(position=250)
    lone = [entry("replica-0", "PRIMARY", 900)]
    assert standby_floor(shard(lone), "replica-0", 1) == StandbyFloor()


# --- the pruner ----------------------------------------------------------------------------------


def plan(keep_from: int = 4096) -> PrunePlan:
    return PrunePlan(
        log="recovery/ns/t/00000000-00000000",
        keep_from=keep_from,
        requirements=(),
        fragments=("a", "b", "c"),
        tombstones=(),
        manifests=("m",),
        snapshot_data=("d1", "d2"),
        registrations=(),
        removed_bytes=3000,
        kept_bytes=700,
    )


class Pruned:
    """Stands in for storage.prune.prune: records its calls, or fails."""

    def __init__(self) -> None:
        self.calls: list[int | None] = []
        self.failure: Exception | None = None

    def __call__(
        self, log: RecoveryLog, *, now: datetime.datetime, retain_from: int | None
    ) -> PrunePlan:
        self.calls.append(retain_from)
        if self.failure is not None:
            raise self.failure
        return plan()


class Setup:
    def __init__(self, current: Shard | None, every: datetime.timedelta | None = MINUTE) -> None:
        self.now = T0
        self.current = current
        self.unreachable = False
        self.pruned = Pruned()
        self.observed: list[PrunePlan | None] = []
        self.changes = 0
        self.pruner = AutoPruner(
            cast(RecoveryLog, object()),
            pod=PRIMARY,
            every=every,
            hot_standbys=1,
            read_shard=self._read,
            observe=self.observed.append,
            changed=self._changed,
            clock=lambda: self.now,
            pruning=self.pruned,
        )

    def _read(self) -> Shard | None:
        if self.unreachable:
            raise ConnectionError("the API server is away")
        return self.current

    def _changed(self) -> None:
        self.changes += 1


SNAPSHOT = cast(Manifest, object())


def test_a_prune_runs_after_a_snapshot_bounded_by_the_standby_and_is_recorded() -> None:
    s = Setup(shard([entry(0, "PRIMARY", 9000), entry(1, head=2048)]))
    assert s.pruner.due() is None  # nothing to prune before a snapshot
    s.pruner.snapshot_taken(SNAPSHOT)
    assert s.pruner.due() is not None
    assert s.pruner.due() <= T0
    assert s.pruner.attempt() == plan()
    assert s.pruned.calls == [2048]
    assert s.observed == [plan()]
    assert s.changes == 1
    assert s.pruner.last == RecoveryLogPrune(
        at=T0, kept_from=4096, log_bytes=700, removed_bytes=3000, removed_objects=6
    )
    assert s.pruner.due() is None  # done until the next snapshot
    s.pruner.snapshot_taken(SNAPSHOT)
    assert s.pruner.due() == T0 + MINUTE


def test_a_split_or_an_unknown_standby_holds_it_back_until_the_next_interval() -> None:
    s = Setup(shard([entry(1, head=2048)], spec={"split": {"by": "key"}}))
    s.pruner.snapshot_taken(SNAPSHOT)
    assert s.pruner.attempt() is None
    assert s.pruned.calls == []
    assert s.pruner.due() == T0 + MINUTE  # still pending: looked at again an interval later
    s.now = T0 + MINUTE
    s.current = shard([entry(1, "BACKFILL")])
    assert s.pruner.attempt() is None
    assert s.pruned.calls == []
    s.now = T0 + 2 * MINUTE
    s.current = shard([entry(1, head=64)])
    assert s.pruner.attempt() == plan()
    assert s.pruned.calls == [64]


def test_an_unreadable_shard_holds_it_back() -> None:
    s = Setup(None)
    s.pruner.snapshot_taken(SNAPSHOT)
    assert s.pruner.attempt() is None
    assert s.pruned.calls == []
    assert s.pruner.due() == T0 + MINUTE
    s.unreachable = True
    s.now = T0 + MINUTE
    assert s.pruner.attempt() is None  # no exception: the thread goes on
    assert s.pruned.calls == []


def test_a_failed_prune_is_counted_and_tried_again_an_interval_later() -> None:
    s = Setup(shard([entry(1, head=2048)]))
    s.pruned.failure = errors.StorageError("access denied")
    s.pruner.snapshot_taken(SNAPSHOT)
    assert s.pruner.attempt() is None  # no exception: the primary goes on
    assert s.observed == [None]
    assert s.pruner.last is None
    assert s.pruner.due() == T0 + MINUTE
    s.now = T0 + MINUTE
    s.pruned.failure = None
    assert s.pruner.attempt() == plan()
    assert s.observed == [None, plan()]


def test_the_last_prune_in_the_status_counts_as_the_last_attempt() -> None:
    before = RecoveryLogPrune(at=T0 - datetime.timedelta(seconds=20), log_bytes=5)
    s = Setup(shard([entry(1)]))
    s.pruner = AutoPruner(
        cast(RecoveryLog, object()),
        pod=PRIMARY,
        every=MINUTE,
        hot_standbys=1,
        read_shard=lambda: s.current,
        observe=s.observed.append,
        changed=lambda: None,
        last=before,
        clock=lambda: s.now,
        pruning=s.pruned,
    )
    assert s.pruner.last == before
    s.pruner.snapshot_taken(SNAPSHOT)
    assert s.pruner.due() == before.at + MINUTE


def test_the_thread_prunes_once_a_snapshot_lands_and_stops() -> None:
    s = Setup(shard([entry(1, head=100)]))
    s.pruner.start()
    try:
        s.pruner.snapshot_taken(SNAPSHOT)
        wait_for(lambda: s.pruned.calls, timeout=10, what="a prune after the snapshot")
    finally:
        s.pruner.stop(timeout=10)
    assert s.pruned.calls == [100]
    assert not any(t.name == "prune" and t.is_alive() for t in threading.enumerate())


def test_with_pruning_off_no_thread_runs() -> None:
    s = Setup(shard(), every=None)
    s.pruner.start()
    s.pruner.snapshot_taken(SNAPSHOT)
    assert s.pruner.due() is None
    s.pruner.stop()
    assert s.pruned.calls == []


# --- the status --------------------------------------------------------------------------------


def test_the_last_prune_goes_into_the_primarys_status_at_once() -> None:
    record = RecoveryLogPrune(
        at=T0, kept_from=4096, log_bytes=700, removed_bytes=3000, removed_objects=6
    )
    before = primary_apply("ns", NAME, PrimaryStatus(PRIMARY, 3, recovery_log_head=9000))
    after = primary_apply(
        "ns", NAME, PrimaryStatus(PRIMARY, 3, recovery_log_head=9000, last_prune=record)
    )
    assert after["status"]["lastPrune"] == {
        "at": "2026-12-07T12:00:00Z",
        "keptFrom": 4096,
        "logBytes": 700,
        "removedBytes": 3000,
        "removedObjects": 6,
    }
    assert "lastPrune" not in before["status"]
    assert is_urgent(before, after)
    moved = primary_apply(
        "ns", NAME, PrimaryStatus(PRIMARY, 3, recovery_log_head=9500, last_prune=record)
    )
    assert not is_urgent(after, moved)
