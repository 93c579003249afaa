"""The operator as a process: killed in the middle of its work, a new one finishes the job
without duplicates; of two replicas only the leader reconciles, and the other takes over
within 30 seconds of its death; it reports metrics; and it leaves the user's objects as
the user applied them, so a GitOps tool sees no drift."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import yaml
from tests.controller.support import (
    EXAMPLE_TASKS,
    GROUP,
    Kubectl,
    OperatorProcess,
    apply,
    events,
    examples,
    get,
    wait_condition,
    wait_ready,
)
from tests.support.argocd import health
from tests.support.wait import wait_for

from shardkeeper.controller.main import LEADER_LEASE
from shardkeeper_dev.environment import EnvInfo, s3_client

StartOperator = Callable[..., OperatorProcess]
TASKS = EXAMPLE_TASKS
TAKE_OVER_LIMIT = 30.0


def all_ready(kubectl: Kubectl, namespace: str) -> None:
    wait_ready(kubectl, namespace, TASKS)


def no_duplicates(kubectl: Kubectl, namespace: str) -> None:
    shards = get(kubectl, namespace, f"shards.{GROUP}")
    assert Counter(s["spec"]["task"] for s in shards) == dict.fromkeys(TASKS, 1)
    names = {s["metadata"]["name"] for s in shards}
    assert {s["metadata"]["name"] for s in get(kubectl, namespace, "statefulsets")} == names
    assert len(get(kubectl, namespace, "roles")) == len(names)
    created = Counter(
        e["involvedObject"]["name"]
        for e in events(kubectl, namespace)
        if e["reason"] == "ShardCreated"
    )
    assert all(count == 1 for count in created.values()), created


def leader(processes: list[OperatorProcess]) -> OperatorProcess | None:
    leading = [p for p in processes if p.alive() and p.metric("shardkeeper_operator_leader") == 1]
    assert len(leading) <= 1, "two leaders at once"
    return leading[0] if leading else None


def acquired_at(kubectl: Kubectl, namespace: str, holder: str) -> float:
    """When ``holder`` took the leader Lease, by its own clock (wall-clock seconds)."""
    spec = get(kubectl, namespace, "lease", LEADER_LEASE)["spec"]
    assert spec["holderIdentity"] == holder, spec
    return datetime.fromisoformat(spec["acquireTime"]).timestamp()


def test_killed_in_the_middle_a_new_operator_finishes_without_duplicates(
    operators: StartOperator, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    first = operators("operator-a")
    first.wait_leading()
    apply(kubectl, namespace, examples(dev_env, bucket))
    wait_for(
        lambda: get(kubectl, namespace, f"shards.{GROUP}"),
        timeout=60,
        what="the first shard",
        interval=0.05,
    )
    first.kill()
    half_done = len(get(kubectl, namespace, "statefulsets"))

    second = operators("operator-b")
    # the dead leader's Lease runs out first
    second.wait_leading(timeout=TAKE_OVER_LIMIT)
    all_ready(kubectl, namespace)
    no_duplicates(kubectl, namespace)
    assert half_done <= len(TASKS)


def test_killed_while_deleting_a_new_operator_finishes_the_deletion(
    operators: StartOperator,
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
) -> None:
    s3 = s3_client(dev_env)
    first = operators("operator-a")
    first.wait_leading()
    docs = examples(dev_env, bucket)
    for doc in docs:
        if doc["kind"] == "Task":
            doc["spec"]["deletionPolicy"] = "Delete"
    apply(kubectl, namespace, docs)
    all_ready(kubectl, namespace)
    recovery = f"examples/recovery/{namespace}/customer-totals/"
    assert s3.list_objects_v2(Bucket=bucket, Prefix=recovery).get("KeyCount", 0) > 0

    kubectl("delete", "-n", namespace, f"tasks.{GROUP}/customer-totals", "--wait=false")
    wait_for(
        lambda: (
            get(kubectl, namespace, f"shards.{GROUP}", "customer-totals-00000000-00000000") is None
        ),
        timeout=60,
        what="the shard to be deleted",
        interval=0.05,
    )
    first.kill()
    assert get(kubectl, namespace, f"tasks.{GROUP}", "customer-totals") is not None, "still held"

    operators("operator-b").wait_leading(timeout=TAKE_OVER_LIMIT)
    wait_for(
        lambda: get(kubectl, namespace, f"tasks.{GROUP}", "customer-totals") is None,
        timeout=90,
        what="the deletion to finish",
    )
    assert s3.list_objects_v2(Bucket=bucket, Prefix=recovery).get("KeyCount", 0) == 0
    assert [
        e for e in events(kubectl, namespace, "customer-totals") if e["reason"] == "DataDeleted"
    ]


def test_only_the_leader_reconciles_and_a_standby_takes_over_when_it_dies(
    operators: StartOperator, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    processes = [operators("operator-a"), operators("operator-b")]
    first = wait_for(lambda: leader(processes), timeout=30, what="a leader")
    (standby,) = [p for p in processes if p is not first]
    apply(
        kubectl,
        namespace,
        examples(dev_env, bucket, *_without_task("ingest-orders", dev_env, bucket)),
    )
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/customer-totals"
    )
    assert leader(processes) is first
    assert standby.metric("shardkeeper_operator_reconciles_total") == 0, "the standby waits"
    assert standby.healthz() == 200
    assert standby.healthz("/readyz") == 200, "a standby that reaches the API server is ready"

    first.kill()
    died = time.time()
    # the wait is generous, so that a slow poll on a busy machine does not decide the test;
    # the figure asserted is the standby's own: when it wrote itself into the Lease
    wait_for(
        lambda: leader(processes) is standby,
        timeout=TAKE_OVER_LIMIT + 60,
        what="the take-over",
    )
    took = acquired_at(kubectl, namespace, standby.identity) - died
    assert 0 < took <= TAKE_OVER_LIMIT, f"the standby took the Lease {took:.1f}s after the kill"
    # the new leader picks up new work
    apply(kubectl, namespace, examples(dev_env, bucket, ("Task", "ingest-orders")))
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/ingest-orders"
    )
    print(f"take-over after the leader was killed: {took:.1f}s")


def _without_task(task: str, dev_env: EnvInfo, bucket: str) -> list[tuple[str, str]]:
    return [
        (d["kind"], d["metadata"]["name"])
        for d in examples(dev_env, bucket)
        if not (d["kind"] == "Task" and d["metadata"]["name"] == task)
    ]


def test_a_leader_that_stops_cleanly_hands_over_at_once(operators: StartOperator) -> None:
    first = operators("operator-a")
    first.wait_leading()
    second = operators("operator-b")
    wait_for(second.healthz, timeout=30, what="the second replica to serve")
    assert second.metric("shardkeeper_operator_leader") == 0, "one leader at a time"
    stopped = time.monotonic()
    assert first.stop() == 0
    second.wait_leading(timeout=10)
    assert time.monotonic() - stopped < 10, "a released Lease needs no expiry"


@pytest.mark.usefixtures("operator")
def test_metrics_and_health(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    apply(kubectl, namespace, examples(dev_env, bucket))
    all_ready(kubectl, namespace)
    wait_for(
        lambda: operator.metric("shardkeeper_operator_shards", phase="Running") == 3,
        timeout=30,
        what="3 running shards in the metrics",
    )
    for kind in ("Task", "Shard", "StorageMapping", "Collection"):
        assert (
            operator.metric("shardkeeper_operator_reconciles_total", kind=kind, result="success")
            + (
                operator.metric(
                    "shardkeeper_operator_reconciles_total", kind=kind, result="requeue"
                )
            )
            > 0
        ), kind
        assert (
            operator.metric("shardkeeper_operator_reconcile_duration_seconds_count", kind=kind) > 0
        )
        assert operator.metric("shardkeeper_operator_watch_events_total", kind=kind) > 0
        assert (
            operator.metric("shardkeeper_operator_watch_last_event_timestamp_seconds", kind=kind)
            > 0
        )
    assert operator.metric("shardkeeper_operator_watching") == 1
    assert (
        operator.metric(
            "shardkeeper_operator_api_requests_total", verb="apply", resource="statefulsets"
        )
        == 3
    )
    assert operator.healthz() == 200


@pytest.mark.usefixtures("operator")
def test_no_drift_for_gitops_tools(
    kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    docs = examples(dev_env, bucket)
    apply(kubectl, namespace, docs)
    all_ready(kubectl, namespace)
    diff = kubectl(
        "diff",
        "--server-side",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
    )
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    generations = _generations(kubectl, namespace)
    # Argo CD's and Flux's server-side appliers, in turn, each three times: no conflict
    # without --force-conflicts, and nothing any spec holds changes
    # (not the Secret: its stringData is write-only, so every applier of it conflicts)
    manifest = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    for _ in range(3):
        for manager in ("argocd-controller", "kustomize-controller"):
            kubectl(
                "apply", "--server-side", f"--field-manager={manager}", "-n", namespace,
                "-f", "-", input=manifest,
            )  # fmt: skip
    assert _generations(kubectl, namespace) == generations
    # Flux reads health the kstatus way: every object is Current
    kinds = "tasks.shardkeeper.io,collections.shardkeeper.io,storagemappings.shardkeeper.io"
    listed = json.loads(kubectl("get", kinds, "-n", namespace, "-o", "json").stdout)["items"]
    assert {o["metadata"]["name"]: kstatus(o) for o in listed} == {
        o["metadata"]["name"]: "Current" for o in listed
    }
    # and Argo CD's, with the health script docs/argocd/health.lua ships
    assert {o["metadata"]["name"]: health(o)[0] for o in listed} == {
        o["metadata"]["name"]: "Healthy" for o in listed
    }
    # what the operator owns on a user's Task: its finalizer and the status
    task = kubectl(
        "get", "-n", namespace, "task/customer-totals", "-o", "yaml", "--show-managed-fields"
    )
    managed = yaml.safe_load(task.stdout)["metadata"]["managedFields"]
    ours = {
        (m.get("subresource", ""), tuple(sorted(m["fieldsV1"])))
        for m in managed
        if m["manager"] == "shardkeeper-operator"
    }
    assert ours == {("", ("f:metadata",)), ("status", ("f:status",))}
    annotations = yaml.safe_load(task.stdout)["metadata"].get("annotations", {})
    assert not [a for a in annotations if "kopf" in a]

    # paused for maintenance, on the Task and its shards, then resumed
    pause = "shardkeeper.io/paused"
    kubectl("annotate", "-n", namespace, "task/customer-totals", f"{pause}=true")
    for target in ("task/customer-totals", "shard/customer-totals-00000000-00000000"):
        found = wait_condition(kubectl, namespace, target, "Progressing=False", reason="Paused")
        assert pause in found["message"]
    assert health(get(kubectl, namespace, "tasks.shardkeeper.io", "customer-totals"))[0] == (
        "Suspended"
    )
    kubectl("annotate", "-n", namespace, "task/customer-totals", f"{pause}-")
    wait_condition(kubectl, namespace, "task/customer-totals", "Progressing=False", reason="Stable")


def _generations(kubectl: Kubectl, namespace: str) -> dict[str, int]:
    kinds = "tasks.shardkeeper.io,collections.shardkeeper.io,storagemappings.shardkeeper.io"
    listed = json.loads(kubectl("get", kinds, "-n", namespace, "-o", "json").stdout)
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["generation"] for o in listed["items"]
    }


def kstatus(obj: dict[str, Any]) -> str:
    """sigs.k8s.io/cli-utils kstatus's verdict on an object with conditions."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if conditions.get("Stalled") == "True":
        return "Failed"
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    return "Current" if conditions.get("Ready") == "True" else "InProgress"
