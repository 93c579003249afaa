"""A capture split by r-clock, end to end: the operator, the process node's shard pods,
MinIO and PostgreSQL, with orders posted all along.

The capture `ingest-orders` runs with a hot standby, so its Service must tell primaries
from standbys (both are Ready). A key split asked for by `kubectl patch` is refused; then
`kubectl shards split`, given no axis, asks for r-clock, while orders flow. Then both
capture primaries accept posts, the task's Service has exactly the two primaries as
endpoints, every order is in the orders collection exactly once, the PostgreSQL totals
are exact, and the recovery logs prove one owner per r-clock.

The process node gives pods loopback addresses, which the API server refuses in an
EndpointSlice, so here the real EndpointSlice controller selects the pods but cannot
write them: the test then takes the endpoints by the controller's rule (the Ready pods
the Service's selector matches, at the port its targetPort names) and checks that the
controller did try. On a network whose pod addresses can be listed, it reads the
EndpointSlices themselves."""

from __future__ import annotations

import collections
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from tests.controller.conftest import StartOperator
from tests.controller.support import (
    GROUP,
    Kubectl,
    apply,
    examples_in_a_schema,
    get,
    run_cli,
    wait_condition,
    wait_ready,
)
from tests.controller.test_flow import totals
from tests.controller.test_splits import PREFIX, Orders, settled, shards
from tests.support.wait import NOT_YET, wait_for

from shardkeeper.runtime.shell.collectionio import read_collection
from shardkeeper.storage.layout import task_recovery_dir
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev import environment
from shardkeeper_dev.environment import EnvInfo
from shardkeeper_dev.ownership import check_ownership

CAPTURE = "ingest-orders"
PARENT = f"{CAPTURE}-00000000-00000000"
CHILD = f"{CAPTURE}-00000000-80000000"
SERVICE = f"{CAPTURE}-ingest"
PORT = 8080


def primaries(kubectl: Kubectl, namespace: str) -> dict[str, str] | None:
    """Each capture shard's primary pod, by shard, once every shard names one."""
    found = {
        name: (shard.get("status") or {}).get("primary")
        for name, shard in shards(kubectl, namespace, CAPTURE).items()
    }
    return found if found and all(found.values()) else None  # type: ignore[return-value]


def pod_ip(kubectl: Kubectl, namespace: str, pod: str) -> str | None:
    found = get(kubectl, namespace, "pod", pod) or {}
    ip: str | None = (found.get("status") or {}).get("podIP")
    return ip


