"""Status writes: through the status subresource, only the operator's fields, only when
something differs, and the Events of a condition that moved posted once, after the write."""

from __future__ import annotations

import pytest
from tests.support.fake_api import Request
from tests.unit.controller.seeded import NAMESPACE, SHARD, TASK, Cluster, run

from shardkeeper.kube.client import ApiError


def test_a_task_status_is_applied_to_the_subresource_with_nothing_but_status() -> None:
    async def body() -> None:
        cluster = Cluster()
        task = cluster.add_task()
        await cluster.reconcile_task()
        assert Request("apply", "Task", TASK) not in cluster.kube.requests
        [sent] = cluster.kube.bodies("apply/status", "Task")
        assert set(sent) == {"apiVersion", "kind", "metadata", "status"}
        assert sent["metadata"] == {"name": TASK, "namespace": NAMESPACE}
        stored = cluster.find("Task", TASK)
        assert stored["spec"] == task["spec"]
        assert stored["metadata"]["generation"] == task["metadata"]["generation"]
        assert stored["status"]["observedGeneration"] == task["metadata"]["generation"]

    run(body)


def test_a_shard_status_write_leaves_the_runtimes_fields_alone() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        runtime = {"epoch": 3, "recoveryLogHead": 42, "lag": 7}
        cluster.kube.set_status("Shard", NAMESPACE, SHARD, runtime)
        task = cluster.find("Task", TASK)
        task["spec"]["shards"]["hotStandbys"] = 2  # a new pod count: the status moves
        cluster.kube.put(task)
        cluster.sync()
        await cluster.reconcile_shard()
        [sent] = cluster.kube.bodies("apply/status", "Shard")
        assert set(sent["status"]) == {"observedGeneration", "conditions", "phase"}
        status = cluster.find("Shard", SHARD)["status"]
        assert {k: status[k] for k in runtime} == runtime

    run(body)


def test_a_field_that_is_no_longer_set_is_removed_by_the_write() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        await cluster.reconcile_task()
        assert cluster.find("Task", TASK)["status"]["shardsByPhase"] == {"Pending": 1}
        cluster.kube.remove("Shard", NAMESPACE, SHARD, orphan=True)  # by hand
        cluster.sync()
        cluster.kube.clear_log()
        await cluster.reconcile_task()
        [sent] = cluster.kube.bodies("apply/status", "Task")
        assert "shardsByPhase" not in sent["status"]
        status = cluster.find("Task", TASK)["status"]
        assert status["shards"] == 0
        assert "shardsByPhase" not in status

    run(body)


def test_a_status_for_an_object_deleted_behind_the_cache_is_dropped_quietly() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.sync()
        cluster.kube.remove("Collection", NAMESPACE, "orders")  # the cache still has it
        assert await cluster.collections.reconcile(NAMESPACE, "orders") is None
        await cluster.recorder.flush()
        assert cluster.kube.writes() == [Request("apply/status", "Collection", "orders")]
        assert cluster.kube.find("Collection", NAMESPACE, "orders") is None, "not re-created"
        assert cluster.kube.events() == []

    run(body)


def test_a_refused_status_write_announces_nothing_until_a_write_succeeds() -> None:
    async def body() -> None:
        cluster = Cluster(mapping=False)
        cluster.add_task()
        cluster.kube.fail("apply/status", "Task", status=500)
        with pytest.raises(ApiError):
            await cluster.tasks.reconcile(NAMESPACE, TASK)
        await cluster.recorder.flush()
        assert cluster.kube.events() == []
        assert "status" not in cluster.find("Task", TASK)
        await cluster.reconcile_task()  # the retry, the cache not caught up in between
        assert len(cluster.kube.bodies("apply/status", "Task")) == 2, "not remembered"
        assert cluster.kube.events() == [("Warning", "StorageMappingNotFound", TASK)]

    run(body)


def test_a_task_turning_ready_is_announced_once() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        cluster.kube.set_status("Shard", NAMESPACE, SHARD, {"phase": "Running"})
        cluster.sync()
        await cluster.reconcile_task()
        ready = cluster.condition("Task", TASK, "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "Running")
        cluster.kube.clear_log()
        await cluster.reconcile_task()
        await cluster.reconcile_task()
        assert cluster.kube.writes() == []
        assert cluster.kube.events().count(("Normal", "Running", TASK)) == 1

    run(body)


def test_a_removal_is_not_written_again_before_the_cache_saw_it() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        await cluster.reconcile_task()
        cluster.kube.remove("Shard", NAMESPACE, SHARD, orphan=True)
        cluster.sync()
        cluster.kube.clear_log()
        await cluster.tasks.reconcile(NAMESPACE, TASK)  # removes shardsByPhase
        await cluster.tasks.reconcile(NAMESPACE, TASK)  # the cache has not seen that yet
        await cluster.recorder.flush()
        assert len(cluster.kube.bodies("apply/status", "Task")) == 1

    run(body)
