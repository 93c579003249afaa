"""A StorageMapping's bucket check against the fake API and fake buckets: what is checked
when, and what the status and Events say."""

from __future__ import annotations

import base64
import json

import pytest
from tests.support.fake_api import FakeBuckets, Request
from tests.unit.controller.seeded import NAMESPACE, Cluster, run

from shardkeeper.controller.reconcilers import stores
from shardkeeper.controller.reconcilers.mapping import (
    CHECK_INTERVAL,
    RETRY_INTERVAL,
    MappingReconciler,
)
from shardkeeper.storage import errors

MAPPING = "local"


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch) -> FakeBuckets:
    found = FakeBuckets()
    monkeypatch.setattr(stores, "open_store", found.open_store)
    return found


async def check(cluster: Cluster, reconciler: MappingReconciler | None = None) -> float | None:
    found = await (reconciler or cluster.mappings).reconcile(NAMESPACE, MAPPING)
    await cluster.settle()
    return found


def test_a_reachable_fenced_bucket_makes_the_mapping_ready(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster(ready=False)
        cluster.sync()
        assert await check(cluster) == CHECK_INTERVAL
        assert [bucket for bucket, _ in buckets.opened] == ["shardkeeper"]
        assert buckets.buckets["shardkeeper"] == {}, "the probe is removed"
        status = cluster.find("StorageMapping", MAPPING)["status"]
        assert (status["bucketReachable"], status["conditionalWrites"]) == (True, True)
        assert [s["bucket"] for s in status["stores"]] == ["shardkeeper"]
        ready = cluster.condition("StorageMapping", MAPPING, "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "BucketReady")
        assert cluster.kube.events() == [("Normal", "BucketReady", MAPPING)]

    run(body)


def test_no_check_is_repeated_until_it_is_due_or_a_secret_changed(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster(ready=False)
        cluster.sync()
        await check(cluster)
        cluster.kube.clear_log()
        wait = await check(cluster)
        assert wait is not None
        assert 0 < wait <= CHECK_INTERVAL
        # a restarted operator reads when the last check was from the status
        assert await check(cluster, MappingReconciler(cluster.deps)) is not None
        assert len(buckets.opened) == 1
        assert cluster.kube.requests == []
        secret = cluster.find("Secret", "s3-credentials")
        cluster.kube.put(secret)  # a new resourceVersion
        cluster.sync()
        assert await check(cluster) == CHECK_INTERVAL
        assert len(buckets.opened) == 2

    run(body)


def test_a_missing_secret_is_the_reason_and_no_bucket_is_tried(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster(ready=False)
        cluster.kube.remove("Secret", NAMESPACE, "s3-credentials")
        cluster.sync()
        assert await check(cluster) == RETRY_INTERVAL
        assert buckets.opened == []
        assert Request("get", "Secret", "s3-credentials") in cluster.kube.requests
        ready = cluster.condition("StorageMapping", MAPPING, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
        [store] = cluster.find("StorageMapping", MAPPING)["status"]["stores"]
        assert "reachable" not in store, "not known: it was not tried"
        assert ("Warning", "SecretNotFound", MAPPING) in cluster.kube.events()

    run(body)


def test_no_credential_reaches_the_status_or_an_event(buckets: FakeBuckets) -> None:
    async def body() -> None:
        cluster = Cluster(ready=False)
        secret = cluster.find("Secret", "s3-credentials")
        key = base64.b64decode(secret["data"]["secretAccessKey"]).decode()
        # as a store might echo what it was sent
        buckets.failure = errors.AccessDenied("shardkeeper", "", "ListObjectsV2", f"key {key}")
        cluster.sync()
        await check(cluster)
        ready = cluster.condition("StorageMapping", MAPPING, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "AccessDenied")
        status = cluster.find("StorageMapping", MAPPING)["status"]
        posted = cluster.kube.bodies("create", "Event")
        assert posted
        assert "[redacted]" in ready["message"]
        assert key not in json.dumps([status, posted])

    run(body)
