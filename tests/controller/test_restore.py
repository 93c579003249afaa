"""Backup and point-in-time restore of a task (docs/backup-and-restore.md), as the operator
runs it: the example derivation counts orders; a Task with spec.restoreFrom {task, before:
T} starts from the derivation's recovery log as it was at T and goes on from there exactly
once, while the derivation keeps running with exact counts; a restore at the last commit
starts from all of it; and bad sources become conditions and Events, never shards."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from tests.controller.conftest import StartOperator
from tests.controller.support import (
    GROUP,
    Kubectl,
    apply,
    condition_of,
    event_reasons,
    examples,
    get,
    wait_ready,
)
from tests.controller.test_flow import capture_url, post
from tests.controller.test_retention import (
    AFTER,
    BEFORE,
    checkpoint_of,
    documents,
    example,
    totals,
)
from tests.support.wait import wait_for

from shardkeeper.api.meta import format_time
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.layout import collection_journal, object_key
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev.environment import EnvInfo

SOURCE = "customer-totals"
SOURCE_SHARD = "customer-totals-00000000-00000000"
AT_T = "totals-at-t"
NOW = "totals-now"
BEFORE_T = BEFORE  # the orders of the retention test: o1-o3, then o4-o5
AFTER_T = AFTER
LATER = [
    {"id": "o6", "customer": "bob", "amount": 2.0},
    {"id": "o7", "customer": "carol", "amount": 3.0},
]
LAST = [{"id": "o8", "customer": "alice", "amount": 1.0}]


def restored_task(
    docs: list[dict[str, Any]], name: str, restore_from: dict[str, Any]
) -> list[dict[str, Any]]:
    """The example derivation under another name, writing a collection of its own, started
    from the source's logs."""
    task = copy.deepcopy(example(docs, "Task", SOURCE))
    task["metadata"] = {"name": name}
    task["spec"]["outputs"] = [name]
    task["spec"]["shards"] = {"hotStandbys": 0}
    task["spec"]["restoreFrom"] = restore_from
    output = copy.deepcopy(example(docs, "Collection", SOURCE))
    output["metadata"] = {"name": name}
    return [output, task]


def counts_run_on(written: list[dict[str, Any]], start: dict[str, int]) -> None:
    """Each customer's documents count its orders one by one from ``start`` on: every
    order derived once, none twice, none left out."""
    seen: dict[str, list[int]] = {}
    for doc in written:
        seen.setdefault(doc["customer"], []).append(doc["orders"])
    for customer, orders in seen.items():
        first = start.get(customer, 0) + 1
        assert orders == list(range(first, first + len(orders))), (customer, orders)


