"""A document the derivation cannot process, in a running pipeline: the shard stops at it
and says so where people look (the Shard's and the Task's conditions, a Warning Event),
no pod crash-loops, and a corrected Task resumes from that very document."""

from __future__ import annotations

from typing import Any

import pytest
from tests.controller.support import (
    Kubectl,
    apply,
    event_reasons,
    events,
    examples,
    get,
    wait_condition,
)
from tests.support.wait import wait_for

from shardkeeper.runtime.shell.collectionio import CollectionWriter, read_collection
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev.environment import EnvInfo

PREFIX = "examples/"  # the example StorageMapping's
SHARD = "customer-totals-00000000-00000000"
NAMES = (
    ("Secret", "s3-credentials"),
    ("StorageMapping", "local"),
    ("Collection", "orders"),
    ("Collection", "customer-totals"),
    ("Task", "customer-totals"),
)
# an amount over a million becomes NULL, which the NOT NULL column refuses
FAILING = """INSERT INTO totals (customer, total, orders)
VALUES ($customer, CASE WHEN $amount > 1000000 THEN NULL ELSE $amount END, 1)
ON CONFLICT (customer) DO UPDATE SET total = total + excluded.total, orders = orders + 1
RETURNING customer, total, orders;"""
FIXED = FAILING.replace("THEN NULL", "THEN 1000000")


def with_lambda(docs: list[dict[str, Any]], lambda_sql: str) -> list[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] == "Task":
            doc["spec"]["derive"]["sql"]["lambdas"]["orders"] = lambda_sql
    return docs


def totals(objects: ObjectStore, namespace: str) -> dict[str, float]:
    """The latest total per customer in the derivation's output."""
    found = read_collection(objects, PREFIX, namespace, "customer-totals")
    return {d.document["customer"]: d.document["total"] for d in found}


@pytest.mark.usefixtures("operator")
def test_a_document_the_derivation_cannot_process_is_reported_and_a_fix_resumes(
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
    s3: Any,
) -> None:
    apply(kubectl, namespace, with_lambda(examples(dev_env, bucket, *NAMES), FAILING))
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/customer-totals"
    )
    objects = ObjectStore(s3, bucket)
    orders = CollectionWriter(
        objects, PREFIX, namespace=namespace, collection="orders", writer="feeder"
    )
    orders.append([{"id": "o1", "customer": "alice", "amount": 5.0}])
    wait_for(lambda: totals(objects, namespace) == {"alice": 5.0}, timeout=60, what="alice's total")
    (bad,) = orders.append([{"id": "o2", "customer": "bob", "amount": 2e6}])

    ready = wait_condition(
        kubectl, namespace, f"shard/{SHARD}", "Ready=False", reason="ReplicaFailed", timeout=90
    )
    # the message names the document's journal and offset, and what went wrong
    assert bad.journal in ready["message"], ready
    assert str(bad.offset) in ready["message"], ready
    assert "NOT NULL" in ready["message"], ready
    wait_condition(kubectl, namespace, f"shard/{SHARD}", "Degraded=True", reason="ReplicaFailed")
    wait_condition(kubectl, namespace, "task/customer-totals", "Degraded=True")
    warnings = wait_for(
        lambda: [e for e in events(kubectl, namespace, SHARD) if e["reason"] == "ReplicaFailed"],
        timeout=30,
        what="a ReplicaFailed Event on the shard",
    )
    assert warnings[0]["type"] == "Warning"
    # nothing past the document was committed, and the failed replica stays up holding its
    # Lease, so no standby goes past it either: no restarts, no crash loop
    assert totals(objects, namespace) == {"alice": 5.0}
    restarts = [
        c.get("restartCount", 0)
        for p in get(kubectl, namespace, "pods")
        if p["metadata"]["name"].startswith(SHARD)
        for c in p.get("status", {}).get("containerStatuses", [])
    ]
    assert restarts
    assert all(r == 0 for r in restarts), restarts

    # the corrected lambda takes the same document, and the shard is whole again
    apply(kubectl, namespace, with_lambda(examples(dev_env, bucket, *NAMES), FIXED))
    wait_for(
        lambda: totals(objects, namespace) == {"alice": 5.0, "bob": 1000000.0},
        timeout=120,
        what="bob's total from the corrected lambda",
    )
    wait_condition(kubectl, namespace, f"shard/{SHARD}", "Ready=True", timeout=120)
    wait_condition(kubectl, namespace, "task/customer-totals", "Degraded=False", timeout=60)
    wait_for(
        lambda: "Recovered" in event_reasons(kubectl, namespace, SHARD),
        timeout=30,
        what="a Recovered Event on the shard",
    )
