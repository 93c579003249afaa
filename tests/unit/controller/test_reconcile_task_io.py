"""What a Task's reconcile writes: its finalizer, its first Shard, its status and Events."""

from __future__ import annotations

import pytest
from tests.support.fake_api import Request
from tests.unit.controller.seeded import NAMESPACE, SHARD, TASK, Cluster, run

from shardkeeper.controller.specs import names
from shardkeeper.kube.client import ApiError


def test_a_task_with_a_ready_mapping_gets_its_finalizer_and_one_owned_shard() -> None:
    async def body() -> None:
        cluster = Cluster()
        task = cluster.add_task()
        assert await cluster.reconcile_task() is None
        assert cluster.kube.writes() == [
            Request("patch", "Task", TASK),
            Request("create", "Shard", SHARD),
            Request("apply/status", "Task", TASK),
            Request("create", "Event", cluster.kube.writes()[-1].name),
        ]
        assert cluster.find("Task", TASK)["metadata"]["finalizers"] == [names.FINALIZER]
        shard = cluster.find("Shard", SHARD)
        assert shard["metadata"]["ownerReferences"] == [
            {
                "apiVersion": task["apiVersion"],
                "kind": "Task",
                "name": TASK,
                "uid": task["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert shard["metadata"]["labels"][names.TASK_LABEL] == TASK
        assert (shard["spec"]["keyBegin"], shard["spec"]["keyEnd"]) == ("00000000", "ffffffff")
        assert cluster.kube.events() == [("Normal", "ShardCreated", TASK)]
        progressing = cluster.condition("Task", TASK, "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("True", "CreatingShards")

    run(body)


def test_a_second_reconcile_with_the_shard_seen_creates_nothing() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task()
        await cluster.reconcile_task()
        cluster.kube.clear_log()
        await cluster.reconcile_task()
        # the status now counts the shard; nothing else is written
        assert cluster.kube.writes() == [Request("apply/status", "Task", TASK)]
        assert cluster.find("Task", TASK)["status"]["shards"] == 1
        cluster.kube.clear_log()
        await cluster.reconcile_task()
        assert cluster.kube.writes() == []

    run(body)


def test_a_reconcile_before_the_cache_saw_the_first_writes_repeats_none_of_them() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task()
        await cluster.tasks.reconcile(NAMESPACE, TASK)
        await cluster.recorder.flush()
        cluster.kube.clear_log()
        await cluster.tasks.reconcile(NAMESPACE, TASK)  # the cache still shows the bare Task
        await cluster.recorder.flush()
        # the finalizer and status are remembered; the Shard's create is refused (409)
        assert cluster.kube.writes() == [Request("create", "Shard", SHARD)]
        assert len(cluster.kube.of_kind("Shard")) == 1
        assert cluster.kube.events() == [("Normal", "ShardCreated", TASK)], "announced once"

    run(body)


@pytest.mark.parametrize(
    ("cluster_args", "task", "reason"),
    [
        pytest.param({"mapping": False}, TASK, "StorageMappingNotFound", id="no-mapping"),
        # a materialization whose passwordSecretRef names a Secret that does not exist
        pytest.param({}, "totals-to-postgres", "SecretNotFound", id="no-secret"),
    ],
)
def test_a_task_that_cannot_run_gets_no_shard_but_a_reason_and_a_warning(
    cluster_args: dict[str, bool], task: str, reason: str
) -> None:
    async def body() -> None:
        cluster = Cluster(**cluster_args)
        cluster.add_task(task)
        await cluster.reconcile_task(task)
        assert cluster.kube.writes_of("Shard") == []
        assert cluster.kube.of_kind("Shard") == []
        ready = cluster.condition("Task", task, "Ready")
        degraded = cluster.condition("Task", task, "Degraded")
        assert (ready["status"], ready["reason"]) == ("False", reason)
        assert (degraded["status"], degraded["reason"]) == ("True", reason)
        assert cluster.kube.events() == [("Warning", reason, task)]
        # the same problem, looked at again, is neither written nor announced again
        cluster.kube.clear_log()
        await cluster.reconcile_task(task)
        assert cluster.kube.writes() == []

    run(body)


def test_a_refused_shard_create_fails_the_reconcile_and_announces_nothing() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task()
        cluster.kube.fail("create", "Shard", status=500)
        with pytest.raises(ApiError) as failed:
            await cluster.reconcile_task()
        assert failed.value.status == 500
        assert cluster.kube.events() == []
        assert cluster.kube.writes_of("Task") == [Request("patch", "Task", TASK)], "no status"
        # the retry does what the failed pass could not
        await cluster.reconcile_task()
        assert cluster.kube.find("Shard", NAMESPACE, SHARD) is not None
        assert cluster.kube.events() == [("Normal", "ShardCreated", TASK)]

    run(body)


def test_removing_the_finalizer_over_a_concurrent_edit_fails_instead_of_overwriting() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task()
        await cluster.reconcile_task()
        cached = cluster.deps.cache.task(NAMESPACE, TASK)
        assert cached is not None
        # someone adds a finalizer of their own; the cache has not seen it yet
        task = cluster.find("Task", TASK)
        task["metadata"]["finalizers"].append("example.com/keep")
        cluster.kube.put(task)
        with pytest.raises(ApiError) as failed:
            await cluster.tasks.set_finalizer(cached, present=False)
        assert failed.value.status == 422, "the patch tests the list it read"
        assert cluster.find("Task", TASK)["metadata"]["finalizers"] == [
            names.FINALIZER,
            "example.com/keep",
        ]

    run(body)


def test_a_capture_task_applies_its_service_once() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task("ingest-orders")
        await cluster.reconcile_task("ingest-orders")
        assert Request("apply", "Service", "ingest-orders-ingest") in cluster.kube.writes()
        service = cluster.find("Service", "ingest-orders-ingest")
        assert service["spec"]["selector"]["shardkeeper.io/role"] == "primary"
        cluster.kube.clear_log()
        await cluster.reconcile_task("ingest-orders")
        assert all(w.kind != "Service" for w in cluster.kube.writes())

    run(body)


def test_a_derivation_has_no_task_service() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task()
        await cluster.reconcile_task()
        assert all(w.kind != "Service" for w in cluster.kube.writes())

    run(body)
