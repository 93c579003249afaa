"""Status derived from observed state: Shard phase and conditions from what the replicas
report and the StatefulSet; Task counts and conditions from its Shards and references;
StorageMapping and Collection conditions; and the Events that transitions deserve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests.unit.controller.models import Lookup, collection, mapping, ready_mapping, shard_of, task

from shardkeeper.api.meta import ConditionStatus, find_condition
from shardkeeper.api.shard import ReplicaState, Shard, ShardPhase, SplitProgress, SplitStep
from shardkeeper.api.task import SplitBy
from shardkeeper.controller.engine.events import WARNING, for_changes
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.references import (
    Problem,
    runtime_secret_names,
    task_problems,
)
from shardkeeper.controller.specs.status import (
    StoreCheck,
    collection_verdicts,
    mapping_verdicts,
    shard_verdict,
    task_verdict,
)
from shardkeeper.controller.specs.views import StatefulSetView

SHARD = "customer-totals-00000000-00000000"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def sts(
    replicas: int = 2, ready: int = 2, updated: int | None = None, current: int | None = None
) -> StatefulSetView:
    current = replicas if current is None else current
    return StatefulSetView(
        name=SHARD,
        namespace="team-a",
        uid="u",
        applied_hash="h",
        replicas=replicas,
        generation=1,
        observed_generation=1,
        current=current,
        ready=ready,
        updated=current if updated is None else updated,
        update_revision="rev-2",
    )


def replica(ordinal: int, state: str, message: str = "") -> dict[str, Any]:
    return {"pod": f"{SHARD}-{ordinal}", "state": state, "epoch": 3, "message": message}


def shard(
    *replicas: dict[str, Any], primary: str | None = None, **task_changes: Any
) -> tuple[Shard, Any]:
    owner = task(**task_changes)
    status: dict[str, Any] = {"replicas": list(replicas), "epoch": 3}
    if primary is not None:
        status["primary"] = primary
    return shard_of(owner, status), owner


def by_type(verdicts: tuple[cond.ConditionValue, ...]) -> dict[str, cond.ConditionValue]:
    return {v.type: v for v in verdicts}


def test_running_with_a_primary_and_its_standby() -> None:
    found, owner = shard(replica(0, "PRIMARY"), replica(1, "STANDBY"), primary=f"{SHARD}-0")
    verdict = shard_verdict(found, owner, sts())
    assert verdict.phase == ShardPhase.RUNNING
    v = by_type(verdict.verdicts)
    assert v["Ready"].status == ConditionStatus.TRUE
    assert f"{SHARD}-0 is primary at epoch 3" in v["Ready"].message
    assert v["Progressing"].status == ConditionStatus.FALSE
    assert v["Degraded"].status == ConditionStatus.FALSE


def test_a_primary_without_its_hot_standby_is_degraded() -> None:
    found, owner = shard(replica(0, "PRIMARY"), replica(1, "BACKFILL"), primary=f"{SHARD}-0")
    v = by_type(shard_verdict(found, owner, sts(ready=1)).verdicts)
    assert v["Ready"].status == ConditionStatus.TRUE
    assert (v["Degraded"].status, v["Degraded"].reason) == (
        ConditionStatus.TRUE,
        "StandbysNotReady",
    )


def test_a_stale_primary_entry_does_not_count_once_another_pod_is_primary() -> None:
    # the old primary died (its entry still says PRIMARY); pod 1 took over and named itself
    found, owner = shard(replica(0, "PRIMARY"), replica(1, "BACKFILL"), primary=f"{SHARD}-1")
    verdict = shard_verdict(found, owner, sts(ready=0))
    assert verdict.phase == ShardPhase.RECOVERING
    assert by_type(verdict.verdicts)["Ready"].reason == "Recovering"


def test_failed_replicas_make_the_shard_failed_and_degraded_with_their_message() -> None:
    found, owner = shard(
        replica(0, "FAILED", "Secret s3-credentials not found"), replica(1, "IDLE")
    )
    verdict = shard_verdict(found, owner, sts(ready=0))
    assert verdict.phase == ShardPhase.FAILED
    v = by_type(verdict.verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.FALSE, "ReplicaFailed")
    assert (v["Degraded"].status, v["Degraded"].reason) == (ConditionStatus.TRUE, "ReplicaFailed")
    assert "Secret s3-credentials not found" in v["Degraded"].message


def test_pending_until_a_replica_reports() -> None:
    found, owner = shard()
    verdict = shard_verdict(found, owner, None)
    assert verdict.phase == ShardPhase.PENDING
    v = by_type(verdict.verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.FALSE, "PodsStarting")
    assert (v["Progressing"].status, v["Progressing"].reason) == (ConditionStatus.TRUE, "Creating")


def test_disabled_is_ready_and_stops_progressing_once_the_pods_are_gone() -> None:
    found, owner = shard(
        replica(0, "PRIMARY"), primary=f"{SHARD}-0", **{"spec.shards.disable": True}
    )
    stopping = shard_verdict(found, owner, sts(replicas=0, ready=1, current=1))
    assert stopping.phase == ShardPhase.DISABLED
    v = by_type(stopping.verdicts)
    assert v["Ready"].status == ConditionStatus.TRUE
    assert (v["Progressing"].status, v["Progressing"].reason) == (ConditionStatus.TRUE, "Stopping")
    stopped = by_type(shard_verdict(found, owner, sts(replicas=0, ready=0, current=0)).verdicts)
    assert stopped["Progressing"].status == ConditionStatus.FALSE


def test_entries_of_scaled_down_pods_are_ignored() -> None:
    found, owner = shard(replica(0, "PRIMARY"), replica(5, "FAILED", "old"), primary=f"{SHARD}-0")
    verdict = shard_verdict(found, owner, sts())
    assert verdict.phase == ShardPhase.RUNNING


def test_a_roll_in_progress_is_progressing() -> None:
    found, owner = shard(replica(0, "PRIMARY"), replica(1, "STANDBY"), primary=f"{SHARD}-0")
    v = by_type(shard_verdict(found, owner, sts(updated=1)).verdicts)
    assert (v["Progressing"].status, v["Progressing"].reason) == (
        ConditionStatus.TRUE,
        "RollingUpdate",
    )
    assert v["Ready"].status == ConditionStatus.TRUE


def with_phase(phase: ShardPhase, degraded: bool = False) -> Shard:
    found, _ = shard()
    found.status.phase = phase
    conditions = cond.merge(
        [],
        [
            cond.ready(phase in (ShardPhase.RUNNING, ShardPhase.DISABLED), "X", "shard ready?"),
            cond.degraded(degraded, "ReplicaFailed" if degraded else "Healthy", "pod-0: boom"),
            cond.progressing(False, "Stable", ""),
        ],
        generation=1,
        now=NOW,
    )
    found.status.conditions = conditions
    return found


def test_task_counts_its_shards_by_phase_and_is_ready_when_all_run() -> None:
    owner = task()
    verdict = task_verdict(
        owner, [with_phase(ShardPhase.RUNNING), with_phase(ShardPhase.RUNNING)], []
    )
    assert (verdict.shards, verdict.ready_shards) == (2, 2)
    assert verdict.by_phase == {"Running": 2}
    v = by_type(verdict.verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.TRUE, "Running")


def test_task_with_a_failed_shard() -> None:
    verdict = task_verdict(
        task(), [with_phase(ShardPhase.RUNNING), with_phase(ShardPhase.FAILED, degraded=True)], []
    )
    assert verdict.by_phase == {"Failed": 1, "Running": 1}
    assert verdict.ready_shards == 1
    v = by_type(verdict.verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.FALSE, "ShardFailed")
    assert (v["Degraded"].status, v["Degraded"].reason) == (ConditionStatus.TRUE, "ShardDegraded")
    assert "pod-0: boom" in v["Degraded"].message


def test_task_that_cannot_start_says_why_and_starts_nothing() -> None:
    problems = [Problem("CollectionNotFound", "Collection orders (a source) does not exist")]
    v = by_type(task_verdict(task(), [], problems).verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.FALSE, "CollectionNotFound")
    assert (v["Degraded"].status, v["Degraded"].reason) == (
        ConditionStatus.TRUE,
        "CollectionNotFound",
    )
    assert (v["Progressing"].status, v["Progressing"].reason) == (
        ConditionStatus.FALSE,
        "CollectionNotFound",
    )


def test_waiting_for_a_mapping_check_is_progress_not_degradation() -> None:
    problems = [Problem("StorageMappingNotReady", "not checked yet", waiting=True)]
    v = by_type(task_verdict(task(), [], problems).verdicts)
    assert v["Degraded"].status == ConditionStatus.FALSE
    assert v["Progressing"].status == ConditionStatus.TRUE


def test_disabled_task_is_ready_once_its_shards_are_disabled() -> None:
    owner = task(**{"spec.shards.disable": True})
    v = by_type(task_verdict(owner, [with_phase(ShardPhase.DISABLED)], []).verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.TRUE, "Disabled")
    v = by_type(task_verdict(owner, [with_phase(ShardPhase.RUNNING)], []).verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.FALSE, "Disabling")


def test_deleting_task() -> None:
    v = by_type(task_verdict(task(), [with_phase(ShardPhase.RUNNING)], [], deleting=True).verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.FALSE, "Deleting")


# --- references ---------------------------------------------------------------------------


def test_references_of_a_ready_task_are_fine() -> None:
    lookup = Lookup([ready_mapping()], [collection("orders"), collection("customer-totals")])
    assert task_problems(task(), lookup) == []


@pytest.mark.parametrize(
    ("lookup", "reason"),
    [
        (
            Lookup([], [collection("orders"), collection("customer-totals")]),
            "StorageMappingNotFound",
        ),
        (
            Lookup([mapping()], [collection("orders"), collection("customer-totals")]),
            "StorageMappingNotReady",
        ),
        (
            Lookup(
                [ready_mapping(False, "SecretNotFound")],
                [collection("orders"), collection("customer-totals")],
            ),
            "StorageMappingNotReady",
        ),
        (Lookup([ready_mapping()], [collection("customer-totals")]), "CollectionNotFound"),
    ],
)
def test_each_missing_or_unready_reference_is_named(lookup: Lookup, reason: str) -> None:
    problems = task_problems(task(), lookup)
    assert [p.reason for p in problems] == [reason]


def test_a_mapping_that_failed_its_check_says_why_in_the_task() -> None:
    lookup = Lookup(
        [ready_mapping(False, "SecretNotFound")],
        [collection("orders"), collection("customer-totals")],
    )
    (problem,) = task_problems(task(), lookup)
    assert "SecretNotFound" in problem.message
    assert not problem.waiting


def test_a_secret_the_task_names_must_exist_with_its_key() -> None:
    lookup = Lookup([ready_mapping()], [collection("customer-totals")])
    missing = task_problems(task("totals-to-postgres"), lookup)
    assert [p.reason for p in missing] == ["SecretNotFound"]
    assert "postgres-password" in missing[0].message
    lookup.secrets["postgres-password"] = frozenset({"other"})
    assert [p.reason for p in task_problems(task("totals-to-postgres"), lookup)] == [
        "SecretKeyNotFound"
    ]
    lookup.secrets["postgres-password"] = frozenset({"password"})
    assert task_problems(task("totals-to-postgres"), lookup) == []


def test_the_runtime_may_read_the_credentials_of_every_mapping_it_uses_and_the_tasks_secrets() -> (
    None
):
    other = ready_mapping()
    other.metadata.name = "archive"
    other.spec.stores[0].credentials_secret_ref.name = "archive-keys"  # type: ignore[union-attr]
    lookup = Lookup(
        [ready_mapping(), other],
        [collection("customer-totals", **{"spec.storageMapping": "archive"})],
    )
    names = runtime_secret_names(task("totals-to-postgres"), lookup)
    assert names == ["archive-keys", "postgres-password", "s3-credentials"]


# --- StorageMapping and Collection --------------------------------------------------------


def check(ok: bool = True, reason: str = "BucketReady", bucket: str = "b1") -> StoreCheck:
    return StoreCheck(bucket, "p/", ok, ok, reason, "found so", NOW)


def test_mapping_is_ready_when_its_first_store_is() -> None:
    v = by_type(mapping_verdicts([check(), check(False, "AccessDenied", "b2")]))
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.TRUE, "BucketReady")
    assert (v["Degraded"].status, v["Degraded"].reason) == (ConditionStatus.TRUE, "AccessDenied")
    assert "s3://b2/p/" in v["Degraded"].message


def test_mapping_is_not_ready_with_the_first_stores_reason() -> None:
    v = by_type(mapping_verdicts([check(False, "BucketNotFound")]))
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.FALSE, "BucketNotFound")


def test_collection_follows_its_mapping() -> None:
    assert by_type(collection_verdicts(None))["Ready"].status == ConditionStatus.TRUE
    v = by_type(collection_verdicts(Problem("StorageMappingNotFound", "no local")))
    assert (v["Ready"].status, v["Ready"].reason) == (
        ConditionStatus.FALSE,
        "StorageMappingNotFound",
    )
    assert v["Degraded"].status == ConditionStatus.TRUE


# --- conditions and events -------------------------------------------------------------------


def test_transition_time_moves_only_with_the_status() -> None:
    first = cond.merge([], [cond.ready(False, "PodsStarting", "0 of 1")], generation=1, now=NOW)
    later = datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
    same = cond.merge(first, [cond.ready(False, "Recovering", "x")], generation=2, now=later)
    ready = find_condition(same, "Ready")
    assert ready is not None
    assert (ready.last_transition_time, ready.reason, ready.observed_generation) == (
        NOW,
        "Recovering",
        2,
    )
    moved = find_condition(
        cond.merge(same, [cond.ready(True, "Running", "")], generation=2, now=later), "Ready"
    )
    assert moved is not None
    assert moved.last_transition_time == later


def test_reasons_must_be_camel_case_words() -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        cond.ready(True, "not camel", "")


def test_events_for_transitions_a_person_cares_about() -> None:
    before = cond.merge(
        [],
        [
            cond.ready(True, "Running", ""),
            cond.degraded(False, "Healthy", ""),
            cond.progressing(True, "RollingUpdate", ""),
        ],
        generation=1,
        now=NOW,
    )
    after = [
        cond.ready(False, "ReplicaFailed", "pod-0: boom"),
        cond.degraded(True, "ReplicaFailed", "pod-0: boom"),
        cond.progressing(False, "Stable", ""),
    ]
    notices = for_changes(cond.changes(before, after))
    assert [(n.type, n.reason) for n in notices] == [
        (WARNING, "ReplicaFailed"),
        (WARNING, "ReplicaFailed"),
        ("Normal", "RollComplete"),
    ]
    # nothing moved, nothing to say; and a new object's first "not ready" is no news
    assert for_changes(cond.changes(before, [cond.ready(True, "Running", "other text")])) == []
    assert for_changes(cond.changes([], [cond.ready(False, "PodsStarting", "")])) == []


def test_a_roll_lasts_until_the_last_replaced_pod_is_ready_again() -> None:
    found, owner = shard(replica(0, "BACKFILL"), replica(1, "STANDBY"), primary=f"{SHARD}-0")
    found.status.conditions = cond.merge(
        [], [cond.progressing(True, "RollingUpdate", "2 of 2")], generation=1, now=NOW
    )
    v = by_type(shard_verdict(found, owner, sts(ready=1)).verdicts)
    assert (v["Progressing"].status, v["Progressing"].reason) == (
        ConditionStatus.TRUE,
        "RollingUpdate",
    )
    found.status.replicas[0].state = ReplicaState.PRIMARY
    v = by_type(shard_verdict(found, owner, sts(ready=2)).verdicts)
    assert (v["Progressing"].status, v["Progressing"].reason) == (ConditionStatus.FALSE, "Stable")


# --- splits -------------------------------------------------------------------------------


def test_a_child_that_a_split_still_builds_does_not_make_the_task_unready() -> None:
    parent = with_phase(ShardPhase.SPLITTING)
    parent.status.split = SplitProgress(step=SplitStep.CATCH_UP, by=SplitBy.KEY, children=["c"])
    child = with_phase(ShardPhase.RECOVERING)
    child.spec.split_source = parent.metadata.name
    verdict = task_verdict(task(), [parent, child], [])
    assert verdict.shards == 2, "children count"
    v = by_type(verdict.verdicts)
    assert (v["Ready"].status, v["Ready"].reason) == (ConditionStatus.TRUE, "Running")
    assert (v["Progressing"].status, v["Progressing"].reason) == (ConditionStatus.TRUE, "Splitting")


def test_a_lowered_min_shards_says_shards_are_never_merged() -> None:
    owner = task(**{"spec.shards.scaling": {"minShards": 1}})
    settled = [with_phase(ShardPhase.RUNNING) for _ in range(3)]
    for s in settled:
        s.status.conditions = cond.merge(
            [], [cond.progressing(False, "Stable", "")], generation=1, now=NOW
        )
    v = by_type(task_verdict(owner, settled, []).verdicts)
    assert (v["Progressing"].status, v["Progressing"].reason) == (
        ConditionStatus.FALSE,
        "ShardsNotMerged",
    )
    assert v["Progressing"].message == (
        "minShards is 1 but the task has 3 shards; shards are never merged"
    )


def test_a_splitting_shard_is_progressing_and_its_child_is_being_built() -> None:
    found, owner = shard(replica(0, "PRIMARY"), replica(1, "STANDBY"), primary=f"{SHARD}-0")
    found.status.split = SplitProgress(step=SplitStep.HAND_OFF, by=SplitBy.KEY)
    verdict = shard_verdict(found, owner, sts())
    assert verdict.phase == ShardPhase.SPLITTING
    progressing = by_type(verdict.verdicts)["Progressing"]
    assert (progressing.reason, progressing.message) == (
        "Splitting",
        "a split of this shard is at step HandOff",
    )
    child, owner = shard(replica(0, "STANDBY"))
    child.spec.split_source = "parent"
    assert by_type(shard_verdict(child, owner, sts()).verdicts)["Progressing"].reason == (
        "BeingBuilt"
    )


def test_reconciling_follows_progressing_and_stalled_is_not_ready_and_degraded() -> None:
    def derived(verdicts: list[cond.ConditionValue]) -> dict[str, tuple[str, str]]:
        merged = cond.merge([], verdicts, generation=3, now=NOW)
        assert all(c.observed_generation == 3 for c in merged)
        return {
            c.type: (str(c.status), c.reason)
            for c in merged
            if c.type in (cond.RECONCILING, cond.STALLED)
        }

    rolling = [
        cond.ready(True, "Running", ""),
        cond.progressing(True, "RollingUpdate", "1 of 2"),
        cond.degraded(True, "StandbysNotReady", "0 of 1"),
    ]
    assert derived(rolling) == {
        "Reconciling": ("True", "RollingUpdate"),
        "Stalled": ("False", "NotStalled"),
    }, "a degraded shard whose primary runs is not stalled"
    refused = [
        cond.ready(False, cond.REFUSED, "x"),
        cond.progressing(False, "Stable", ""),
        cond.degraded(True, cond.REFUSED, "the API server refused StatefulSet s (422): x"),
    ]
    assert derived(refused) == {
        "Reconciling": ("False", "Stable"),
        "Stalled": ("True", cond.REFUSED),
    }
    starting = [cond.ready(False, "PodsStarting", ""), cond.degraded(False, "Healthy", "")]
    assert derived(starting) == {"Stalled": ("False", "NotStalled")}
    assert derived([cond.ready(True, "Running", "")]) == {}, "nothing to derive from"
