"""What a Shard's reconcile applies: its workload, in order, owned by the Shard; and what it
leaves alone when its Task cannot run or is gone."""

from __future__ import annotations

import pytest
from tests.support.fake_api import Request
from tests.unit.controller.seeded import NAMESPACE, SHARD, TASK, Cluster, run

from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.shards import initial_shard, shard_manifest
from shardkeeper.kube.client import ApiError

RUNTIME = f"{SHARD}-runtime"
WORKLOAD = [
    Request("apply", "ServiceAccount", RUNTIME),
    Request("apply", "Role", RUNTIME),
    Request("apply", "RoleBinding", RUNTIME),
    Request("apply", "Service", SHARD),
    Request("apply", "PodDisruptionBudget", SHARD),
    Request("apply", "StatefulSet", SHARD),
]


async def with_shard(cluster: Cluster) -> str:
    """The Task and its Shard, seen by the cache; the Shard's uid."""
    cluster.add_task()
    await cluster.reconcile_task()
    cluster.kube.clear_log()
    return str(cluster.find("Shard", SHARD)["metadata"]["uid"])


def test_the_workload_is_applied_statefulset_last_each_owned_by_the_shard() -> None:
    async def body() -> None:
        cluster = Cluster()
        uid = await with_shard(cluster)
        assert await cluster.reconcile_shard() is None
        assert cluster.kube.writes() == [*WORKLOAD, Request("apply/status", "Shard", SHARD)]
        for request in WORKLOAD:
            obj = cluster.find(request.kind, request.name)
            owners = obj["metadata"]["ownerReferences"]
            assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [("Shard", SHARD, uid)]
        sts = cluster.find("StatefulSet", SHARD)
        assert sts["metadata"]["annotations"][names.APPLIED_HASH_ANNOTATION]
        assert sts["spec"]["replicas"] == 2, "a primary and the example's hot standby"
        # the runtime may read its store's credentials, and no other Secret
        rules = cluster.find("Role", RUNTIME)["rules"]
        secrets = [r for r in rules if "secrets" in r["resources"]]
        assert [r.get("resourceNames") for r in secrets] == [["s3-credentials"]]
        # the cache indexes the StatefulSet it applied under the shard (by its labels)
        assert cluster.deps.cache.statefulset(NAMESPACE, SHARD) is not None

    run(body)


def test_a_shard_whose_mapping_is_missing_gets_no_workload() -> None:
    async def body() -> None:
        cluster = Cluster(mapping=False)
        cluster.add_task()
        await cluster.reconcile_task()
        # a Shard made earlier (by an operator that saw the mapping) finds it gone
        task = cluster.deps.cache.task(NAMESPACE, TASK)
        assert task is not None
        await cluster.kube.create(shard_manifest(initial_shard(task)))
        cluster.sync()
        cluster.kube.clear_log()
        await cluster.reconcile_shard()
        assert cluster.kube.writes(events=False) == [Request("apply/status", "Shard", SHARD)]
        assert cluster.kube.of_kind("StatefulSet") == []
        assert cluster.kube.events()[-1] == ("Warning", "StorageMappingNotFound", SHARD)

    run(body)


def test_a_running_shard_whose_mapping_is_deleted_keeps_its_workload_as_it_is() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        role = cluster.find("Role", RUNTIME)
        cluster.kube.remove("StorageMapping", NAMESPACE, "local")
        cluster.sync()
        await cluster.reconcile_shard()
        # without the mapping its Secrets are unknown: a new apply would take them away
        assert cluster.kube.writes(events=False) == [Request("apply/status", "Shard", SHARD)]
        assert cluster.find("Role", RUNTIME) == role

    run(body)


def test_a_shard_whose_task_is_gone_says_so_and_applies_nothing() -> None:
    async def body() -> None:
        cluster = Cluster()
        await with_shard(cluster)
        # the Task went without its finalizer's work, its Shard orphaned
        cluster.kube.remove("Task", NAMESPACE, TASK, orphan=True)
        cluster.sync()
        await cluster.reconcile_shard()
        assert cluster.kube.writes(events=False) == [Request("apply/status", "Shard", SHARD)]
        degraded = cluster.condition("Shard", SHARD, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "TaskNotFound")
        assert cluster.kube.events() == [
            ("Normal", "ShardCreated", TASK),
            ("Warning", "TaskNotFound", SHARD),
        ]

    run(body)


def test_a_shard_being_deleted_is_left_alone() -> None:
    async def body() -> None:
        cluster = Cluster()
        await with_shard(cluster)
        shard = cluster.find("Shard", SHARD)
        shard["metadata"]["finalizers"] = ["example.com/hold"]
        cluster.kube.put(shard)
        cluster.kube.remove("Shard", NAMESPACE, SHARD)
        cluster.sync()
        cluster.kube.clear_log()
        assert await cluster.reconcile_shard() is None
        assert cluster.kube.requests == []

    run(body)


@pytest.mark.parametrize("kind", ["Role", "StatefulSet"])
def test_a_refused_apply_fails_the_reconcile_and_is_not_remembered(kind: str) -> None:
    async def body() -> None:
        cluster = Cluster()
        await with_shard(cluster)
        cluster.kube.fail("apply", kind, status=500)
        with pytest.raises(ApiError) as failed:
            await cluster.reconcile_shard()
        assert failed.value.status == 500
        assert cluster.kube.writes_of("Shard") == [], "no status claims a workload"
        if kind == "Role":
            assert cluster.kube.writes_of("StatefulSet") == [], "no pods before their rights"
        # the retry applies everything again: the failed apply left no record behind
        cluster.kube.clear_log()
        await cluster.reconcile_shard()
        assert cluster.kube.writes() == [*WORKLOAD, Request("apply/status", "Shard", SHARD)]
        assert cluster.kube.find("StatefulSet", NAMESPACE, SHARD) is not None

    run(body)
