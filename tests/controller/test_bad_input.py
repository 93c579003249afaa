"""Bad input gets a condition that names it and an Event, and no shards that would
crash-loop; once it is fixed, the task starts without anyone touching it again."""

from __future__ import annotations

from typing import Any

import pytest
from tests.controller.support import (
    GROUP,
    Kubectl,
    OperatorProcess,
    apply,
    event_reasons,
    examples,
    get,
    wait_condition,
)
from tests.support.wait import wait_for

from shardkeeper_dev.environment import EnvInfo

SECRET = ("Secret", "s3-credentials")
MAPPING = ("StorageMapping", "local")
ORDERS = ("Collection", "orders")
TOTALS = ("Collection", "customer-totals")
DERIVATION = ("Task", "customer-totals")


def no_shards(kubectl: Kubectl, namespace: str) -> None:
    assert get(kubectl, namespace, f"shards.{GROUP}") == []
    assert get(kubectl, namespace, "statefulsets") == []


def wait_started(kubectl: Kubectl, namespace: str) -> None:
    wait_for(
        lambda: get(kubectl, namespace, "statefulset", "customer-totals-00000000-00000000"),
        timeout=90,
        what="the derivation's StatefulSet",
    )


def task_blocked(kubectl: Kubectl, namespace: str, reason: str) -> dict[str, Any]:
    ready = wait_condition(kubectl, namespace, "task/customer-totals", "Ready=False", reason=reason)
    wait_condition(kubectl, namespace, "task/customer-totals", "Degraded=True", reason=reason)
    return ready


def test_missing_credentials_secret(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    apply(kubectl, namespace, examples(dev_env, bucket, MAPPING, ORDERS, TOTALS, DERIVATION))
    mapping = wait_condition(
        kubectl, namespace, "storagemapping/local", "Ready=False", reason="SecretNotFound"
    )
    assert "s3-credentials" in mapping["message"]
    ready = task_blocked(kubectl, namespace, "StorageMappingNotReady")
    assert "SecretNotFound" in ready["message"]
    assert "SecretNotFound" in event_reasons(kubectl, namespace, "local")
    wait_for(
        lambda: "StorageMappingNotReady" in event_reasons(kubectl, namespace, "customer-totals"),
        timeout=30,
        what="a Warning Event on the task",
    )
    no_shards(kubectl, namespace)

    apply(kubectl, namespace, examples(dev_env, bucket, SECRET))
    wait_condition(kubectl, namespace, "storagemapping/local", "Ready=True", timeout=30)
    wait_started(kubectl, namespace)
    assert operator.alive()


def test_wrong_bucket(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    docs = examples(
        dev_env, "no-such-bucket-" + bucket[-6:], SECRET, MAPPING, ORDERS, TOTALS, DERIVATION
    )
    apply(kubectl, namespace, docs)
    mapping = wait_condition(
        kubectl, namespace, "storagemapping/local", "Ready=False", reason="BucketNotFound"
    )
    assert "does not exist" in mapping["message"]
    stored = get(kubectl, namespace, "storagemapping", "local")
    assert stored["status"]["bucketReachable"] is False
    task_blocked(kubectl, namespace, "StorageMappingNotReady")
    no_shards(kubectl, namespace)

    # fixing the spec checks again at once
    apply(kubectl, namespace, examples(dev_env, bucket, MAPPING))
    wait_condition(kubectl, namespace, "storagemapping/local", "Ready=True", timeout=30)
    wait_started(kubectl, namespace)


def test_wrong_credentials(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    docs = examples(dev_env, bucket, SECRET, MAPPING, ORDERS, TOTALS, DERIVATION)
    docs[0]["stringData"]["secretAccessKey"] = "wrong"
    apply(kubectl, namespace, docs)
    wait_condition(kubectl, namespace, "storagemapping/local", "Ready=False", reason="AccessDenied")
    task_blocked(kubectl, namespace, "StorageMappingNotReady")
    no_shards(kubectl, namespace)
    # a changed Secret is checked again at once
    apply(kubectl, namespace, examples(dev_env, bucket, SECRET))
    wait_condition(kubectl, namespace, "storagemapping/local", "Ready=True", timeout=30)


def test_missing_collection(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    apply(kubectl, namespace, examples(dev_env, bucket, SECRET, MAPPING, TOTALS, DERIVATION))
    ready = task_blocked(kubectl, namespace, "CollectionNotFound")
    assert "orders" in ready["message"]
    no_shards(kubectl, namespace)
    apply(kubectl, namespace, examples(dev_env, bucket, ORDERS))
    wait_started(kubectl, namespace)


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("keys", [None, {"other": "x"}], ids=["missing", "wrong-key"])
def test_a_secret_the_task_names(
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
    keys: dict[str, str] | None,
) -> None:
    names = [SECRET, MAPPING, TOTALS, ("Task", "totals-to-postgres")]
    if keys is not None:
        names.append(("Secret", "postgres-password"))
    docs = examples(dev_env, bucket, *names)
    for doc in docs:
        if doc["metadata"]["name"] == "postgres-password":
            doc["stringData"] = keys
    apply(kubectl, namespace, docs)
    reason = "SecretNotFound" if keys is None else "SecretKeyNotFound"
    ready = wait_condition(
        kubectl, namespace, "task/totals-to-postgres", "Ready=False", reason=reason
    )
    assert "postgres-password" in ready["message"]
    no_shards(kubectl, namespace)
