"""A capture task's Service selects the primary pods of all its shards, on the ingest port;
other tasks have none."""

from __future__ import annotations

from tests.unit.controller.models import NAMESPACE, task

from shardkeeper.api.shard import PRIMARY_ROLE, ROLE_LABEL
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.ingest import ingest_service


def test_a_capture_gets_a_service_of_its_primaries_on_the_ingest_port() -> None:
    capture = task("ingest-orders")
    service = ingest_service(capture)
    assert service is not None
    meta = service["metadata"]
    assert (meta["name"], meta["namespace"]) == ("ingest-orders-ingest", NAMESPACE)
    assert meta["labels"][names.TASK_LABEL] == "ingest-orders"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Task",
        "ingest-orders",
        capture.metadata.uid,
    )
    assert owner["controller"] is True
    spec = service["spec"]
    assert spec["type"] == "ClusterIP"  # not headless: kube-proxy spreads connections
    # every shard of the task, not one: no shard label; only primaries: the role label
    assert spec["selector"] == {
        names.NAME_LABEL: names.SHARD_APP,
        names.TASK_LABEL: "ingest-orders",
        ROLE_LABEL: PRIMARY_ROLE,
    }
    assert names.SHARD_LABEL not in spec["selector"]
    assert spec["ports"] == [
        {"name": "ingest", "port": 8080, "targetPort": "ingest", "protocol": "TCP"}
    ]


def test_the_port_follows_the_task() -> None:
    service = ingest_service(task("ingest-orders", **{"spec.capture.http.port": 9000}))
    assert service is not None
    assert service["spec"]["ports"][0]["port"] == 9000


def test_no_service_for_a_derivation_or_a_materialization() -> None:
    assert ingest_service(task("customer-totals")) is None
    assert ingest_service(task("totals-to-postgres")) is None
