"""Changing a running task: a new image or template rolls the pods standbys first and the
primary last, one at a time; ``disable`` stops the pods and keeps the volumes."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from tests.controller.support import (
    GROUP,
    Kubectl,
    OperatorProcess,
    apply,
    event_reasons,
    events,
    examples,
    get,
    wait_condition,
)
from tests.support.wait import wait_for
from urllib3.exceptions import ProtocolError

from shardkeeper_dev.environment import EnvInfo

SHARD = "customer-totals-00000000-00000000"
PIPELINE = [
    ("Secret", "s3-credentials"),
    ("StorageMapping", "local"),
    ("Collection", "orders"),
    ("Collection", "customer-totals"),
    ("Task", "customer-totals"),
]


def start(kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str, standbys: int) -> None:
    docs = examples(dev_env, bucket, *PIPELINE)
    docs[-1]["spec"]["shards"]["hotStandbys"] = standbys
    apply(kubectl, namespace, docs)
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/customer-totals"
    )
    # every standby tails the log (the shard is no longer degraded) and every pod is ready
    wait_condition(kubectl, namespace, f"shard/{SHARD}", "Degraded=False", timeout=90)
    wait_for(
        lambda: (
            (get(kubectl, namespace, "statefulset", SHARD) or {})
            .get("status", {})
            .get("readyReplicas")
            == standbys + 1
        ),
        timeout=60,
        what="every pod ready",
    )


def patch_task(kubectl: Kubectl, namespace: str, shards: dict[str, Any]) -> None:
    body = json.dumps({"spec": {"shards": shards}})
    kubectl("patch", "-n", namespace, f"tasks.{GROUP}/customer-totals", "--type=merge", "-p", body)


def pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    out = kubectl(
        "get", "pods", "-n", namespace, "-l", f"shardkeeper.io/shard={SHARD}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


class DeletionOrder:
    """Watches the shard's pods and records the order in which they begin to terminate."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.order: list[str] = []
        self._seen: set[str] = set()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(api, namespace), daemon=True)

    def _run(self, api: Any, namespace: str) -> None:
        core = client.CoreV1Api(api)
        stream = self._watch.stream(
            core.list_namespaced_pod, namespace, label_selector=f"shardkeeper.io/shard={SHARD}"
        )
        # the connection drops when the watch is stopped at the end of the test
        with contextlib.suppress(ProtocolError):
            for event in stream:
                pod = event["object"]
                gone = event["type"] == "DELETED" or pod.metadata.deletion_timestamp is not None
                if gone and pod.metadata.uid not in self._seen:
                    self._seen.add(pod.metadata.uid)
                    self.order.append(pod.metadata.name)

    def __enter__(self) -> DeletionOrder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watch.stop()


@pytest.fixture
def deletions(kube_api: Any, namespace: str) -> Iterator[DeletionOrder]:
    with DeletionOrder(kube_api, namespace) as order:
        yield order


def rolled(kubectl: Kubectl, namespace: str, expect: dict[str, str]) -> bool:
    """Every pod runs the expected container fields and is ready, and the shard says so."""
    found = pods(kubectl, namespace)
    if len(found) != 3:
        return False
    for pod in found:
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        actual = {"image": container["image"], **env}
        if any(actual.get(k) != v for k, v in expect.items()) or not ready(pod):
            return False
    sts = get(kubectl, namespace, "statefulset", SHARD)
    return bool(sts["status"].get("updatedReplicas") == 3)


def expected_order(primary: str) -> list[str]:
    standbys = sorted((f"{SHARD}-{i}" for i in range(3) if f"{SHARD}-{i}" != primary), reverse=True)
    return [*standbys, primary]


@pytest.mark.usefixtures("operator")
def test_new_image_then_new_template_roll_standbys_first_primary_last(
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
    deletions: DeletionOrder,
) -> None:
    start(kubectl, namespace, dev_env, bucket, standbys=2)
    for change, expect in [
        ({"image": "shardkeeper:roll-test"}, {"image": "shardkeeper:roll-test"}),
        ({"logLevel": "debug"}, {"SHARDKEEPER_LOG_LEVEL": "debug"}),
    ]:
        primary = get(kubectl, namespace, f"shards.{GROUP}", SHARD)["status"]["primary"]
        deletions.order.clear()
        patch_task(kubectl, namespace, change)
        wait_for(
            lambda expect=expect: rolled(kubectl, namespace, expect),
            timeout=180,
            what=f"{change} rolled out",
        )
        replaced = [
            e["message"] for e in events(kubectl, namespace, SHARD) if e["reason"] == "ReplacingPod"
        ]
        assert deletions.order == expected_order(primary), (change, replaced)
        kubectl(
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            "--timeout=60s",
            "task/customer-totals",
        )
    reasons = event_reasons(kubectl, namespace, SHARD)
    assert reasons.count("ReplacingPod") == 6
    wait_for(
        lambda: "RollComplete" in event_reasons(kubectl, namespace, SHARD),
        timeout=30,
        what="a RollComplete Event",
    )


def claims(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    out = kubectl("get", "pvc", "-n", namespace, "-o", "json")
    return {c["metadata"]["name"]: c["metadata"]["uid"] for c in json.loads(out.stdout)["items"]}


def test_disable_stops_the_pods_and_keeps_the_data_and_enable_brings_them_back(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    start(kubectl, namespace, dev_env, bucket, standbys=1)
    volumes = claims(kubectl, namespace)
    assert len(volumes) == 2

    patch_task(kubectl, namespace, {"disable": True})
    wait_condition(
        kubectl, namespace, "task/customer-totals", "Ready=True", reason="Disabled", timeout=90
    )
    wait_for(lambda: pods(kubectl, namespace) == [], timeout=60, what="the pods to stop")
    assert get(kubectl, namespace, "statefulset", SHARD)["spec"]["replicas"] == 0
    assert get(kubectl, namespace, f"shards.{GROUP}", SHARD)["status"]["phase"] == "Disabled"
    assert claims(kubectl, namespace) == volumes, "the volumes stay"
    task = get(kubectl, namespace, f"tasks.{GROUP}", "customer-totals")
    assert task["status"]["shardsByPhase"] == {"Disabled": 1}
    assert task["status"]["readyShards"] == 0

    patch_task(kubectl, namespace, {"disable": False})
    wait_condition(
        kubectl, namespace, "task/customer-totals", "Ready=True", reason="Running", timeout=120
    )
    assert len(pods(kubectl, namespace)) == 2
    assert claims(kubectl, namespace) == volumes, "the same volumes come back"
