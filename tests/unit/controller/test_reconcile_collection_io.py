"""A Collection's reconcile against the fake API and fake buckets: its finalizer (only with
deletionPolicy Delete), its journals in status, and its deletion."""

from __future__ import annotations

import pytest
from tests.support.fake_api import FakeBuckets, Request
from tests.unit.controller.seeded import NAMESPACE, SHARD, Cluster, run

from shardkeeper.controller.reconcilers import stores
from shardkeeper.controller.reconcilers.collection import WAIT_SECONDS
from shardkeeper.controller.specs import names
from shardkeeper.storage import layout

OUTPUT = "customer-totals"  # the example Task's output
BUCKET, PREFIX = "shardkeeper", "examples/"
JOURNALS = [
    PREFIX + layout.collection_journal(NAMESPACE, OUTPUT, SHARD) + "/00000001",
    PREFIX + layout.collection_journal(NAMESPACE, OUTPUT, "other-00000000-00000000") + "/1",
]
OTHERS = [PREFIX + layout.collection_journal(NAMESPACE, "orders", "feed-00000000-00000000")]


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch) -> FakeBuckets:
    found = FakeBuckets()
    found.buckets[BUCKET] = dict.fromkeys([*JOURNALS, *OTHERS], b"x")
    monkeypatch.setattr(stores, "open_store", found.open_store)
    return found


def with_policy(cluster: Cluster, name: str, policy: str) -> None:
    collection = cluster.find("Collection", name)
    collection["spec"]["deletionPolicy"] = policy
    cluster.kube.put(collection)
    cluster.sync()


async def reconcile(cluster: Cluster, name: str = OUTPUT) -> float | None:
    found = await cluster.collections.reconcile(NAMESPACE, name)
    await cluster.settle()
    return found


def test_only_a_delete_policy_brings_the_finalizer_and_the_status_names_the_journals() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        with_policy(cluster, OUTPUT, "Delete")
        await reconcile(cluster)
        await reconcile(cluster, "orders")
        assert cluster.find("Collection", OUTPUT)["metadata"]["finalizers"] == [names.FINALIZER]
        assert "finalizers" not in cluster.find("Collection", "orders")["metadata"]
        assert (
            cluster.kube.writes_of("Collection").count(Request("patch", "Collection", OUTPUT)) == 1
        )
        status = cluster.find("Collection", OUTPUT)["status"]
        assert status["journals"] == [layout.collection_journal(NAMESPACE, OUTPUT, SHARD)]
        assert "journals" not in cluster.find("Collection", "orders")["status"], "no writer"
        # a policy changed back to Retain takes the finalizer off again
        with_policy(cluster, OUTPUT, "Retain")
        await reconcile(cluster)
        assert cluster.find("Collection", OUTPUT)["metadata"].get("finalizers") == []

    run(body)


def test_a_deleted_collection_waits_for_the_tasks_that_use_it(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        with_policy(cluster, OUTPUT, "Delete")
        await reconcile(cluster)
        cluster.kube.remove("Collection", NAMESPACE, OUTPUT)
        cluster.sync()
        assert await reconcile(cluster) == WAIT_SECONDS
        ready = cluster.condition("Collection", OUTPUT, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Deleting")
        assert "customer-totals" in ready["message"], "names the Task"
        assert cluster.find("Collection", OUTPUT)["metadata"]["finalizers"] == [names.FINALIZER]
        assert buckets.opened == []

    run(body)


def test_a_deleted_unused_collection_loses_every_journal_then_its_finalizer(
    buckets: FakeBuckets,
) -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.sync()
        with_policy(cluster, OUTPUT, "Delete")
        await reconcile(cluster)
        cluster.kube.remove("Collection", NAMESPACE, OUTPUT)
        cluster.sync()
        assert await reconcile(cluster) is None
        assert sorted(buckets.buckets[BUCKET]) == OTHERS, "every writer's, no other's"
        assert cluster.kube.find("Collection", NAMESPACE, OUTPUT) is None
        assert cluster.kube.events()[-1] == ("Normal", "DataDeleted", OUTPUT)

    run(body)
