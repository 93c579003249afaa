"""Collection retention as the operator runs it: orders posted to the example capture are
read by the example derivation; once spec.retention is set, the operator deletes the
orders journal's fragments the derivation has passed (all but the last) and says so in
status.retention; a derivation created afterwards starts at the oldest retained order and
its totals are exactly those of the retained and later orders."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.controller.conftest import StartOperator
from tests.controller.support import (
    GROUP,
    Kubectl,
    apply,
    examples,
    get,
    wait_ready,
)
from tests.controller.test_flow import capture_url, post
from tests.support.wait import wait_for

from shardkeeper.runtime.core.documents import parse_line, split_lines
from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.layout import collection_journal, object_key
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev.environment import EnvInfo

READER = "customer-totals-00000000-00000000"
LATER = "later-totals"
BEFORE = [
    {"id": "o1", "customer": "alice", "amount": 10.0},
    {"id": "o2", "customer": "bob", "amount": 5.5},
    {"id": "o3", "customer": "alice", "amount": 2.5},
]
AFTER = [
    {"id": "o4", "customer": "carol", "amount": 1.0},
    {"id": "o5", "customer": "alice", "amount": 4.5},
]


def documents(journal: Journal) -> list[dict[str, Any]]:
    """The documents the journal holds now, from its first retained fragment."""
    held = journal.list_fragments()
    found = []
    for fragment in journal.read(held[0].begin if held else 0):
        if fragment.kind is FragmentKind.DATA:
            found += [
                parse_line(line.data) for line in split_lines(fragment.payload, fragment.begin)
            ]
    return found


def example(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def checkpoint_of(kubectl: Kubectl, namespace: str, shard: str, journal: str) -> int | None:
    found = get(kubectl, namespace, f"shards.{GROUP}", shard) or {}
    position: int | None = (
        ((found.get("status") or {}).get("checkpoint") or {}).get("sources", {}).get(journal)
    )
    return position


def totals(orders: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for order in orders:
        total, count = out.get(order["customer"], (0.0, 0))
        out[order["customer"]] = (total + order["amount"], count + 1)
    return out


def test_the_operator_deletes_what_the_reader_passed_and_a_later_task_reads_the_rest(
    *,
    operators: StartOperator,
    kubectl: Kubectl,
    namespace: str,
    dev_env: EnvInfo,
    bucket: str,
    s3: Any,
) -> None:
    operators("operator-a", "--retention-every=2s").wait_leading()
    docs = examples(
        dev_env,
        bucket,
        ("Secret", "s3-credentials"),
        ("StorageMapping", "local"),
        ("Collection", "orders"),
        ("Collection", "customer-totals"),
        ("Task", "ingest-orders"),
        ("Task", "customer-totals"),
    )
    apply(kubectl, namespace, docs)
    wait_ready(kubectl, namespace, ("ingest-orders", "customer-totals"))
    mapping = example(docs, "StorageMapping", "local")
    prefix = mapping["spec"]["stores"][0]["prefix"]
    objects = ObjectStore(s3, bucket)
    name = collection_journal(namespace, "orders", "ingest-orders-00000000-00000000")
    journal = Journal(objects, object_key(prefix, name))

    url = wait_for(lambda: capture_url(kubectl, namespace), timeout=60, what="the capture pod")
    for order in BEFORE:  # one request each: fragments of their own
        status, body = post(url, [order])
        assert status == 200, body

    def read_to_the_head() -> int | None:
        head = journal.head()
        return head if head and checkpoint_of(kubectl, namespace, READER, name) == head else None

    head = wait_for(
        read_to_the_head,
        timeout=90,
        what="the derivation's checkpoint at the head of the orders journal",
        interval=0.5,
    )
    before = journal.list_fragments()
    assert len(before) >= 2

    retention = {"spec": {"retention": {"maxBytes": 1}}}
    kubectl(
        "patch", "-n", namespace, f"collections.{GROUP}", "orders", "--type=merge",
        "-p", json.dumps(retention),
    )  # fmt: skip
    ran = wait_for(
        lambda: (
            (get(kubectl, namespace, f"collections.{GROUP}", "orders").get("status") or {})
            .get("retention", {})
            .get("removedFragments")
        ),
        timeout=60,
        what="status.retention with fragments removed",
        interval=0.5,
    )
    kept = journal.list_fragments()
    assert [f.end for f in kept] == [head], "all but the last fragment, which ends at the head"
    assert kept[0].begin > 0
    status = get(kubectl, namespace, f"collections.{GROUP}", "orders")["status"]["retention"]
    assert status["retainedBytes"] == kept[0].end - kept[0].begin
    assert ran == status["removedFragments"] == len(before) - 1
    assert status["removedBytes"] == before[-1].begin - before[0].begin
    retained = documents(journal)
    assert 1 <= len(retained) < len(BEFORE)
    assert [d["id"] for d in retained] == [o["id"] for o in BEFORE[-len(retained) :]]

    # a derivation created now starts at the oldest retained order
    task = copy.deepcopy(example(docs, "Task", "customer-totals"))
    task["metadata"] = {"name": LATER}
    task["spec"]["outputs"] = [LATER]
    task["spec"]["shards"] = {"hotStandbys": 0}
    output = copy.deepcopy(example(docs, "Collection", "customer-totals"))
    output["metadata"] = {"name": LATER}
    apply(kubectl, namespace, [output, task])
    wait_ready(kubectl, namespace, (LATER,))
    for order in AFTER:
        status_code, body = post(url, [order])
        assert status_code == 200, body
    later = Journal(
        objects,
        object_key(prefix, collection_journal(namespace, LATER, f"{LATER}-00000000-00000000")),
    )
    seen = [BEFORE[-len(retained) :], AFTER]
    expected = totals([o for part in seen for o in part])
    count = sum(len(part) for part in seen)

    def outputs() -> list[dict[str, Any]] | None:
        found = documents(later)
        return found if len(found) >= count else None

    written = wait_for(outputs, timeout=90, what=f"{count} totals of {LATER}", interval=0.5)
    assert len(written) == count, "one total per order read, none twice"
    final = {d["customer"]: (d["total"], d["orders"]) for d in written}
    assert final == expected
