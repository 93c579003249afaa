"""What the API server refuses of a Task's derived objects: it reaches the Shard's and the
Task's conditions and an Event once per distinct answer, is tried again only after a
bounded back-off (at once when the spec changes), and clears when an apply succeeds."""

from __future__ import annotations

import pytest
from tests.support.clock import Clock
from tests.support.fake_api import Request
from tests.unit.controller.seeded import SHARD, TASK, Cluster, run

from shardkeeper.api.meta import Condition
from shardkeeper.controller.reconcilers.base import RefusedApplies
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.refusals import REFUSED, Refusal, is_refusal
from shardkeeper.kube.client import ApiError

INVALID = (
    'StatefulSet.apps "customer-totals-00000000-00000000" is invalid: '
    'spec.template.spec.affinity...operator: Invalid value: "Bogus": '
    "not a valid selector operator"
)
DENIED = 'roles.rbac.authorization.k8s.io "x" is forbidden: ValidatingAdmissionPolicy denied'


@pytest.mark.parametrize(
    ("status", "message", "refused"),
    [
        (422, INVALID, True),
        (403, DENIED, True),
        (400, "bad request", True),
        (413, "too large", True),
        (500, "failed to create typed patch object (ns/x; apps/v1, Kind=StatefulSet): ...", True),
        (500, "etcdserver: request timed out", False),
        (409, "the object has been modified", False),
        (429, "too many requests", False),
        (503, "unavailable", False),
        (404, "not found", False),
    ],
)
def test_which_answers_refuse_the_object_itself(status: int, message: str, refused: bool) -> None:
    assert is_refusal(status, message) is refused


def test_a_refusal_is_tried_again_after_a_bounded_exponential_back_off() -> None:
    clock = Clock()
    memory = RefusedApplies(clock=clock)
    refusal = Refusal("StatefulSet", "s", 422, INVALID)
    delays = []
    for _ in range(10):
        delays.append(memory.refused("uid", "workload", "h1", refusal))
        standing = memory.standing("uid", "workload", "h1")
        assert standing is not None
        assert standing == (refusal, delays[-1])
        clock.now += delays[-1]
        assert memory.standing("uid", "workload", "h1") is None, "due again"
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    # another hash (a changed spec) is not held back, and starts the back-off afresh
    memory.refused("uid", "workload", "h1", refusal)
    assert memory.standing("uid", "workload", "h2") is None
    assert memory.refused("uid", "workload", "h2", refusal) == 2.0
    memory.accepted("uid", "workload")
    assert memory.standing("uid", "workload", "h2") is None


def test_a_refusal_with_another_message_is_news_and_other_reasons_are_not() -> None:
    def condition(reason: str, message: str) -> Condition:
        return Condition(
            type="Degraded",
            status="True",
            reason=reason,
            message=message,
            lastTransitionTime="2024-01-01T00:00:00Z",
        )

    refused = cond.degraded(True, REFUSED, "the API server refused Role b: no")
    assert cond.changes([condition(REFUSED, "the API server refused Role a: no")], [refused])
    assert not cond.changes([condition(REFUSED, refused.message)], [refused])
    failing = cond.degraded(True, "ReplicaFailed", "pod-1: crashed again")
    assert not cond.changes([condition("ReplicaFailed", "pod-1: crashed")], [failing])


