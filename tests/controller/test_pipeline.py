"""The examples, applied as a user applies them, become running shards: one Shard per
Task over the full ranges, each with exactly the workload of docs/shard-pod.md, statuses
that tell the truth, and `kubectl wait --for=condition=Ready` working once every shard
has a primary."""

from __future__ import annotations

import json
from typing import Any

from tests.controller.support import (
    EXAMPLE_TASKS,
    GROUP,
    Kubectl,
    OperatorProcess,
    apply,
    event_reasons,
    examples,
    get,
    wait_condition,
    wait_ready,
)
from tests.support.wait import wait_for

from shardkeeper_dev.environment import EnvInfo

TASKS = EXAMPLE_TASKS


def shard_name(task: str) -> str:
    return f"{task}-00000000-00000000"


def test_examples_get_shards_with_their_workload_and_statuses(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    apply(kubectl, namespace, examples(dev_env, bucket))

    mapping = wait_condition(kubectl, namespace, "storagemapping/local", "Ready=True")
    assert mapping["reason"] == "BucketReady"
    stored = get(kubectl, namespace, "storagemapping", "local")
    assert stored["status"]["bucketReachable"] is True
    assert stored["status"]["conditionalWrites"] is True
    assert stored["status"]["stores"][0]["bucket"] == bucket
    assert stored["status"]["observedGeneration"] == stored["metadata"]["generation"]
    for name in ("orders", "customer-totals"):
        wait_condition(kubectl, namespace, f"collection/{name}", "Ready=True")

    for task in TASKS:
        shard = wait_for(
            lambda task=task: get(kubectl, namespace, f"shards.{GROUP}", shard_name(task)),
            timeout=60,
            what=f"the shard of {task}",
        )
        assert shard["spec"] == {
            "task": task,
            "keyBegin": "00000000",
            "keyEnd": "ffffffff",
            "rClockBegin": "00000000",
            "rClockEnd": "ffffffff",
            "recoveryLog": f"recovery/{namespace}/{task}/00000000-00000000",
        }
        owner = get(kubectl, namespace, f"tasks.{GROUP}", task)
        (ref,) = shard["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("Task", task, owner["metadata"]["uid"])
        assert "shardkeeper.io/cleanup" in owner["metadata"]["finalizers"]
        check_workload(kubectl, namespace, shard, replicas=2 if task == "customer-totals" else 1)
        assert "ShardCreated" in event_reasons(kubectl, namespace, task)

    # every task counts its one shard, and says so in observedGeneration'd conditions
    for task in TASKS:
        status = wait_for(
            lambda task=task: _counted(get(kubectl, namespace, f"tasks.{GROUP}", task)),
            timeout=60,
            what=f"{task} to count its shard",
        )
        assert status["shards"] == 1
        assert sum(status["shardsByPhase"].values()) == 1
        for condition in status["conditions"]:
            assert condition["reason"][0].isupper()
            assert condition["observedGeneration"] == 1
        assert {c["type"] for c in status["conditions"]} == {
            "Ready",
            "Progressing",
            "Degraded",
            "Reconciling",
            "Stalled",
        }

    # they become Ready, which `kubectl wait` sees
    wait_ready(kubectl, namespace)
    for task in TASKS:
        status = get(kubectl, namespace, f"tasks.{GROUP}", task)["status"]
        assert (status["readyShards"], status["shardsByPhase"]) == (1, {"Running": 1})
        shard = get(kubectl, namespace, f"shards.{GROUP}", shard_name(task))
        assert shard["status"]["phase"] == "Running"
        assert shard["status"]["primary"].startswith(shard_name(task))
        assert "Running" in event_reasons(kubectl, namespace, task)


def _counted(task: dict[str, Any] | None) -> dict[str, Any] | None:
    status = (task or {}).get("status", {})
    return status if status.get("shards") == 1 and status.get("conditions") else None


def check_workload(kubectl: Kubectl, namespace: str, shard: dict[str, Any], replicas: int) -> None:
    name, uid = shard["metadata"]["name"], shard["metadata"]["uid"]
    runtime = f"{name}-runtime"
    expected = {
        "statefulset": name,
        "service": name,
        "poddisruptionbudget": name,
        "serviceaccount": runtime,
        "role": runtime,
        "rolebinding": runtime,
    }
    for kind, obj_name in expected.items():
        obj = wait_for(
            lambda kind=kind, obj_name=obj_name: get(kubectl, namespace, kind, obj_name),
            timeout=30,
            what=f"{kind} {obj_name}",
        )
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("Shard", uid, True), kind
        assert obj["metadata"]["labels"]["shardkeeper.io/shard"] == name
    sts = get(kubectl, namespace, "statefulset", name)
    assert sts["spec"]["replicas"] == replicas
    assert sts["spec"]["updateStrategy"]["type"] == "OnDelete"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert get(kubectl, namespace, "service", name)["spec"]["clusterIP"] == "None"
    assert get(kubectl, namespace, "poddisruptionbudget", name)["spec"]["maxUnavailable"] == 1
    pods = wait_for(
        lambda: (
            len(_pods(kubectl, namespace, name)) == replicas and _pods(kubectl, namespace, name)
        ),
        timeout=60,
        what=f"{replicas} pods of {name}",
    )
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == runtime
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["shardkeeper", "shard"]


def _pods(kubectl: Kubectl, namespace: str, shard: str) -> list[dict[str, Any]]:
    out = kubectl(
        "get", "pods", "-n", namespace, "-l", f"shardkeeper.io/shard={shard}", "-o", "json"
    )

    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items