def test_a_task_restores_another_at_a_time_and_at_its_last_commit(
    *,
    operators: StartOperator,
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
    s3: Any,
) -> None:
    operators("operator-a").wait_leading()
    docs = examples(
        dev_env,
        bucket,
        ("Secret", "s3-credentials"),
        ("StorageMapping", "local"),
        ("Collection", "orders"),
        ("Collection", "customer-totals"),
        ("Task", "ingest-orders"),
        ("Task", SOURCE),
    )
    apply(kubectl, namespace, docs)
    wait_ready(kubectl, namespace, ("ingest-orders", SOURCE))
    prefix = example(docs, "StorageMapping", "local")["spec"]["stores"][0]["prefix"]
    objects = ObjectStore(s3, bucket)
    orders_name = collection_journal(namespace, "orders", "ingest-orders-00000000-00000000")
    orders = Journal(objects, object_key(prefix, orders_name))

    def output_of(task: str) -> Journal:
        name = collection_journal(namespace, task, f"{task}-00000000-00000000")
        return Journal(objects, object_key(prefix, name))

    def derived(task: str, count: int) -> list[dict[str, Any]]:
        journal = output_of(task)

        def enough() -> list[dict[str, Any]] | None:
            found = documents(journal) if journal.list_fragments() else []
            return found if len(found) >= count else None

        return wait_for(enough, timeout=120, what=f"{count} totals of {task}", interval=0.5)

    def read_to_the_head() -> int | None:
        head = orders.head()
        at = checkpoint_of(kubectl, namespace, SOURCE_SHARD, orders_name)
        return head if head and at == head else None

    url = wait_for(lambda: capture_url(kubectl, namespace), timeout=60, what="the capture pod")

    def send(batch: list[dict[str, Any]]) -> None:
        for order in batch:
            status, body = post(url, [order])
            assert status == 200, body

    send(BEFORE_T)
    derived(SOURCE, len(BEFORE_T))
    wait_for(read_to_the_head, timeout=90, what="the derivation at the head", interval=0.5)
    # T: the derivation has committed every order before it, none after it
    at_t = datetime.now(UTC)
    counted_at_t = {c: n for c, (_, n) in totals(BEFORE_T).items()}
    send(AFTER_T)
    derived(SOURCE, len(BEFORE_T) + len(AFTER_T))

    # --- restore at T -------------------------------------------------------------------
    apply(
        kubectl, namespace, restored_task(docs, AT_T, {"task": SOURCE, "before": format_time(at_t)})
    )
    wait_ready(kubectl, namespace, (AT_T,))
    restore = get(kubectl, namespace, f"tasks.{GROUP}", AT_T)["status"]["restore"]
    assert restore["task"] == SOURCE
    [entry] = restore["shards"]
    source_shard = get(kubectl, namespace, f"shards.{GROUP}", SOURCE_SHARD)
    assert entry["shard"] == f"{AT_T}-00000000-00000000"
    assert entry["sourceShard"] == SOURCE_SHARD
    assert entry["recoveryLog"] == source_shard["spec"]["recoveryLog"]
    assert entry["offset"] > 0
    assert datetime.fromisoformat(entry["committedAt"]) <= at_t
    shard = get(kubectl, namespace, f"shards.{GROUP}", entry["shard"])
    assert shard["spec"]["restoreSource"] == {
        "shard": SOURCE_SHARD,
        "recoveryLog": entry["recoveryLog"],
        "offset": entry["offset"],
        "seq": entry["seq"],
        "committedAt": entry["committedAt"],
    }
    # it read on from the source's checkpoint at T: the orders after T, once each
    written = derived(AT_T, len(AFTER_T))
    assert len(written) == len(AFTER_T)
    counts_run_on(written, counted_at_t)

    send(LATER)
    everything = BEFORE_T + AFTER_T + LATER
    source_out = derived(SOURCE, len(everything))
    restored_out = derived(AT_T, len(AFTER_T) + len(LATER))

    # --- restore at the last commit -----------------------------------------------------
    wait_for(read_to_the_head, timeout=90, what="the derivation at the head", interval=0.5)
    apply(kubectl, namespace, restored_task(docs, NOW, {"task": SOURCE}))
    wait_ready(kubectl, namespace, (NOW,))
    send(LAST)
    everything += LAST
    now_out = derived(NOW, len(LAST))
    source_out = derived(SOURCE, len(everything))
    restored_out = derived(AT_T, len(AFTER_T) + len(LATER) + len(LAST))

    expected = totals(everything)
    for task, out, start in (
        (SOURCE, source_out, {}),
        (AT_T, restored_out, counted_at_t),
        (NOW, now_out, {c: n for c, (_, n) in totals(everything[:-1]).items()}),
    ):
        assert len(documents(output_of(task))) == len(out), f"{task} wrote more than expected"
        counts_run_on(out, start)
        final = {d["customer"]: (d["total"], d["orders"]) for d in out}
        assert all(final[c] == expected[c] for c in final), (task, final, expected)
    assert len(source_out) == len(everything), "the source derived every order once"
    assert {d["customer"] for d in now_out} == {"alice"}

    # the source ran on untouched: one shard, never fenced by the restores
    assert get(kubectl, namespace, f"shards.{GROUP}", SOURCE_SHARD)["status"]["phase"] == "Running"

    # --- bad sources --------------------------------------------------------------------
    bad = [
        ("restore-missing", {"task": "no-such-task"}, "RestoreSourceNotFound"),
        ("restore-capture", {"task": "ingest-orders"}, "RestoreSourceKindDiffers"),
        (
            "restore-too-early",
            {"task": SOURCE, "before": "2000-01-01T00:00:00Z"},
            "RestorePointNotFound",
        ),
    ]
    for name, restore_from, _ in bad:
        apply(kubectl, namespace, restored_task(docs, name, restore_from))
    for name, _, reason in bad:

        def degraded(name: str = name, reason: str = reason) -> dict[str, Any] | None:
            found = get(kubectl, namespace, f"tasks.{GROUP}", name)
            condition = condition_of(found, "Degraded")
            return condition if condition and condition.get("reason") == reason else None

        condition = wait_for(degraded, timeout=60, what=f"{name} degraded with {reason}")
        assert condition["status"] == "True"
        ready = condition_of(get(kubectl, namespace, f"tasks.{GROUP}", name), "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", reason)
        wait_for(
            lambda name=name, reason=reason: reason in event_reasons(kubectl, namespace, name),
            timeout=30,
            what=f"a {reason} Event on {name}",
        )
        shards = kubectl(
            "get", f"shards.{GROUP}", "-n", namespace, "-l", f"{GROUP}/task={name}", "-o", "name"
        ).stdout
        assert shards.strip() == "", f"{name} got shards: {shards}"
    too_early = condition_of(
        get(kubectl, namespace, f"tasks.{GROUP}", "restore-too-early"), "Degraded"
    )
    assert too_early is not None
    assert "nothing older is kept" in too_early["message"]