class Events:
    """The Events posted since the last call."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen = len(cluster.kube.events())

    def new(self) -> list[tuple[str, str, str]]:
        found = self.cluster.kube.events()
        fresh, self.seen = found[self.seen :], len(found)
        return fresh


async def refused_shard(cluster: Cluster, clock: Clock) -> Events:
    """The Task and its Shard, whose StatefulSet the API server refuses once."""
    cluster.shards.refusals = RefusedApplies(clock=clock)
    cluster.add_task()
    await cluster.reconcile_task()
    cluster.kube.clear_log()
    cluster.kube.fail("apply", "StatefulSet", status=422, message=INVALID)
    return Events(cluster)


def test_a_refused_statefulset_shows_on_the_shard_and_task_and_is_not_sent_per_event() -> None:
    async def body() -> None:
        cluster, clock = Cluster(), Clock()
        events = await refused_shard(cluster, clock)
        assert await cluster.reconcile_shard() == 2.0, "tried again after the back-off"
        text = f"the API server refused StatefulSet {SHARD} (422): {INVALID}"
        for type_, status in (("Ready", "False"), ("Degraded", "True"), ("Progressing", "False")):
            found = cluster.condition("Shard", SHARD, type_)
            assert (found["status"], found["reason"], found["message"]) == (status, REFUSED, text)
        assert cluster.find("Shard", SHARD)["status"]["phase"] == "Pending"
        assert events.new() == [("Warning", REFUSED, SHARD)]

        await cluster.reconcile_task()
        for type_, status in (("Ready", "False"), ("Degraded", "True")):
            found = cluster.condition("Task", TASK, type_)
            assert (found["status"], found["reason"]) == (status, REFUSED)
            assert INVALID in found["message"]
        assert events.new() == [("Warning", REFUSED, TASK)]

        # watch events in the back-off send nothing again, and post no Event again
        cluster.kube.clear_log()
        for _ in range(3):
            assert 0 < (await cluster.reconcile_shard() or 0) <= 2.0
            await cluster.reconcile_task()
        assert cluster.kube.writes() == []
        assert events.new() == []

        # after it, the same object is sent again: refused again, the back-off doubles
        clock.now += 2.0
        cluster.kube.fail("apply", "StatefulSet", status=422, message=INVALID)
        assert await cluster.reconcile_shard() == 4.0
        assert Request("apply", "StatefulSet", SHARD) in cluster.kube.writes()
        assert events.new() == []

        # accepted at last (the policy that refused it is gone): the conditions clear
        clock.now += 4.0
        cluster.kube.clear_log()
        await cluster.reconcile_shard()
        assert cluster.find("StatefulSet", SHARD)
        await cluster.reconcile_shard()
        assert cluster.condition("Shard", SHARD, "Degraded")["status"] == "False"
        assert cluster.condition("Shard", SHARD, "Ready")["reason"] == "PodsStarting"
        await cluster.reconcile_task()
        assert cluster.condition("Task", TASK, "Degraded")["status"] == "False"
        assert cluster.condition("Task", TASK, "Ready")["reason"] == "ShardsNotReady"

    run(body)


def test_a_changed_spec_is_applied_at_once_and_another_answer_is_another_event() -> None:
    async def body() -> None:
        cluster, clock = Cluster(), Clock()
        events = await refused_shard(cluster, clock)
        await cluster.reconcile_shard()
        assert events.new() == [("Warning", REFUSED, SHARD)]
        cluster.kube.clear_log()
        other = INVALID.replace("Bogus", "Sometimes")
        cluster.add_task(**{"spec.shards.logLevel": "debug"})
        cluster.kube.fail("apply", "StatefulSet", status=422, message=other)
        assert await cluster.reconcile_shard() == 2.0, "another object: a fresh back-off"
        assert Request("apply", "StatefulSet", SHARD) in cluster.kube.writes()
        assert other in cluster.condition("Shard", SHARD, "Degraded")["message"]
        assert events.new() == [("Warning", REFUSED, SHARD)]

    run(body)


def test_a_refused_role_holds_back_the_statefulset() -> None:
    async def body() -> None:
        cluster, clock = Cluster(), Clock()
        await refused_shard(cluster, clock)
        cluster.kube.clear_failures()
        cluster.kube.fail("apply", "Role", status=403, message=DENIED)
        await cluster.reconcile_shard()
        assert Request("apply", "StatefulSet", SHARD) not in cluster.kube.writes()
        assert "Role" in cluster.condition("Shard", SHARD, "Ready")["message"]
        assert DENIED in cluster.condition("Shard", SHARD, "Ready")["message"]

    run(body)


def test_an_error_that_is_no_refusal_still_fails_the_reconcile() -> None:
    async def body() -> None:
        cluster, clock = Cluster(), Clock()
        await refused_shard(cluster, clock)
        cluster.kube.clear_failures()
        cluster.kube.fail("apply", "StatefulSet", status=503)
        with pytest.raises(ApiError):
            await cluster.reconcile_shard()
        assert cluster.kube.writes_of("Shard") == []

    run(body)


def test_a_refused_capture_service_shows_on_the_task_and_its_shards_are_still_created() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.tasks.refusals = RefusedApplies(clock=Clock())
        cluster.add_task("ingest-orders")
        cluster.kube.fail("apply", "Service", status=422, message="Service is invalid: no")
        assert await cluster.reconcile_task("ingest-orders") == 2.0
        assert cluster.kube.of_kind("Shard"), "the shards run without their Service"
        degraded = cluster.condition("Task", "ingest-orders", "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", REFUSED)
        assert "Service ingest-orders-ingest (422): Service is invalid: no" in degraded["message"]
        assert ("Warning", REFUSED, "ingest-orders") in cluster.kube.events()
        # accepted when tried again: Healthy
        cluster.tasks.refusals = RefusedApplies(clock=Clock())
        await cluster.reconcile_task("ingest-orders")
        assert cluster.condition("Task", "ingest-orders", "Degraded")["status"] == "False"

    run(body)


def test_a_refused_change_of_a_running_shard_leaves_ready_as_its_pods_say() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        cluster.shards.refusals = RefusedApplies(clock=Clock())
        ready = cluster.condition("Shard", SHARD, "Ready")
        cluster.add_task(**{"spec.shards.logLevel": "debug"})
        cluster.kube.fail("apply", "StatefulSet", status=422, message=INVALID)
        await cluster.reconcile_shard()
        assert cluster.condition("Shard", SHARD, "Ready") == ready
        degraded = cluster.condition("Shard", SHARD, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", REFUSED)

    run(body)
