"""Deleting a Task stops its shards first; then ``deletionPolicy: Delete`` removes its
recovery logs and the journals its shards wrote, and ``Retain`` keeps them and says where."""

from __future__ import annotations

from typing import Any

import pytest
from tests.controller.support import (
    GROUP,
    Kubectl,
    apply,
    bucket_keys,
    events,
    examples,
    get,
    wait_condition,
)
from tests.support.wait import wait_for

from shardkeeper.runtime.shell.collectionio import CollectionWriter
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev.environment import EnvInfo

SHARD = "customer-totals-00000000-00000000"
PREFIX = "examples/"
PIPELINE = [
    ("Secret", "s3-credentials"),
    ("StorageMapping", "local"),
    ("Collection", "orders"),
    ("Collection", "customer-totals"),
    ("Task", "customer-totals"),
]


def run_derivation(
    kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str, policy: str
) -> None:
    docs = examples(dev_env, bucket, *PIPELINE)
    docs[-1]["spec"]["deletionPolicy"] = policy
    apply(kubectl, namespace, docs)
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/customer-totals"
    )


def feed_orders(dev_env: EnvInfo, bucket: str, namespace: str) -> None:
    client = make_s3_client(
        endpoint=dev_env.s3_endpoint,
        access_key=dev_env.s3_access_key,
        secret_key=dev_env.s3_secret_key,
        region=dev_env.s3_region,
    )
    writer = CollectionWriter(
        ObjectStore(client, bucket),
        PREFIX,
        namespace=namespace,
        collection="orders",
        writer="feeder",
    )
    writer.append([{"id": "o1", "customer": "alice", "amount": 1.0}])


def deleted(kubectl: Kubectl, namespace: str) -> None:
    kubectl("delete", "-n", namespace, f"tasks.{GROUP}/customer-totals", "--timeout=120s")
    assert get(kubectl, namespace, f"shards.{GROUP}") == []
    assert get(kubectl, namespace, "statefulsets") == []
    assert [
        p for p in get(kubectl, namespace, "pods") if "customer-totals" in p["metadata"]["name"]
    ] == []


def notice(kubectl: Kubectl, namespace: str, reason: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: next(
            (e for e in events(kubectl, namespace, "customer-totals") if e["reason"] == reason),
            None,
        ),
        timeout=30,
        what=f"a {reason} Event",
    )
    return found


@pytest.mark.usefixtures("operator")
def test_delete_policy_removes_the_tasks_logs_and_journals_and_nothing_else(
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
    s3: Any,
) -> None:
    run_derivation(kubectl, namespace, dev_env, bucket, "Delete")
    feed_orders(dev_env, bucket, namespace)
    recovery = f"{PREFIX}recovery/{namespace}/customer-totals/"
    journal = f"{PREFIX}collections/{namespace}/customer-totals/{SHARD}/"
    wait_for(
        lambda: bucket_keys(s3, bucket, journal), timeout=60, what="the derivation's output journal"
    )
    assert bucket_keys(s3, bucket, recovery)
    others = [
        f"{PREFIX}recovery/{namespace}/customer-totals-other/00000000-00000000/journal/0",
        f"{PREFIX}collections/{namespace}/customer-totals/customer-totals-x-00000000-00000000/0",
    ]
    for key in others:
        s3.put_object(Bucket=bucket, Key=key, Body=b"not the task's")
    source = bucket_keys(s3, bucket, f"{PREFIX}collections/{namespace}/orders/")

    deleted(kubectl, namespace)
    assert bucket_keys(s3, bucket, recovery) == []
    assert bucket_keys(s3, bucket, journal) == []
    for key in others:
        assert bucket_keys(s3, bucket, key) == [key], "another task's data stays"
    assert bucket_keys(s3, bucket, f"{PREFIX}collections/{namespace}/orders/") == source, (
        "sources stay"
    )
    event = notice(kubectl, namespace, "DataDeleted")
    assert f"s3://{bucket}/{recovery}" in event["message"]


@pytest.mark.usefixtures("operator")
def test_retain_policy_keeps_the_data_and_says_where(
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
    s3: Any,
) -> None:
    run_derivation(kubectl, namespace, dev_env, bucket, "Retain")
    recovery = f"{PREFIX}recovery/{namespace}/customer-totals/"
    before = wait_for(
        lambda: bucket_keys(s3, bucket, recovery), timeout=60, what="the recovery log"
    )
    deleted(kubectl, namespace)
    after = bucket_keys(s3, bucket, recovery)
    assert set(before) <= set(after)
    assert get(kubectl, namespace, "pvc") == [], "volumes go with the StatefulSet"
    event = notice(kubectl, namespace, "DataRetained")
    assert f"s3://{bucket}/{recovery}" in event["message"]
    assert (
        f"s3://{bucket}/{PREFIX}collections/{namespace}/customer-totals/customer-totals-*"
        in event["message"]
    )


@pytest.mark.usefixtures("operator")
def test_a_collection_with_delete_policy_waits_for_its_tasks_then_removes_its_journals(
    kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str, s3: Any
) -> None:
    docs = examples(dev_env, bucket, *PIPELINE)
    for doc in docs:
        if doc["kind"] == "Collection" and doc["metadata"]["name"] == "orders":
            doc["spec"]["deletionPolicy"] = "Delete"
    apply(kubectl, namespace, docs)
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/customer-totals"
    )
    feed_orders(dev_env, bucket, namespace)
    orders = f"{PREFIX}collections/{namespace}/orders/"
    totals = f"{PREFIX}collections/{namespace}/customer-totals/"
    wait_for(lambda: bucket_keys(s3, bucket, totals), timeout=60, what="the derivation's output")
    assert bucket_keys(s3, bucket, orders)

    kubectl("delete", "-n", namespace, f"collections.{GROUP}/orders", "--wait=false")
    wait_condition(kubectl, namespace, "collection/orders", "Ready=False", reason="Deleting")
    assert bucket_keys(s3, bucket, orders), "kept while a Task reads it"

    kubectl("delete", "-n", namespace, f"tasks.{GROUP}/customer-totals", "--timeout=120s")
    wait_for(
        lambda: get(kubectl, namespace, f"collections.{GROUP}", "orders") is None,
        timeout=60,
        what="the collection to go",
    )
    assert bucket_keys(s3, bucket, orders) == []
    assert bucket_keys(s3, bucket, totals), "a Retain collection keeps its journals"
    kubectl("delete", "-n", namespace, f"collections.{GROUP}/customer-totals", "--timeout=60s")
    assert bucket_keys(s3, bucket, totals)
