"""Documents flow through the example pipeline the operator runs: orders posted to the HTTP
capture come out of the derivation as running totals and land in PostgreSQL. Then
`shardkeeper storage` reports what that left in the bucket, and prunes by hand."""

from __future__ import annotations

import collections
import json
import urllib.parse
import urllib.request
from typing import Any

import psycopg
from psycopg import sql
from tests.controller.support import (
    EXAMPLE_TASKS,
    GROUP,
    Kubectl,
    OperatorProcess,
    apply,
    examples_in_a_schema,
    get,
    run_cli,
    wait_ready,
)
from tests.support.wait import NOT_YET, wait_for

from shardkeeper.storage.fragment import WRITER_OBJECT
from shardkeeper_dev import environment
from shardkeeper_dev.environment import EnvInfo

ORDERS = [
    {"id": "o1", "customer": "alice", "amount": 10.0},
    {"id": "o2", "customer": "bob", "amount": 5.5},
    {"id": "o3", "customer": "alice", "amount": 2.5},
    {"id": "o4", "customer": "carol", "amount": 1.0},
    {"id": "o5", "customer": "bob", "amount": 4.5},
]
TOTALS = {"alice": (12.5, 2), "bob": (10.0, 2), "carol": (1.0, 1)}


def post(url: str, body: Any) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def totals(dev_env: EnvInfo, schema: str) -> dict[str, tuple[float, int]]:
    query = sql.SQL("SELECT customer, total, orders FROM {}.customer_totals").format(
        sql.Identifier(schema)
    )
    with psycopg.connect(dev_env.postgres_dsn) as conn:
        return {row[0]: (float(row[1]), int(row[2])) for row in conn.execute(query)}


def capture_url(kubectl: Kubectl, namespace: str) -> str | None:
    pod = get(kubectl, namespace, "pod", "ingest-orders-00000000-00000000-0")
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod or {}).get("status", {}).get("conditions", [])
    )
    return f"http://{pod['status']['podIP']}:8080/orders" if pod and ready else None


