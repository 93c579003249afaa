"""Splits of the running example, end to end: the operator, the process node's shard
pods, MinIO and PostgreSQL, with orders posted to the capture all along.

One pipeline serves every step, so the environment and the waits are paid once: the
derivation splits by hand (`kubectl patch` of spec.split) from 1 to 2 shards, then to 4
through `minShards: 4` in the Task applied again, as a GitOps tool would. At the end the
totals in PostgreSQL are exact, every derived document was written once, and the
recovery logs prove that each key was owned by one primary at a time."""

from __future__ import annotations

import collections
import copy
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from tests.controller.conftest import StartOperator
from tests.controller.support import (
    GROUP,
    Kubectl,
    apply,
    event_reasons,
    examples,
    get,
)
from tests.controller.test_flow import capture_url, post, totals
from tests.support.wait import NOT_YET, wait_for

from shardkeeper.runtime.shell.collectionio import read_collection
from shardkeeper.storage.layout import task_recovery_dir
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev import environment, tools
from shardkeeper_dev.environment import EnvInfo
from shardkeeper_dev.ownership import check_ownership

PREFIX = "examples/"  # the example StorageMapping's
TASK = "customer-totals"
MATERIALIZATION = ("Task", "totals-to-postgres")
PARENT = f"{TASK}-00000000-00000000"
CUSTOMERS = [f"c{i:02d}" for i in range(40)]


class Orders:
    """Posts orders to the capture until stopped; what the totals must then be.

    ``urls`` is one capture URL, or a function of the URLs to spread posts over (read again
    before each post, so a test can widen it). With ``retry``, a post that the capture
    refused without writing it (connection refused, or a 503 that says so, as a capture
    answers while it hands off) is sent again, to the next URL; any other failure stops the
    posting, since the totals would then be unknown."""

    def __init__(self, urls: str | Callable[[], Sequence[str]], *, retry: bool = False) -> None:
        self.urls = (lambda: [urls]) if isinstance(urls, str) else urls
        self.retry = retry
        self.expected: dict[str, tuple[float, int]] = {}
        self.posted = 0
        self.by_url: collections.Counter[str] = collections.Counter()
        self.retried = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Orders:
        self._thread.start()
        return self

    def _run(self) -> None:
        sums: collections.Counter[str] = collections.Counter()
        counts: collections.Counter[str] = collections.Counter()
        sent = 0
        while not self._stop.is_set():
            batch = [
                {"id": f"o{self.posted + i}", "customer": c, "amount": 1.0 + i % 3}
                for i, c in enumerate(CUSTOMERS)
            ]
            while True:
                urls = self.urls()
                url = urls[sent % len(urls)]
                sent += 1
                try:
                    status, body = post(url, batch)
                except OSError as exc:
                    status, body = 0, repr(exc)
                if status == 200 or not (self.retry and not_written(status, body)):
                    break
                self.retried += 1
                self._stop.wait(0.1)
            if status != 200:
                # a refusal that may have been written would make the totals unknown
                self.failures.append(f"{url}: {status}: {body}")
                return
            for order in batch:
                sums[order["customer"]] += order["amount"]
                counts[order["customer"]] += 1
            self.posted += len(batch)
            self.by_url[url] += 1
            self.expected = {c: (sums[c], counts[c]) for c in sums}
            self._stop.wait(0.25)

    def alive(self) -> bool:
        """True while it posts; raises if it stopped on a failure."""
        assert not self.failures, self.failures
        return True

    def stop(self) -> dict[str, tuple[float, int]]:
        self._stop.set()
        self._thread.join(60)
        assert not self.failures, self.failures
        return self.expected


def not_written(status: int, body: str) -> bool:
    """Whether a failed post was certainly not written (capture.py's answers)."""
    if status == 0:
        return "Connection refused" in body or "ConnectionRefusedError" in body
    return status == 503 and "did not commit in time" not in body


def shards(kubectl: Kubectl, namespace: str, task: str = TASK) -> dict[str, dict[str, Any]]:
    out = kubectl("get", f"shards.{GROUP}", "-n", namespace, "-o", "json")
    return {
        s["metadata"]["name"]: s
        for s in json.loads(out.stdout)["items"]
        if s["spec"]["task"] == task
    }


def settled(
    kubectl: Kubectl, namespace: str, count: int, task: str = TASK
) -> dict[str, dict[str, Any]] | None:
    """The task's shards, once there are ``count``, all Running, and no split runs."""
    found = shards(kubectl, namespace, task)
    if len(found) != count:
        return None
    for shard in found.values():
        status = shard.get("status") or {}
        split = status.get("split") or {}
        if status.get("phase") != "Running" or split.get("step") not in (None, "Done"):
            return None
        if shard["spec"].get("splitSource") or shard["spec"].get("splitTargets"):
            return None
    return found


