"""The annotation shardkeeper.io/paused=true on a Task: the operator creates no shard,
changes no workload and starts no split for it, and says so in Progressing; removing it
resumes."""

from __future__ import annotations

from tests.unit.controller.seeded import SHARD, TASK, Cluster, run

from shardkeeper.controller.specs import conditions as cond

PAUSE = {"metadata.annotations": {cond.PAUSED_ANNOTATION: "true"}}


def paused(cluster: Cluster, kind: str, name: str) -> bool:
    found = cluster.condition(kind, name, "Progressing")
    return (found["status"], found["reason"]) == ("False", cond.PAUSED)


def test_a_paused_task_gets_no_shard_until_resumed() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task(**PAUSE)
        await cluster.reconcile_task()
        assert cluster.kube.of_kind("Shard") == []
        assert paused(cluster, "Task", TASK)
        assert cond.PAUSED_ANNOTATION in cluster.condition("Task", TASK, "Progressing")["message"]
        assert cluster.condition("Task", TASK, "Reconciling")["status"] == "False"
        cluster.add_task()
        await cluster.reconcile_task()
        assert [s["metadata"]["name"] for s in cluster.kube.of_kind("Shard")] == [SHARD]
        assert not paused(cluster, "Task", TASK)

    run(body)


def test_a_paused_tasks_shards_keep_their_workload_and_get_the_change_once_resumed() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        image = "registry.example/shardkeeper:2"
        cluster.add_task(**PAUSE, **{"spec.shards.image": image})
        await cluster.reconcile_task()
        await cluster.reconcile_shard()
        # the statuses, and the finalizer again (the test's put of the Task dropped it)
        assert {(w.verb, w.kind) for w in cluster.kube.writes()} == {
            ("apply/status", "Task"),
            ("apply/status", "Shard"),
            ("patch", "Task"),
        }
        assert paused(cluster, "Shard", SHARD)
        sts = cluster.find("StatefulSet", SHARD)
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] != image
        cluster.add_task(**{"spec.shards.image": image})
        await cluster.reconcile_shard()
        sts = cluster.find("StatefulSet", SHARD)
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == image
        assert not paused(cluster, "Shard", SHARD)

    run(body)
