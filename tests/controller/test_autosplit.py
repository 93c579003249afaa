"""autoSplit driven by real lag, end to end: the operator, the process node's shard pods
and MinIO, with orders posted to the capture all along.

The derivation is slowed on purpose: it is the example's running total per customer as a
Python plug-in (``shardkeeper_dev.plugins:slow_totals``) that waits 30 ms per document,
as a derivation calling a slow service would. One shard of it derives at most about 33
orders a second; the test posts 40 orders every 0.5 s, so the shard's source lag
(``status.lag``, which the runtime reports every 2 s here) grows for real. Nothing asks
for a split but the Task's ``autoSplit``: once the lag has stayed above ``lagBytes`` for
``sustainedFor``, the operator splits the shard, and the cooldown keeps it from splitting
again while the halves are still behind. At the end every order was derived exactly
once, and the recovery logs show one owner at a time for every key."""

from __future__ import annotations

import copy
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.controller.conftest import StartOperator
from tests.controller.support import GROUP, Kubectl, apply, events, examples, get
from tests.controller.test_splits import (
    PARENT,
    PREFIX,
    TASK,
    Orders,
    check_derived_once,
    derived,
    settled,
    shards,
    time_of,
)
from tests.support.wait import wait_for

from shardkeeper.storage.layout import task_recovery_dir
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev import environment
from shardkeeper_dev.environment import EnvInfo
from shardkeeper_dev.ownership import check_ownership

LAG_BYTES = 16 * 1024  # about 120 orders not yet derived
SUSTAINED = timedelta(seconds=5)
COOLDOWN = "10m"  # longer than the test: no second automatic split may come
CHILD = f"{TASK}-80000000-00000000"
CAPTURE = "ingest-orders-00000000-00000000"


def slow_derivation(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The example derivation as the slow plug-in, with autoSplit at a small lag."""
    (task,) = [
        copy.deepcopy(d) for d in docs if (d["kind"], d["metadata"]["name"]) == ("Task", TASK)
    ]
    task["spec"]["derive"] = {
        "python": {"module": "shardkeeper_dev.plugins:slow_totals"},
        "shuffle": {"orders": ["/customer"]},
    }
    task["spec"]["shards"]["scaling"] = {
        "minShards": 1,
        "maxShards": 4,
        "autoSplit": {
            "by": "key",
            "lagBytes": LAG_BYTES,
            "sustainedFor": f"{SUSTAINED.seconds}s",
            "cooldown": COOLDOWN,
        },
    }
    return task


def capture_primary_url(kubectl: Kubectl, namespace: str) -> str | None:
    """The capture's endpoint on its primary pod, once it accepts connections (only the
    primary listens; its standby's pod is Ready too)."""
    shard = get(kubectl, namespace, f"shards.{GROUP}", CAPTURE) or {}
    primary = (shard.get("status") or {}).get("primary")
    pod = get(kubectl, namespace, "pod", primary) if primary else None
    address = (pod or {}).get("status", {}).get("podIP")
    if not address:
        return None
    with socket.create_connection((address, 8080), timeout=2):
        return f"http://{address}:8080/orders"


def lag_of(kubectl: Kubectl, namespace: str, name: str) -> int:
    shard = get(kubectl, namespace, f"shards.{GROUP}", name) or {}
    lag: int = (shard.get("status") or {}).get("lag") or 0
    return lag


def behind_past_due(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    """A shard that autoSplit would split now but for the cooldown: its lag has been
    above lagBytes for sustainedFor, and a few seconds more for the operator to act."""
    now = datetime.now(UTC)
    for shard in shards(kubectl, namespace).values():
        status = shard.get("status") or {}
        since = status.get("lagAboveSince")
        late = since is not None and now - time_of(since) >= SUSTAINED + timedelta(seconds=4)
        if late and (status.get("lag") or 0) > LAG_BYTES:
            return shard
    return None


def test_a_derivation_that_falls_behind_is_split_by_auto_split_once_within_its_cooldown(
    operators: StartOperator, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    operators("operator-a", "--status-interval=2").wait_leading()
    wanted = (
        ("Secret", "s3-credentials"),
        ("StorageMapping", "local"),
        ("Collection", "orders"),
        ("Collection", TASK),
        ("Task", "ingest-orders"),
    )
    docs = examples(dev_env, bucket)
    apply(kubectl, namespace, [*examples(dev_env, bucket, *wanted), slow_derivation(docs)])
    for task in ("ingest-orders", TASK):
        kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", f"task/{task}")
    url = wait_for(
        lambda: capture_primary_url(kubectl, namespace), timeout=60, what="the capture primary"
    )
    orders = Orders(url, interval=0.5).start()
    try:
        # the shard falls behind for real, as its own runtime reports
        wait_for(
            lambda: lag_of(kubectl, namespace, PARENT) > LAG_BYTES,
            timeout=60,
            what="the derivation's lag above lagBytes",
            interval=0.5,
        )
        # nobody asks: the operator splits it once the lag stayed above for sustainedFor
        two = wait_for(
            lambda: settled(kubectl, namespace, 2), timeout=180, what="two shards", interval=1.0
        )
        split = two[PARENT]["status"]["split"]
        steps = [s["step"] for s in split["steps"]]
        assert steps == ["Plan", "Children", "CatchUp", "HandOff", "Finish", "Done"]
        assert two[PARENT]["spec"]["keyEnd"] == "7fffffff"
        assert (two[CHILD]["spec"]["keyBegin"], two[CHILD]["spec"]["keyEnd"]) == (
            "80000000",
            "ffffffff",
        )
        asked = [e for e in events(kubectl, namespace, TASK) if e["reason"] == "SplitRequested"]
        assert len(asked) == 1, asked
        assert "source lag" in asked[0]["message"], asked[0]["message"]
        # the halves are still behind, long enough to be split again, but for the cooldown
        wait_for(
            lambda: behind_past_due(kubectl, namespace),
            timeout=60,
            what="a shard behind for sustainedFor after the split",
            interval=0.5,
        )
    finally:
        expected = orders.stop()
    found = shards(kubectl, namespace)
    assert sorted(found) == [PARENT, CHILD], "no second split within the cooldown"
    assert all("split" not in s["spec"] for s in found.values())
    asked = [e for e in events(kubectl, namespace, TASK) if e["reason"] == "SplitRequested"]
    assert len(asked) == 1, asked

    # once the halves catch up, every order was derived exactly once
    documents = wait_for(
        lambda: (d := derived(dev_env, bucket, namespace)) and len(d) >= orders.posted and d,
        timeout=120,
        what=f"{orders.posted} derived documents",
        interval=1.0,
    )
    check_derived_once(documents, expected, orders.posted)
    objects = ObjectStore(environment.s3_client(dev_env), bucket)
    report = check_ownership(objects, PREFIX + task_recovery_dir(namespace, TASK))
    assert len(report.logs) == 2, report
