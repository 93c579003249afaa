"""Deleting a Task against the fake API and fake buckets: its Shards stopped, its pods
waited for, its data deleted or kept per deletionPolicy, and only then its finalizer gone."""

from __future__ import annotations

import pytest
from tests.support.fake_api import FakeBuckets, Request
from tests.unit.controller.seeded import NAMESPACE, SHARD, TASK, Cluster, run

from shardkeeper.controller.reconcilers import stores
from shardkeeper.controller.reconcilers.stores import Credentials
from shardkeeper.controller.reconcilers.task_deletion import POLL_SECONDS
from shardkeeper.controller.specs import names
from shardkeeper.kube.client import ApiError
from shardkeeper.storage import errors, layout

BUCKET, PREFIX = "shardkeeper", "examples/"  # the example StorageMapping's store
OURS = [
    PREFIX + layout.recovery_log_name(NAMESPACE, TASK, 0, 0) + "/00000001.seg",
    PREFIX + layout.collection_journal(NAMESPACE, "customer-totals", SHARD) + "/00000001",
]
THEIRS = [
    # another task's logs, whose name starts with this one's
    PREFIX + layout.recovery_log_name(NAMESPACE, f"{TASK}-v2", 0, 0) + "/00000001.seg",
    # another writer of the same output Collection
    PREFIX
    + layout.collection_journal(NAMESPACE, "customer-totals", "other-00000000-00000000")
    + "/00000001",
    # the source Collection, which the task only reads
    PREFIX + layout.collection_journal(NAMESPACE, "orders", "feed-00000000-00000000") + "/1",
]


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch) -> FakeBuckets:
    found = FakeBuckets()
    found.buckets[BUCKET] = dict.fromkeys([*OURS, *THEIRS], b"x")
    monkeypatch.setattr(stores, "open_store", found.open_store)
    return found


async def deleted_task(cluster: Cluster, policy: str) -> None:
    """A running task of ``policy``, asked to be deleted, its shard stopped and gone."""
    await cluster.running_task(**{"spec.deletionPolicy": policy})
    cluster.kube.remove("Task", NAMESPACE, TASK)
    cluster.sync()
    assert await cluster.reconcile_task() == POLL_SECONDS  # deletes the Shard
    cluster.kube.clear_log()


def test_a_deleted_task_first_stops_its_shards_and_keeps_its_finalizer(
    buckets: FakeBuckets,
) -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        shard_uid = cluster.find("Shard", SHARD)["metadata"]["uid"]
        cluster.kube.remove("Task", NAMESPACE, TASK)
        cluster.sync()
        assert await cluster.reconcile_task() == POLL_SECONDS
        assert cluster.kube.writes(events=False) == [
            Request("apply/status", "Task", TASK),
            Request("delete", "Shard", SHARD),
        ]
        assert cluster.kube.bodies("delete", "Shard") == [
            {"uid": shard_uid, "propagation": "Background"}
        ]
        ready = cluster.condition("Task", TASK, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Deleting")
        assert ("Normal", "StoppingShards", TASK) in cluster.kube.events()
        assert cluster.find("Task", TASK)["metadata"]["finalizers"] == [names.FINALIZER]
        assert buckets.opened == []

    run(body)


def test_the_deletion_waits_while_a_pod_of_the_task_runs(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster()
        labels = {names.TASK_LABEL: TASK, names.NAME_LABEL: names.SHARD_APP}
        pod = {"kind": "Pod", "metadata": {"name": f"{SHARD}-0", "namespace": NAMESPACE}}
        cluster.kube.put({**pod, "metadata": {**pod["metadata"], "labels": labels}})
        await deleted_task(cluster, "Delete")
        assert await cluster.reconcile_task() == POLL_SECONDS
        # the status counts no shard any more; no finalizer patch, no delete
        assert cluster.kube.writes(events=False) == [Request("apply/status", "Task", TASK)]
        assert Request("list", "Pod", "") in cluster.kube.requests
        cluster.kube.clear_log()
        assert await cluster.reconcile_task() == POLL_SECONDS
        assert cluster.kube.writes() == []
        assert cluster.find("Task", TASK)["metadata"]["finalizers"] == [names.FINALIZER]
        assert buckets.opened == [], "no data is deleted under a running pod"

    run(body)


def test_delete_removes_the_tasks_data_and_no_other_then_the_finalizer(
    buckets: FakeBuckets,
) -> None:
    async def body() -> None:
        cluster = Cluster()
        await deleted_task(cluster, "Delete")
        assert await cluster.reconcile_task() is None
        assert sorted(buckets.buckets[BUCKET]) == sorted(THEIRS)
        assert {credentials for _, credentials in buckets.opened} == {
            Credentials("shardkeeper", "change-me")
        }, "read from the StorageMapping's Secret"
        assert cluster.kube.find("Task", NAMESPACE, TASK) is None, "the finalizer is off"
        assert cluster.kube.events()[-1] == ("Normal", "DataDeleted", TASK)

    run(body)


def test_retain_keeps_the_data_says_where_and_lets_the_task_go(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster()
        await deleted_task(cluster, "Retain")
        assert await cluster.reconcile_task() is None
        assert buckets.opened == []
        assert sorted(buckets.buckets[BUCKET]) == sorted([*OURS, *THEIRS])
        assert cluster.kube.find("Task", NAMESPACE, TASK) is None
        [event] = [e for e in cluster.kube.of_kind("Event") if e["reason"] == "DataRetained"]
        assert (
            f"s3://{BUCKET}/{PREFIX}{layout.task_recovery_dir(NAMESPACE, TASK)}"
            in (event["message"])
        )

    run(body)


def test_data_that_cannot_be_reached_is_reported_and_does_not_hold_the_task(
    buckets: FakeBuckets,
) -> None:
    async def body() -> None:
        cluster = Cluster()
        await deleted_task(cluster, "Delete")
        cluster.kube.remove("Secret", NAMESPACE, "s3-credentials")
        assert await cluster.reconcile_task() is None
        assert cluster.kube.find("Task", NAMESPACE, TASK) is None
        assert sorted(buckets.buckets[BUCKET]) == sorted([*OURS, *THEIRS])
        assert ("Warning", "DataNotDeleted", TASK) in cluster.kube.events()

    run(body)


def test_a_store_that_is_down_fails_the_deletion_and_keeps_the_finalizer(
    buckets: FakeBuckets,
) -> None:
    async def body() -> None:
        cluster = Cluster()
        await deleted_task(cluster, "Delete")
        buckets.failure = errors.StorageUnavailable("ListObjectsV2", PREFIX, 3, "timeout")
        with pytest.raises(errors.StorageUnavailable):
            await cluster.reconcile_task()
        assert cluster.find("Task", TASK)["metadata"]["finalizers"] == [names.FINALIZER]
        # the store is back: the retry finishes the job
        buckets.failure = None
        assert await cluster.reconcile_task() is None
        assert sorted(buckets.buckets[BUCKET]) == sorted(THEIRS)
        assert cluster.kube.find("Task", NAMESPACE, TASK) is None

    run(body)


def test_a_refused_shard_delete_fails_the_pass(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        cluster.kube.remove("Task", NAMESPACE, TASK)
        cluster.sync()
        cluster.kube.fail("delete", "Shard", status=500)
        with pytest.raises(ApiError):
            await cluster.reconcile_task()
        assert cluster.kube.find("Shard", NAMESPACE, SHARD) is not None
        assert cluster.find("Task", TASK)["metadata"]["finalizers"] == [names.FINALIZER]

    run(body)