def test_the_derivation_splits_by_hand_then_by_min_shards_and_totals_stay_exact(
    operators: StartOperator, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    operator = operators("operator-a")
    operator.wait_leading()
    schema = f"t_{secrets.token_hex(4)}"
    docs = examples(dev_env, bucket)
    for doc in docs:
        if doc["kind"] == "Task" and "materialize" in doc["spec"]:
            doc["spec"]["materialize"]["postgres"]["schema"] = schema
    apply(kubectl, namespace, docs)
    for task in ("ingest-orders", TASK, "totals-to-postgres"):
        kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", f"task/{task}")
    url = wait_for(lambda: capture_url(kubectl, namespace), timeout=60, what="the capture pod")
    orders = Orders(url).start()
    wait_for(lambda: orders.posted >= 400, timeout=60, what="orders flowing")

    # 1 -> 2, by hand
    kubectl(
        "patch", f"shards.{GROUP}", PARENT, "-n", namespace, "--type", "merge",
        "-p", '{"spec":{"split":{"by":"key"}}}',
    )  # fmt: skip
    two = wait_for(lambda: settled(kubectl, namespace, 2), timeout=240, what="two shards")
    parent = two[PARENT]
    assert parent["spec"]["keyEnd"] == "7fffffff"
    assert "split" not in parent["spec"]
    steps = [s["step"] for s in parent["status"]["split"]["steps"]]
    assert steps == ["Plan", "Children", "CatchUp", "HandOff", "Finish", "Done"]
    child = two[f"{TASK}-80000000-00000000"]
    assert (child["spec"]["keyBegin"], child["spec"]["keyEnd"]) == ("80000000", "ffffffff")
    posted_at_two = orders.posted

    # 2 -> 4, declaratively: the Task applied again with minShards: 4
    (task,) = [
        copy.deepcopy(d) for d in docs if (d["kind"], d["metadata"]["name"]) == ("Task", TASK)
    ]
    task["spec"]["shards"]["scaling"].update(minShards=4, maxShards=8)
    apply(kubectl, namespace, [task])
    # the operator killed in the middle of both splits; the next one resumes them
    wait_for(
        lambda: any(
            split_step(kubectl, namespace, name) in ("Children", "CatchUp")
            for name in shards(kubectl, namespace)
        ),
        timeout=120,
        what="a split under way",
    )
    operator.kill()
    # its Lease waits out the killed leader's, after a start-up that is slow on a busy machine
    operators("operator-b").wait_leading(timeout=120)
    four = wait_for(lambda: settled(kubectl, namespace, 4), timeout=300, what="four shards")
    assert sorted((s["spec"]["keyBegin"], s["spec"]["keyEnd"]) for s in four.values()) == [
        ("00000000", "3fffffff"),
        ("40000000", "7fffffff"),
        ("80000000", "bfffffff"),
        ("c0000000", "ffffffff"),
    ]

    # the materialization 1 -> 2, by key: each half keeps its own checkpoint row
    (mat,) = [
        copy.deepcopy(d) for d in docs if (d["kind"], d["metadata"]["name"]) == MATERIALIZATION
    ]
    mat["spec"].setdefault("shards", {})["scaling"] = {"minShards": 2}
    apply(kubectl, namespace, [mat])
    wait_for(
        lambda: settled(kubectl, namespace, 2, task=MATERIALIZATION[1]),
        timeout=240,
        what="two materialization shards",
    )
    wait_for(lambda: orders.posted >= posted_at_two + 400, timeout=60, what="orders after")
    expected = orders.stop()

    found = wait_for(
        lambda: totals(dev_env, schema) == expected and totals(dev_env, schema),
        timeout=180,
        what="exact totals in PostgreSQL",
        interval=1.0,
        retry=(*NOT_YET, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName),
    )
    assert found == expected
    # the recovery logs prove that one primary at a time owned each key
    objects = ObjectStore(environment.s3_client(dev_env), bucket)
    for name in (TASK, MATERIALIZATION[1]):
        report = check_ownership(objects, PREFIX + task_recovery_dir(namespace, name))
        assert len(report.logs) == (4 if name == TASK else 2), report
    # every derived document once: one per order, whichever shard derived it
    derived = [
        d.document
        for d in read_collection(
            ObjectStore(environment.s3_client(dev_env), bucket), PREFIX, namespace, TASK
        )
    ]
    uuids = [d["_meta"]["uuid"] for d in derived]
    assert len(set(uuids)) == len(uuids)
    assert len(derived) == orders.posted
    by_customer = collections.defaultdict(list)
    for document in derived:
        by_customer[document["customer"]].append(document["orders"])
    for customer, counts in by_customer.items():
        assert sorted(counts) == list(range(1, expected[customer][1] + 1)), customer
    with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT shard FROM {}.shardkeeper_checkpoints").format(sql.Identifier(schema))
        )
        assert sorted(r[0] for r in rows) == [
            f"{namespace}/totals-to-postgres-00000000-00000000",
            f"{namespace}/totals-to-postgres-80000000-00000000",
        ]
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def split_step(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    shard = get(kubectl, namespace, f"shards.{GROUP}", name) or {}
    step: str | None = ((shard.get("status") or {}).get("split") or {}).get("step")
    return step


def test_a_split_is_aborted_by_its_timeout_and_cancelled_by_removing_it(
    operators: StartOperator, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    """Before the hand-off a split can end without a trace on the parent: a catch-up
    timeout aborts it, and so does a person removing spec.split."""
    hasty = operators("operator-hasty", "--split-catch-up-timeout=1s")
    hasty.wait_leading()
    wanted = (("Secret", "s3-credentials"), ("StorageMapping", "local"), ("Collection", "orders"))
    docs = examples(dev_env, bucket, *wanted, ("Collection", TASK), ("Task", TASK))
    apply(kubectl, namespace, docs)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", f"task/{TASK}")
    before = get(kubectl, namespace, f"shards.{GROUP}", PARENT)
    split = '{"spec":{"split":{"by":"key"}}}'
    kubectl("patch", f"shards.{GROUP}", PARENT, "-n", namespace, "--type", "merge", "-p", split)
    wait_for(
        lambda: split_step(kubectl, namespace, PARENT) == "Aborted",
        timeout=120,
        what="the split aborted by its timeout",
    )
    parent = get(kubectl, namespace, f"shards.{GROUP}", PARENT)
    assert "timeout" in parent["status"]["split"]["message"], parent["status"]["split"]
    check_untouched(kubectl, namespace, before)
    assert "SplitAborted" in event_reasons(kubectl, namespace, PARENT)

    hasty.stop()
    patient = operators("operator-patient")
    patient.wait_leading()
    # this time through the CLI, as `shardkeeper shards` and as the kubectl plugin
    asked = shards_cli(dev_env, "shardkeeper", "shards", "-n", namespace, "split", PARENT)
    assert "asked for a split" in asked
    wait_for(
        lambda: split_step(kubectl, namespace, PARENT) in ("Plan", "Children", "CatchUp"),
        timeout=60,
        what="a new split under way",
    )
    shards_cli(dev_env, "kubectl", "shards", "-n", namespace, "cancel-split", PARENT)
    wait_for(
        lambda: split_step(kubectl, namespace, PARENT) == "Aborted",
        timeout=120,
        what="the split aborted by its removal",
    )
    check_untouched(kubectl, namespace, before)
    shown = shards_cli(dev_env, "kubectl", "shards", "-n", namespace, "status", TASK)
    assert f"shard/{PARENT}  key 00000000-ffffffff  r-clock 00000000-ffffffff  Running" in shown
    refused = subprocess.run(
        [sys.executable, "-m", "shardkeeper", "shards", "-n", namespace, "split", "nope"],
        env=cli_env(dev_env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert "nope" in refused.stderr


def cli_env(dev_env: EnvInfo) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}:{tools.binary_path('kubectl').parent}:{os.environ.get('PATH', '')}"
    return {**os.environ, "KUBECONFIG": str(dev_env.kubeconfig), "PATH": path}


def shards_cli(dev_env: EnvInfo, *argv: str) -> str:
    done = subprocess.run(argv, env=cli_env(dev_env), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_untouched(kubectl: Kubectl, namespace: str, before: dict[str, Any]) -> None:
    """The parent as it was, and no child left."""
    child = f"{TASK}-80000000-00000000"
    wait_for(
        lambda: get(kubectl, namespace, f"shards.{GROUP}", child) is None,
        timeout=60,
        what="the child deleted",
    )
    parent = get(kubectl, namespace, f"shards.{GROUP}", PARENT)
    assert parent["spec"]["keyEnd"] == "ffffffff"
    assert "split" not in parent["spec"]
    assert "splitTargets" not in parent["spec"]
    assert parent["status"]["epoch"] == before["status"]["epoch"]
    assert parent["status"]["primary"] == before["status"]["primary"]