def selected(kubectl: Kubectl, namespace: str) -> set[tuple[str, int]]:
    """The addresses that the task's Service, as the operator applied it, selects: by the
    EndpointSlice controller's own rule, the Ready pods its selector matches, at the
    container port its targetPort names."""
    service = get(kubectl, namespace, "service", SERVICE)
    (port,) = service["spec"]["ports"]
    out = set()
    for pod in get(kubectl, namespace, "pods") or []:
        labels = pod["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in service["spec"]["selector"].items()):
            continue
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
        ports = [
            p["containerPort"]
            for c in pod["spec"]["containers"]
            for p in c.get("ports") or []
            if p.get("name") == port["targetPort"]
        ]
        if ready and pod["status"].get("podIP"):
            out.update((pod["status"]["podIP"], p) for p in ports)
    return out


def sliced(kubectl: Kubectl, namespace: str) -> set[tuple[str, int]]:
    """The ready addresses and ports that the Service's EndpointSlices list."""
    slices = kubectl(
        "get", "endpointslices.discovery.k8s.io", "-n", namespace,
        "-l", f"kubernetes.io/service-name={SERVICE}", "-o", "json",
    )  # fmt: skip
    out = set()
    for item in json.loads(slices.stdout)["items"]:
        ports = [p["port"] for p in item.get("ports") or [] if p.get("name") == "ingest"]
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready"):
                out.update((address, port) for address in endpoint["addresses"] for port in ports)
    return out


def loopback_refused(kubectl: Kubectl, namespace: str) -> bool:
    """Whether the EndpointSlice controller tried to list the Service's pods and the API
    server refused their addresses for being loopback ones, as the process node's are."""
    found = get(kubectl, namespace, "events") or []
    return any(
        e["involvedObject"]["name"] == SERVICE
        and e["reason"] == "FailedToUpdateEndpointSlices"
        and "loopback" in e["message"]
        for e in found
    )


def endpoints(kubectl: Kubectl, namespace: str) -> set[tuple[str, int]] | None:
    """The Service's endpoints: its EndpointSlices where pod addresses can be listed; with
    the process node's loopback addresses, which the API server refuses in an
    EndpointSlice (docs/process-node.md), what its selector selects, once the controller
    has been seen to try."""
    addresses = selected(kubectl, namespace)
    if not all(ipaddress.ip_address(ip).is_loopback for ip, _ in addresses):
        return sliced(kubectl, namespace)
    return addresses if loopback_refused(kubectl, namespace) else None


def listed_primaries(
    kubectl: Kubectl, namespace: str, count: int
) -> dict[str, tuple[str, int]] | None:
    """Shard -> its primary's address, once there are ``count`` capture shards and the
    Service's endpoints are exactly their primaries."""
    found = primaries(kubectl, namespace)
    if found is None or len(found) != count:
        return None
    addresses = {shard: (pod_ip(kubectl, namespace, pod), PORT) for shard, pod in found.items()}
    if endpoints(kubectl, namespace) != set(addresses.values()):
        return None
    return addresses  # type: ignore[return-value]


def test_a_capture_splits_by_r_clock_and_its_service_lists_both_primaries(
    operators: StartOperator, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    operators("operator-a").wait_leading()
    docs, schema = examples_in_a_schema(dev_env, bucket)
    for doc in docs:
        if doc["kind"] == "Task" and doc["metadata"]["name"] == CAPTURE:
            # a standby is Ready too: the Service must leave it out
            doc["spec"]["shards"].update(hotStandbys=1)
            doc["spec"]["shards"].setdefault("scaling", {})["maxShards"] = 2
    apply(kubectl, namespace, docs)
    wait_ready(kubectl, namespace)

    # before the split: one primary listed, its standby not
    one = wait_for(
        lambda: listed_primaries(kubectl, namespace, 1),
        timeout=60,
        what="the Service listing the capture's primary",
    )
    urls: list[str] = [url_of(one[PARENT])]
    orders = Orders(lambda: urls, retry=True).start()
    wait_for(lambda: orders.posted >= 400, timeout=60, what="orders flowing")

    # a key split of a capture is refused, and says how to ask
    kubectl(
        "patch", f"shards.{GROUP}", PARENT, "-n", namespace, "--type", "merge",
        "-p", '{"spec":{"split":{"by":"key"}}}',
    )  # fmt: skip
    refused = wait_condition(
        kubectl,
        namespace,
        f"shards.{GROUP}/{PARENT}",
        "SplitAccepted=False",
        reason="CaptureSplitsByRClock",
    )
    assert "rClock" in refused["message"]

    # the CLI, asked for no axis, asks a capture's shard for r-clock
    asked = run_cli(dev_env, "kubectl", "shards", "-n", namespace, "split", PARENT)
    assert f"split of shard {PARENT} by rClock" in asked, asked
    two = wait_for(
        lambda: settled(kubectl, namespace, 2, task=CAPTURE), timeout=150, what="two captures"
    )
    assert two[PARENT]["spec"]["rClockEnd"] == "7fffffff"
    child = two[CHILD]["spec"]
    assert (child["rClockBegin"], child["rClockEnd"]) == ("80000000", "ffffffff")
    assert (child["keyBegin"], child["keyEnd"]) == ("00000000", "ffffffff")
    steps = [s["step"] for s in two[PARENT]["status"]["split"]["steps"]]
    assert steps == ["Plan", "Children", "CatchUp", "HandOff", "Finish", "Done"]

    # the Service's EndpointSlices list both primaries and neither standby; posts go to
    # both, round robin, as kube-proxy would spread them
    both = wait_for(
        lambda: listed_primaries(kubectl, namespace, 2),
        timeout=60,
        what="the Service listing both capture primaries",
    )
    urls[:] = sorted(url_of(address) for address in both.values())
    before = dict(orders.by_url)
    wait_for(
        lambda: orders.alive() and all(orders.by_url[u] - before.get(u, 0) >= 5 for u in urls),
        timeout=60,
        what="posts accepted by both capture primaries",
    )
    expected = orders.stop()

    found = wait_for(
        lambda: totals(dev_env, schema) == expected and totals(dev_env, schema),
        timeout=120,
        what="exact totals in PostgreSQL",
        interval=1.0,
        retry=(*NOT_YET, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName),
    )
    assert found == expected

    objects = ObjectStore(environment.s3_client(dev_env), bucket)
    # every order once, and each capture shard wrote its own journal
    written = read_collection(objects, PREFIX, namespace, "orders")
    ids = [d.document["id"] for d in written]
    assert len(ids) == len(set(ids)) == orders.posted
    by_journal = collections.Counter(d.journal.rsplit("/", 1)[-1] for d in written)
    assert set(by_journal) == {PARENT, CHILD}, by_journal
    # the recovery logs prove that one primary at a time owned each r-clock
    report = check_ownership(objects, PREFIX + task_recovery_dir(namespace, CAPTURE))
    assert len(report.logs) == 2, report
    with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def url_of(address: Sequence[Any]) -> str:
    return f"http://{address[0]}:{address[1]}/orders"