def test_orders_posted_to_the_capture_come_out_as_totals_in_postgres(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    docs, schema = examples_in_a_schema(dev_env, bucket)
    apply(kubectl, namespace, docs)
    wait_ready(kubectl, namespace)

    url = wait_for(lambda: capture_url(kubectl, namespace), timeout=60, what="the capture pod")
    status, body = post(url, ORDERS)
    assert status == 200, body

    found = wait_for(
        lambda: totals(dev_env, schema) == TOTALS and totals(dev_env, schema),
        timeout=120,
        what="the totals in PostgreSQL",
        interval=0.5,
        # until the materialization has created its schema and table
        retry=(*NOT_YET, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName),
    )
    assert found == TOTALS
    # the collections list the journals that the running shards write
    written = get(kubectl, namespace, f"collections.{GROUP}", "customer-totals")
    assert written["status"]["journals"] == [
        f"collections/{namespace}/customer-totals/customer-totals-00000000-00000000"
    ]
    try:
        # the same running pipeline, rather than a new one: what it left in the bucket
        s3 = environment.s3_client(dev_env)
        check_storage_usage(dev_env, kubectl, namespace, s3, bucket)
        check_storage_prune(dev_env, kubectl, namespace, s3, bucket)
    finally:
        with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def listed(s3: Any, bucket: str) -> dict[str, int]:
    """Every object of the bucket and its size, as boto3 lists them."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found |= {obj["Key"]: obj["Size"] for obj in page.get("Contents", [])}
    return found


def store_prefix(kubectl: Kubectl, namespace: str) -> str:
    prefix: str = get(kubectl, namespace, "storagemapping", "local")["spec"]["stores"][0]["prefix"]
    return prefix


Sums = dict[tuple[str, ...], tuple[int, int]]
# the folders of a recovery log (storage/recoverylog.py) and what usage calls them
PARTS = {"journal": "fragments", "snapshots": "snapshots", "snapshot-data": "snapshots"}


def sums_from_the_bucket(objects: dict[str, int], prefix: str) -> Sums:
    """(task, log, part) and (collection,) → (objects, bytes), counted from the listing
    independently of the command: recovery/<ns>/<task>/<log>/<part>/...,
    collections/<ns>/<collection>/<writer>/..."""
    sums: dict[tuple[str, ...], list[int]] = collections.defaultdict(lambda: [0, 0])
    for key, size in objects.items():
        parts = key.removeprefix(prefix).split("/")
        if parts[0] == "recovery":
            log, inside = "/".join(parts[:4]), parts[4] if len(parts) > 4 else ""
            # the writer's address for hints lies among the fragments but is none
            part = "other" if parts[5:] == [WRITER_OBJECT] else PARTS.get(inside, "other")
            names: list[tuple[str, ...]] = [(parts[2], log, part), (parts[2], log, "total")]
        elif parts[0] == "collections":
            names = [(parts[2],)]
        else:
            continue
        for name in names:
            sums[name][0] += 1
            sums[name][1] += size
    return {name: (n, size) for name, (n, size) in sums.items()}


def sums_from_the_command(usage: dict[str, Any]) -> Sums:
    sums: Sums = {}
    for task in usage["tasks"]:
        for log in task["logs"]:
            for part in ("fragments", "snapshots", "other", "total"):
                tally = log[part]
                if tally["objects"]:
                    sums[task["task"], log["log"], part] = (tally["objects"], tally["bytes"])
    for c in usage["collections"]:
        if c["total"]["objects"]:
            sums[(c["collection"],)] = (c["total"]["objects"], c["total"]["bytes"])
    return sums


def check_storage_usage(
    dev_env: EnvInfo, kubectl: Kubectl, namespace: str, s3: Any, bucket: str
) -> None:
    prefix = store_prefix(kubectl, namespace)

    def usage_and_bucket_agree() -> dict[str, Any] | None:
        usage = json.loads(
            run_cli(dev_env, "shardkeeper", "storage", "usage", "-n", namespace, "-o", "json")
        )
        # the shards keep running: a listing that moved between the two is taken again
        agree = sums_from_the_command(usage) == sums_from_the_bucket(listed(s3, bucket), prefix)
        return usage if agree else None

    usage = wait_for(usage_and_bucket_agree, timeout=60, what="usage to match the bucket")
    assert [t["task"] for t in usage["tasks"]] == sorted(EXAMPLE_TASKS)
    for task in usage["tasks"]:
        assert task["store"] == f"s3://{bucket}/{prefix}"
        (log,) = task["logs"]
        assert log["log"] == f"recovery/{namespace}/{task['task']}/00000000-00000000"
        assert log["shard"] == f"{task['task']}-00000000-00000000"
        assert log["fragments"]["objects"] > 0, log
    journals = {c["collection"]: c["journals"] for c in usage["collections"]}
    assert journals == {"customer-totals": 1, "orders": 1}
    # one task: it and the collections it names; the table by default
    one = run_cli(dev_env, "shardkeeper", "storage", "-n", namespace, "usage", "customer-totals")
    heading, shard_row = one.splitlines()[:2]
    assert heading.split()[:3] == ["TASK", "SHARD", "LOG"]
    assert shard_row.split()[:2] == ["customer-totals", "customer-totals-00000000-00000000"]
    assert [line.split()[0] for line in one.split("\n\n")[1].splitlines()[1:]] == [
        "customer-totals",
        "orders",
    ]


def check_storage_prune(
    dev_env: EnvInfo, kubectl: Kubectl, namespace: str, s3: Any, bucket: str
) -> None:
    """Nothing of a young log is unneeded (no snapshot yet), so the test leaves something
    that is: a fork registration of a child that does not read the log (its first
    fragment is its own fence, not a fork record), which pruning removes."""
    prefix = store_prefix(kubectl, namespace)
    log = f"{prefix}recovery/{namespace}/totals-to-postgres/00000000-00000000"
    child = f"{prefix}recovery/{namespace}/ingest-orders/00000000-00000000"
    stale = f"{log}/forks/{urllib.parse.quote(child, safe='')}.json"
    body = json.dumps({"child": child, "fence_offset": 0}).encode()
    s3.put_object(Bucket=bucket, Key=stale, Body=body)
    task = "totals-to-postgres"

    before = listed(s3, bucket)
    planned = json.loads(
        run_cli(
            dev_env,
            "shardkeeper",
            "storage",
            "-n",
            namespace,
            "prune",
            task,
            "--dry-run",
            "-o",
            "json",
        )
    )
    (shard,) = planned["shards"]
    assert (planned["dryRun"], shard["pruned"], shard["heldBack"]) == (True, False, None)
    assert stale in shard["removed"]
    assert shard["removedObjects"] == len(shard["removed"])
    assert set(before) <= set(listed(s3, bucket)), "a dry run deleted something"
    # the kubectl plugin runs the same prune
    by_plugin = json.loads(
        run_cli(
            dev_env,
            "kubectl",
            "shards",
            "-n",
            namespace,
            "prune-logs",
            task,
            "--dry-run",
            "-o",
            "json",
        )
    )
    assert by_plugin["shards"][0]["removed"] == shard["removed"]

    pruned = json.loads(
        run_cli(dev_env, "shardkeeper", "storage", "-n", namespace, "prune", task, "-o", "json")
    )
    (done,) = pruned["shards"]
    assert done["pruned"] is True
    assert done["removed"] == shard["removed"]
    after = listed(s3, bucket)
    assert not set(done["removed"]) & set(after)
    assert set(before) - set(done["removed"]) <= set(after), "it removed more than it listed"
    summary = run_cli(dev_env, "shardkeeper", "storage", "-n", namespace, "prune", task)
    assert "removed 0 objects" in summary
