"""What the Shard reconcile writes for a split, step by step, over the fake API server: a
split from spec.split to Done with the child's status faked as the runtime would report
it, an abort that deletes the child, a refusal, and the Task's scaling asking for splits."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from tests.support.fake_api import Request
from tests.unit.controller.seeded import NAMESPACE, SHARD, TASK, Cluster, run

from shardkeeper.api.shard import Shard, SplitStep
from shardkeeper.controller.engine.queue import Key
from shardkeeper.controller.engine.triggers import Seen, WatchEvent, keys_for
from shardkeeper.controller.reconcilers.shard import ShardReconciler
from shardkeeper.controller.reconcilers.split import SplitPass
from shardkeeper.controller.specs import names

CHILD = "customer-totals-80000000-00000000"
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def live(cluster: Cluster, name: str, *replicas: dict[str, Any], primary: str | None) -> None:
    """The StatefulSet of ``name`` ready and its replicas reporting, as the runtime would."""
    sts = cluster.find("StatefulSet", name)
    cluster.kube.set_status(
        "StatefulSet",
        NAMESPACE,
        name,
        {
            "observedGeneration": sts["metadata"]["generation"],
            "replicas": 2,
            "readyReplicas": 2,
            "updatedReplicas": 2,
            "updateRevision": "r1",
        },
    )
    status: dict[str, Any] = {"replicas": list(replicas)}
    if primary is not None:
        status["primary"] = primary
    cluster.kube.set_status("Shard", NAMESPACE, name, status)
    cluster.sync()


def ask(cluster: Cluster, name: str = SHARD, by: str | None = "key") -> None:
    """Set (or remove) spec.split as a person would."""
    shard = cluster.find("Shard", name)
    if by is None:
        shard["spec"].pop("split", None)
    else:
        shard["spec"]["split"] = {"by": by}
    cluster.kube.put(shard)
    cluster.sync()


async def running_parent(cluster: Cluster) -> Clock:
    await cluster.running_task()
    live(
        cluster,
        SHARD,
        {"pod": f"{SHARD}-0", "state": "PRIMARY"},
        {"pod": f"{SHARD}-1", "state": "STANDBY"},
        primary=f"{SHARD}-0",
    )
    clock = Clock()
    cluster.shards.splits.clock = clock
    await cluster.reconcile_shard()
    assert cluster.find("Shard", SHARD)["status"]["phase"] == "Running"
    cluster.kube.clear_log()
    return clock


def split_of(cluster: Cluster, name: str = SHARD) -> dict[str, Any]:
    return dict(cluster.find("Shard", name)["status"].get("split", {}))


async def step(cluster: Cluster) -> list[Request]:
    """One reconcile of the parent; its writes (no Events)."""
    cluster.kube.clear_log()
    await cluster.reconcile_shard()
    return cluster.kube.writes(events=False)


def test_a_split_runs_from_spec_split_to_done_one_guarded_write_at_a_time() -> None:
    async def body() -> None:
        cluster = Cluster()
        clock = await running_parent(cluster)
        ask(cluster)

        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        split = split_of(cluster)
        assert (split["step"], split["pivot"], split["children"]) == ("Plan", "80000000", [CHILD])
        accepted = cluster.condition("Shard", SHARD, "SplitAccepted")
        assert (accepted["status"], accepted["reason"]) == ("True", "Accepted")

        assert await step(cluster) == [Request("create", "Shard", CHILD)]
        child = cluster.find("Shard", CHILD)
        assert child["spec"]["splitSource"] == SHARD
        assert (child["spec"]["keyBegin"], child["spec"]["keyEnd"]) == ("80000000", "ffffffff")
        assert child["spec"]["recoveryLog"].endswith("/customer-totals/80000000-00000000")
        assert [o["kind"] for o in child["metadata"]["ownerReferences"]] == ["Task"]
        assert child["metadata"]["labels"][names.SHARD_LABEL] == CHILD

        generation = cluster.find("Shard", SHARD)["metadata"]["generation"]
        assert await step(cluster) == [Request("patch", "Shard", SHARD)]
        patch = cluster.kube.bodies("patch", "Shard")[-1]
        assert patch[0] == {"op": "test", "path": "/metadata/generation", "value": generation}
        assert cluster.find("Shard", SHARD)["spec"]["splitTargets"] == [CHILD]

        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert split_of(cluster)["step"] == "Children"

        # the child's own reconcile: its workload may read its parent
        await cluster.reconcile_shard(CHILD)
        rules = cluster.find("Role", f"{CHILD}-runtime")["rules"]
        shards_rule = next(r for r in rules if r["resources"] == ["shards"])
        assert shards_rule["resourceNames"] == [CHILD, SHARD]
        # the parent's workload did not change with its spec
        assert cluster.kube.writes_of("StatefulSet") == [Request("apply", "StatefulSet", CHILD)]

        assert await step(cluster) == [], "no replica of the child tails yet"
        standby = {"pod": f"{CHILD}-0", "state": "STANDBY", "recoveryLogHead": 10}
        live(cluster, CHILD, {**standby, "lag": 50 << 20}, primary=None)
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert split_of(cluster)["step"] == "CatchUp"
        assert await step(cluster) == [], "50 MiB behind"

        live(cluster, CHILD, {**standby, "lag": 1 << 20}, primary=None)
        clock.now += timedelta(minutes=2)
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert split_of(cluster)["step"] == "HandOff"
        assert cluster.find("Shard", SHARD)["spec"]["keyEnd"] == "ffffffff", "not yet narrowed"

        assert await step(cluster) == [Request("patch", "Shard", SHARD)]
        assert cluster.find("Shard", SHARD)["spec"]["keyEnd"] == "7fffffff"
        # the new generation goes into observedGeneration; the split waits for the fork
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert split_of(cluster)["step"] == "HandOff"
        assert await step(cluster) == []
        # removing spec.split now changes nothing but the message
        ask(cluster, by=None)
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert "only rolls forward" in split_of(cluster)["message"]
        assert split_of(cluster)["step"] == "HandOff"

        primary = {"pod": f"{CHILD}-0", "state": "PRIMARY"}
        live(cluster, CHILD, primary, primary=f"{CHILD}-0")
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert split_of(cluster)["step"] == "Finish"
        assert await step(cluster) == [Request("patch", "Shard", CHILD)]
        assert "splitSource" not in cluster.find("Shard", CHILD)["spec"]
        assert await step(cluster) == [Request("patch", "Shard", SHARD)]
        spec = cluster.find("Shard", SHARD)["spec"]
        assert "splitTargets" not in spec
        assert "split" not in spec
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        split = split_of(cluster)
        assert split["step"] == "Done"
        assert [s["step"] for s in split["steps"]] == [
            "Plan",
            "Children",
            "CatchUp",
            "HandOff",
            "Finish",
            "Done",
        ]
        assert await step(cluster) == []

        reasons = [e[1] for e in cluster.kube.events() if e[1].startswith("Split")]
        assert reasons == [
            "SplitPlanned",
            "SplitChildrenCreated",
            "SplitCatchingUp",
            "SplitHandOff",
            "SplitFinished",
        ]
        # the child's Role no longer names the parent once splitSource is gone
        await cluster.reconcile_shard(CHILD)
        rules = cluster.find("Role", f"{CHILD}-runtime")["rules"]
        assert next(r for r in rules if r["resources"] == ["shards"])["resourceNames"] == [CHILD]

    run(body)


def test_a_step_is_not_repeated_by_a_pass_before_the_cache_sees_it() -> None:
    async def body() -> None:
        cluster = Cluster()
        await running_parent(cluster)
        ask(cluster)
        await cluster.shards.reconcile(NAMESPACE, SHARD)  # Plan, not synced
        await cluster.shards.reconcile(NAMESPACE, SHARD)
        await cluster.recorder.flush()
        writes = cluster.kube.writes(events=False)
        assert writes == [
            Request("apply/status", "Shard", SHARD),
            Request("create", "Shard", CHILD),
        ]
        cluster.kube.clear_log()
        await cluster.shards.reconcile(NAMESPACE, SHARD)  # still unsynced: no second create
        assert cluster.kube.writes(events=False) == []

    run(body)


def test_a_removed_request_aborts_and_deletes_the_child() -> None:
    async def body() -> None:
        cluster = Cluster()
        await running_parent(cluster)
        ask(cluster)
        for _ in range(4):  # Plan, child, targets, Children
            await step(cluster)
        await cluster.reconcile_shard(CHILD)
        assert cluster.kube.find("StatefulSet", NAMESPACE, CHILD) is not None
        ask(cluster, by=None)
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert split_of(cluster)["step"] == "Abort"
        assert await step(cluster) == [Request("delete", "Shard", CHILD)]
        assert cluster.kube.bodies("delete", "Shard")[-1]["propagation"] == "Foreground"
        assert cluster.kube.find("Shard", NAMESPACE, CHILD) is None
        assert cluster.kube.find("StatefulSet", NAMESPACE, CHILD) is None, "owned, so gone"
        assert await step(cluster) == [Request("patch", "Shard", SHARD)]
        assert "splitTargets" not in cluster.find("Shard", SHARD)["spec"]
        assert await step(cluster) == [Request("apply/status", "Shard", SHARD)]
        assert split_of(cluster)["step"] == "Aborted"
        assert cluster.find("Shard", SHARD)["spec"]["keyEnd"] == "ffffffff"
        assert ("Normal", "SplitAborted", SHARD) in cluster.kube.events()

    run(body)


def test_the_catch_up_timeout_aborts_and_clears_the_request() -> None:
    async def body() -> None:
        cluster = Cluster()
        clock = await running_parent(cluster)
        ask(cluster)
        for _ in range(4):
            await step(cluster)
        assert split_of(cluster)["step"] == "Children"
        cluster.kube.clear_log()
        waited = await cluster.shards.reconcile(NAMESPACE, SHARD)
        assert waited is not None
        assert 590 <= waited <= 600, "looked at again when the timeout is due"
        clock.now += timedelta(minutes=10)
        await step(cluster)
        assert split_of(cluster)["step"] == "Abort"
        for _ in range(3):
            await step(cluster)
        assert split_of(cluster)["step"] == "Aborted"
        assert "split" not in cluster.find("Shard", SHARD)["spec"], "not retried by itself"
        assert ("Warning", "SplitAborted", SHARD) in cluster.kube.events()

    run(body)


def test_a_split_of_a_shard_that_is_not_ready_is_refused_until_it_is() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        ask(cluster)
        cluster.kube.clear_log()
        await cluster.reconcile_shard()
        accepted = cluster.condition("Shard", SHARD, "SplitAccepted")
        assert (accepted["status"], accepted["reason"]) == ("False", "NotReady")
        assert ("Warning", "SplitRefused", SHARD) in cluster.kube.events()
        assert "split" not in cluster.find("Shard", SHARD)["status"]
        assert cluster.find("Shard", SHARD)["spec"]["split"] == {"by": "key"}, "still asked"
        live(cluster, SHARD, {"pod": f"{SHARD}-0", "state": "PRIMARY"}, primary=f"{SHARD}-0")
        await cluster.reconcile_shard()  # the phase becomes Running
        await cluster.reconcile_shard()
        assert split_of(cluster)["step"] == "Plan"

    run(body)


def test_min_shards_asks_the_shard_to_split_as_a_person_would() -> None:
    async def body() -> None:
        cluster = Cluster()
        await running_parent(cluster)
        task = cluster.find("Task", TASK)
        task["spec"]["shards"]["scaling"]["minShards"] = 2
        cluster.kube.put(task)
        cluster.sync()
        cluster.kube.clear_log()
        await cluster.reconcile_task()
        assert Request("patch", "Shard", SHARD) in cluster.kube.writes()
        ops = cluster.kube.bodies("patch", "Shard")[-1]
        assert ops[-1] == {"op": "add", "path": "/spec/split", "value": {"by": "key"}}
        assert cluster.find("Shard", SHARD)["spec"]["split"] == {"by": "key"}
        assert ("Normal", "SplitRequested", TASK) in cluster.kube.events()
        cluster.kube.clear_log()
        await cluster.reconcile_task()
        assert Request("patch", "Shard", SHARD) not in cluster.kube.writes(), "asked once"
        await cluster.reconcile_shard()
        assert split_of(cluster)["step"] == "Plan"
        await cluster.reconcile_task()
        progressing = cluster.condition("Task", TASK, "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("True", "Splitting")

    run(body)


def test_a_concurrent_spec_change_fails_the_guarded_patch_and_is_retried() -> None:
    async def body() -> None:
        cluster = Cluster()
        await running_parent(cluster)
        ask(cluster)
        await step(cluster)  # Plan
        await step(cluster)  # child
        # someone changes the spec after the cache saw it
        shard = cluster.find("Shard", SHARD)
        shard["metadata"]["labels"]["team"] = "x"
        shard["spec"]["split"] = {"by": "rClock"}
        cluster.kube.put(shard)
        cluster.kube.clear_log()
        assert await cluster.shards.reconcile(NAMESPACE, SHARD) is not None
        await cluster.settle()
        assert "splitTargets" not in cluster.find("Shard", SHARD)["spec"], "refused (422)"
        assert Request("patch", "Shard", SHARD) in await step(cluster)
        assert cluster.find("Shard", SHARD)["spec"]["splitTargets"] == [CHILD]

    run(body)


def test_the_operator_status_write_keeps_the_split_record() -> None:
    async def body() -> None:
        cluster = Cluster()
        await running_parent(cluster)
        ask(cluster)
        await step(cluster)
        # a replica's report moves the status; the next pass keeps status.split
        cluster.kube.set_status("Shard", NAMESPACE, SHARD, {"epoch": 4})
        cluster.sync()
        await step(cluster)
        assert split_of(cluster)["step"] == "Plan"

    run(body)


def test_an_operator_restarted_before_every_pass_resumes_the_split_where_it_stopped() -> None:
    async def body() -> None:
        cluster = Cluster()
        clock = await running_parent(cluster)
        ask(cluster)

        async def fresh_pass() -> list[Request]:
            cluster.shards = ShardReconciler(cluster.deps)  # no memory of earlier passes
            cluster.shards.splits.clock = clock
            return await step(cluster)

        standby = {"pod": f"{CHILD}-0", "state": "STANDBY", "recoveryLogHead": 10, "lag": 0}
        steps = []
        for _ in range(20):
            writes = await fresh_pass()
            steps.append(split_of(cluster).get("step"))
            if split_of(cluster)["step"] == "Children":
                await cluster.reconcile_shard(CHILD)  # its workload
                live(cluster, CHILD, standby, primary=None)
            if split_of(cluster)["step"] == "HandOff" and not writes:
                live(cluster, CHILD, {**standby, "state": "PRIMARY"}, primary=f"{CHILD}-0")
            if split_of(cluster)["step"] == "Done":
                break
        assert split_of(cluster)["step"] == "Done", steps
        assert cluster.find("Shard", SHARD)["spec"]["keyEnd"] == "7fffffff"
        assert [s["step"] for s in split_of(cluster)["steps"]] == [
            "Plan",
            "Children",
            "CatchUp",
            "HandOff",
            "Finish",
            "Done",
        ]
        assert len(cluster.kube.of_kind("Shard")) == 2

    run(body)


def test_auto_split_lag_is_recorded_in_the_shards_status() -> None:
    async def body() -> None:
        cluster = Cluster()  # the example Task has autoSplit: lagBytes 64 MiB
        clock = await running_parent(cluster)
        cluster.kube.set_status("Shard", NAMESPACE, SHARD, {"lag": 100 << 20})
        cluster.sync()
        await cluster.reconcile_shard()
        assert cluster.find("Shard", SHARD)["status"]["lagAboveSince"] == "2024-05-01T12:00:00Z"
        clock.now += timedelta(minutes=3)
        await cluster.reconcile_shard()
        assert cluster.find("Shard", SHARD)["status"]["lagAboveSince"] == "2024-05-01T12:00:00Z"
        cluster.kube.set_status("Shard", NAMESPACE, SHARD, {"lag": 10})
        cluster.sync()
        await cluster.reconcile_shard()
        assert "lagAboveSince" not in cluster.find("Shard", SHARD)["status"]

    run(body)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_hand_off_and_each_step_are_timed_from_the_records_in_status_split() -> None:
    async def body() -> None:
        cluster = Cluster()
        clock = await running_parent(cluster)
        ask(cluster)
        task = {"namespace": NAMESPACE, "task": TASK}
        handoff = "shardkeeper_operator_split_handoff_duration_seconds"
        steps = "shardkeeper_operator_split_step_duration_seconds"
        before = {
            "handoff": sample(f"{handoff}_sum", task),
            "handoffs": sample(f"{handoff}_count", task),
            "catch_up": sample(f"{steps}_sum", {"step": "CatchUp"}),
            "hand_off_step": sample(f"{steps}_sum", {"step": "HandOff"}),
            "within_5s": sample(f"{handoff}_bucket", {**task, "le": "5.0"}),
        }
        standby = {"pod": f"{CHILD}-0", "state": "STANDBY", "recoveryLogHead": 10, "lag": 0}
        for _ in range(4):  # Plan, child, targets, Children
            await step(cluster)
        await cluster.reconcile_shard(CHILD)
        live(cluster, CHILD, standby, primary=None)
        await step(cluster)
        assert split_of(cluster)["step"] == "CatchUp"
        clock.now += timedelta(seconds=20)
        await step(cluster)
        assert split_of(cluster)["step"] == "HandOff"
        await step(cluster)  # narrowed
        # a new operator (nothing in memory) sees the child take over 4 s after HandOff
        cluster.shards = ShardReconciler(cluster.deps)
        cluster.shards.splits.clock = clock
        clock.now += timedelta(seconds=4)
        live(cluster, CHILD, {**standby, "state": "PRIMARY"}, primary=f"{CHILD}-0")
        await step(cluster)
        assert split_of(cluster)["step"] == "Finish"

        assert sample(f"{handoff}_count", task) - before["handoffs"] == 1
        assert sample(f"{handoff}_sum", task) - before["handoff"] == 4.0
        assert sample(f"{handoff}_bucket", {**task, "le": "5.0"}) - before["within_5s"] == 1
        assert sample(f"{steps}_sum", {"step": "HandOff"}) - before["hand_off_step"] == 4.0
        assert sample(f"{steps}_sum", {"step": "CatchUp"}) - before["catch_up"] == 20.0
        for _ in range(3):  # the split fields cleared, Done
            await step(cluster)
        assert split_of(cluster)["step"] == "Done"
        assert sample(f"{handoff}_count", task) - before["handoffs"] == 1, "once per split"

    run(body)


def test_the_childs_cleared_split_source_queues_its_parent_for_the_rest_of_finish() -> None:
    async def body() -> None:
        cluster = Cluster()
        await running_parent(cluster)
        ask(cluster)
        for _ in range(4):  # Plan, child, targets, Children
            await step(cluster)
        await cluster.reconcile_shard(CHILD)
        standby = {"pod": f"{CHILD}-0", "state": "STANDBY", "recoveryLogHead": 10, "lag": 0}
        live(cluster, CHILD, standby, primary=None)
        for _ in range(3):  # CatchUp, HandOff, narrowed
            await step(cluster)
        live(cluster, CHILD, {**standby, "state": "PRIMARY"}, primary=f"{CHILD}-0")
        await step(cluster)
        assert split_of(cluster)["step"] == "Finish"
        seen = Seen()
        before = cluster.find("Shard", CHILD)
        keys_for(cluster.watch.cache, seen, WatchEvent("Shard", None, NAMESPACE, CHILD, before))
        assert await step(cluster) == [Request("patch", "Shard", CHILD)]
        after = cluster.find("Shard", CHILD)
        assert "splitSource" not in after["spec"]
        # the watch event of that write: the child names its parent no more, but the
        # parent still names it in splitTargets, and its next write waits for this
        queued = keys_for(
            cluster.watch.cache, seen, WatchEvent("Shard", "MODIFIED", NAMESPACE, CHILD, after)
        )
        assert Key("Shard", NAMESPACE, SHARD) in queued
        assert await step(cluster) == [Request("patch", "Shard", SHARD)]
        # once the parent no longer names it, the child's events are its own again
        await cluster.reconcile_shard(CHILD)
        later = copy.deepcopy(cluster.find("Shard", CHILD))
        later["metadata"]["generation"] += 1
        queued = keys_for(
            cluster.watch.cache, seen, WatchEvent("Shard", "MODIFIED", NAMESPACE, CHILD, later)
        )
        assert Key("Shard", NAMESPACE, SHARD) not in queued

    run(body)


def test_a_step_change_written_again_from_a_stale_cache_is_announced_once() -> None:
    async def body() -> None:
        cluster = Cluster()
        await running_parent(cluster)
        ask(cluster)
        task = {"namespace": NAMESPACE, "task": TASK}
        started = sample("shardkeeper_operator_splits_started_total", task)
        await step(cluster)  # Plan, announced
        shard = Shard.model_validate(cluster.find("Shard", SHARD))
        progress = shard.status.split
        assert progress is not None
        done = SplitPass(progress, entered=SplitStep.PLAN)
        # the same change, written again by passes whose cache still showed no split
        await cluster.shards.splits.announce(shard, done)
        await cluster.shards.splits.announce(shard, done)
        await cluster.recorder.flush()
        assert sample("shardkeeper_operator_splits_started_total", task) - started == 1
        planned = [e for e in cluster.kube.events() if e[1] == "SplitPlanned"]
        assert len(planned) == 1, planned

    run(body)
