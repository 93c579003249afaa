"""Splits of the running example, end to end: the operator, the process node's shard
pods, MinIO and PostgreSQL, with orders posted to the capture all along.

One pipeline serves every step, so the environment and the waits are paid once: the
derivation splits by hand (`kubectl patch` of spec.split) from 1 to 2 shards, with the
operator killed -9 at Children, at CatchUp and at HandOff (an admission policy holds the
split at each step, so the kills do not race the operator), then to 4 through
`minShards: 4` in the Task applied again, as a GitOps tool would, with the operator
killed while both splits run. The materialization then splits 1 to 2 by key, and one half
again by r-clock, while a second derivation of the orders (a copy of each, with no state,
which an r-clock split suits) splits 1 to 2 by r-clock. At the end the totals in
PostgreSQL are exact, every derived document was written once, and the recovery logs
prove that each key and r-clock point was owned by one primary at a time."""

from __future__ import annotations

import collections
import copy
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
import yaml
from psycopg import sql
from tests.controller.conftest import StartOperator
from tests.controller.support import (
    EXAMPLE_TASKS,
    GROUP,
    Kubectl,
    OperatorProcess,
    admission_policy,
    apply,
    cli_env,
    event_reasons,
    examples,
    examples_in_a_schema,
    get,
    remove_admission_policy,
    run_cli,
    wait_ready,
)
from tests.controller.test_flow import capture_url, post, totals
from tests.support.argocd import health
from tests.support.wait import NOT_YET, wait_for

from shardkeeper.controller.main import LEADER_LEASE
from shardkeeper.runtime.shell.collectionio import read_collection
from shardkeeper.storage.layout import task_recovery_dir
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev import environment
from shardkeeper_dev.environment import EnvInfo
from shardkeeper_dev.ownership import check_ownership

PREFIX = "examples/"  # the example StorageMapping's
TASK = "customer-totals"
MATERIALIZATION = ("Task", "totals-to-postgres")
PARENT = f"{TASK}-00000000-00000000"
# a derivation without state: one copy of each order, so documents split by r-clock
COPIES = "order-copies"
CUSTOMERS = [f"c{i:02d}" for i in range(40)]


class Orders:
    """Posts orders to the capture until stopped; what the totals must then be.

    ``urls`` is one capture URL, or a function of the URLs to spread posts over (read again
    before each post, so a test can widen it). With ``retry``, a post that the capture
    refused without writing it (connection refused, a 429, or a 503 as a capture answers
    while it hands off) is sent again, to the next URL; any other failure stops the
    posting, since the totals would then be unknown. With ``unsure``, such a failure (a
    timeout, a reset, a 504: outcome unknown) does not stop it: the orders of that post go
    to ``unsure``, as orders that may or may not have been written, and the posting goes on
    with new ones; the totals are then those of the orders the collection holds. ``ids``
    names the orders (``<ids><n>``), so that several feeders of one pipeline never post the
    same id."""

    def __init__(
        self,
        urls: str | Callable[[], Sequence[str]],
        *,
        retry: bool = False,
        unsure: bool = False,
        interval: float = 0.25,
        ids: str = "o",
    ) -> None:
        self.urls = (lambda: [urls]) if isinstance(urls, str) else urls
        self.retry = retry
        self.keep_going = unsure
        self.interval = interval  # seconds between two posts of one order per customer
        self.ids = ids
        self.expected: dict[str, tuple[float, int]] = {}
        self.posted = 0
        self.acked: list[str] = []  # the ids of the orders posted with a 200
        self.unsure: list[str] = []
        self.sent = 0  # orders sent, whatever the answer
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
                {"id": f"{self.ids}{self.sent + i}", "customer": c, "amount": 1.0 + i % 3}
                for i, c in enumerate(CUSTOMERS)
            ]
            self.sent += len(batch)
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
            if status != 200 and self.keep_going:
                if not not_written(status, body):
                    self.unsure.extend(order["id"] for order in batch)
                self._stop.wait(self.interval)
                continue
            if status != 200:
                # a refusal that may have been written would make the totals unknown
                self.failures.append(f"{url}: {status}: {body}")
                return
            self.acked.extend(order["id"] for order in batch)
            for order in batch:
                sums[order["customer"]] += order["amount"]
                counts[order["customer"]] += 1
            self.posted += len(batch)
            self.by_url[url] += 1
            self.expected = {c: (sums[c], counts[c]) for c in sums}
            self._stop.wait(self.interval)

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
    # 429 (busy) and 503 (stopping, or failed before the commit); a 504's outcome is unknown
    return status in (429, 503)


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
    docs, schema = examples_in_a_schema(dev_env, bucket)
    apply(kubectl, namespace, docs + order_copies(docs))
    wait_ready(kubectl, namespace, (*EXAMPLE_TASKS, COPIES))
    url = wait_for(lambda: capture_url(kubectl, namespace), timeout=60, what="the capture pod")
    orders = Orders(url).start()
    wait_for(lambda: orders.posted >= 400, timeout=60, what="orders flowing")

    # 1 -> 2, by hand, with the operator killed -9 at Children, at CatchUp and at HandOff
    # (after the narrowing): a gate holds the split at each, so every kill is at that step
    child_name = f"{TASK}-80000000-00000000"
    gate = StepGate(kubectl, namespace)
    try:
        gate.hold_before("CatchUp")
        kubectl(
            "patch", f"shards.{GROUP}", PARENT, "-n", namespace, "--type", "merge",
            "-p", '{"spec":{"split":{"by":"key"}}}',
        )  # fmt: skip
        held = (("Children", "HandOff"), ("CatchUp", "Finish"), ("HandOff", None))
        for step, next_gate in held:
            wait_for(
                at_step(kubectl, namespace, PARENT, step),
                timeout=120,
                what=f"the split held at {step}",
            )
            if step == "Children":
                created = get(kubectl, namespace, f"shards.{GROUP}", child_name)
            if step == "HandOff":
                wait_for(
                    lambda: (
                        get(kubectl, namespace, f"shards.{GROUP}", PARENT)["spec"]["keyEnd"]
                        == "7fffffff"
                    ),
                    timeout=60,
                    what="the parent narrowed",
                )
            operator.kill()
            if next_gate is not None:
                gate.hold_before(next_gate)
            else:
                gate.open()
            operator = restarted(operators, kubectl, namespace, f"operator-at-{step.lower()}")
    finally:
        gate.open()
    two = wait_for(lambda: settled(kubectl, namespace, 2), timeout=240, what="two shards")
    assert two[child_name]["metadata"]["uid"] == created["metadata"]["uid"], "created once"
    parent = two[PARENT]
    assert parent["spec"]["keyEnd"] == "7fffffff"
    assert "split" not in parent["spec"]
    steps = [s["step"] for s in parent["status"]["split"]["steps"]]
    assert steps == ["Plan", "Children", "CatchUp", "HandOff", "Finish", "Done"]
    child = two[f"{TASK}-80000000-00000000"]
    assert (child["spec"]["keyBegin"], child["spec"]["keyEnd"]) == ("80000000", "ffffffff")

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
    # after the dead one's Lease expired; a loaded machine may take long to start Python
    operator = operators("operator-b")
    operator.wait_leading(timeout=120)
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
    mat["spec"].setdefault("shards", {})["scaling"] = {"minShards": 2, "maxShards": 3}
    apply(kubectl, namespace, [mat])
    # meanwhile the copies 1 -> 2 by r-clock: every order goes to exactly one side
    kubectl(
        "patch", f"shards.{GROUP}", f"{COPIES}-00000000-00000000", "-n", namespace,
        "--type", "merge", "-p", '{"spec":{"split":{"by":"rClock"}}}',
    )  # fmt: skip
    wait_for(
        lambda: settled(kubectl, namespace, 2, task=MATERIALIZATION[1]),
        timeout=240,
        what="two materialization shards",
    )
    # then its upper half by r-clock: the documents of one customer go to both sides, and
    # each row keeps the newest by _meta.clock, so the table stays exact (the totals
    # derivation cannot split so: both sides would go on from the same total)
    upper = f"{MATERIALIZATION[1]}-80000000-00000000"
    kubectl(
        "patch", f"shards.{GROUP}", upper, "-n", namespace, "--type", "merge",
        "-p", '{"spec":{"split":{"by":"rClock"}}}',
    )  # fmt: skip
    three = wait_for(
        lambda: settled(kubectl, namespace, 3, task=MATERIALIZATION[1]),
        timeout=240,
        what="three materialization shards",
    )
    fields = ("keyBegin", "keyEnd", "rClockBegin", "rClockEnd")
    ranges = sorted(tuple(s["spec"][f] for f in fields) for s in three.values())
    assert ranges == [
        ("00000000", "7fffffff", "00000000", "ffffffff"),
        ("80000000", "ffffffff", "00000000", "7fffffff"),
        ("80000000", "ffffffff", "80000000", "ffffffff"),
    ]
    copies = wait_for(
        lambda: settled(kubectl, namespace, 2, task=COPIES), timeout=240, what="two copy shards"
    )
    assert sorted(tuple(s["spec"][f] for f in fields) for s in copies.values()) == [
        ("00000000", "ffffffff", "00000000", "7fffffff"),
        ("00000000", "ffffffff", "80000000", "ffffffff"),
    ]
    # the operator that saw them all timed each hand-off (HandOff to the child's PRIMARY)
    handoff = "shardkeeper_operator_split_handoff_duration_seconds"
    for name, count in ((TASK, 2), (MATERIALIZATION[1], 2), (COPIES, 1)):
        labels = {"namespace": namespace, "task": name}
        seconds = operator.metric(f"{handoff}_sum", **labels)
        assert operator.metric(f"{handoff}_count", **labels) == count, (name, seconds)
    # Finish is carried on by the child's events: it once waited for an unrelated one
    for shard in (f"{MATERIALIZATION[1]}-00000000-00000000", upper):
        records = {r["step"]: r["at"] for r in three[shard]["status"]["split"]["steps"]}
        finishing = time_of(records["Done"]) - time_of(records["Finish"])
        assert finishing < timedelta(seconds=20), (shard, records)
    posted_at_three = orders.posted
    wait_for(lambda: orders.posted >= posted_at_three + 400, timeout=60, what="orders after")
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
    for name, logs in ((TASK, 4), (MATERIALIZATION[1], 3), (COPIES, 2)):
        report = check_ownership(objects, PREFIX + task_recovery_dir(namespace, name))
        assert len(report.logs) == logs, report
    # every derived document once: one per order, whichever shard derived it
    check_derived_once(derived(dev_env, bucket, namespace), expected, orders.posted)
    check_copied_once(derived(dev_env, bucket, namespace, COPIES), orders)
    with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT shard FROM {}.shardkeeper_checkpoints").format(sql.Identifier(schema))
        )
        assert sorted(r[0] for r in rows) == [
            f"{namespace}/totals-to-postgres-00000000-00000000",
            f"{namespace}/totals-to-postgres-80000000-00000000",
            f"{namespace}/totals-to-postgres-80000000-80000000",
        ]
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


class StepGate:
    """Holds the splits of a namespace's Shards at a step: a ValidatingAdmissionPolicy
    that refuses every status write entering ``step``. The operator's write of that step
    fails, so the split stays at the step before it, and the test can kill the operator
    there without racing it. A refused write changes nothing, so the API server then
    holds what it holds when an operator dies right after the step's own write.

    The same policy refuses to create a ConfigMap named after the step (a dry run), which
    tells when the API server enforces this version of the policy."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.name = f"split-gate-{namespace}"[:63]
        self.held: str | None = None

    def _probe_refused(self, step: str) -> bool:
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": self._probe(step)}}
        done = self.kubectl(
            "create", "--dry-run=server", "-n", self.namespace, "-f", "-",
            input=json.dumps(probe), check=False,
        )  # fmt: skip
        return done.returncode != 0

    @staticmethod
    def _probe(step: str) -> str:
        return f"split-gate-{step.lower()}"

    def hold_before(self, step: str) -> None:
        enters = (
            "has(object.status) && has(object.status.split)"
            f" && object.status.split.step == '{step}'"
            " && !(has(oldObject.status) && has(oldObject.status.split)"
            f" && oldObject.status.split.step == '{step}')"
        )
        rules = [
            {
                "apiGroups": [GROUP],
                "apiVersions": ["*"],
                "operations": ["UPDATE"],
                "resources": ["shards/status"],
            },
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["configmaps"],
            },
        ]
        docs = admission_policy(
            self.name,
            self.namespace,
            rules,
            "request.resource.resource == 'configmaps' ? "
            f"object.metadata.name != '{self._probe(step)}' : !({enters})",
            f"the test holds splits before {step}",
        )
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
        wait_for(lambda: self._probe_refused(step), timeout=30, what=f"the gate before {step}")
        self.held = step

    def open(self) -> None:
        remove_admission_policy(self.kubectl, self.name)
        if self.held is not None:
            held = self.held
            wait_for(lambda: not self._probe_refused(held), timeout=30, what="the gate open")
        self.held = None


def derived(
    dev_env: EnvInfo, bucket: str, namespace: str, collection: str = TASK
) -> list[dict[str, Any]]:
    """Every document of a derivation's output collection, from all its journals."""
    objects = ObjectStore(environment.s3_client(dev_env), bucket)
    return [d.document for d in read_collection(objects, PREFIX, namespace, collection)]


def order_copies(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Collection and a derivation Task that copy each order, on the examples' storage
    mapping: a derivation without state, which may split by r-clock (both sides see every
    key; each copies the orders of its half of the clock)."""
    (orders,) = [
        d for d in examples if (d["kind"], d["metadata"]["name"]) == ("Collection", "orders")
    ]
    mapping = orders["spec"]["storageMapping"]
    collection = copy.deepcopy(orders)
    collection["metadata"] = {"name": COPIES}
    task = {
        "apiVersion": orders["apiVersion"],
        "kind": "Task",
        "metadata": {"name": COPIES},
        "spec": {
            "type": "derivation",
            "storageMapping": mapping,
            "sources": ["orders"],
            "outputs": [COPIES],
            "derive": {
                "sql": {
                    "lambdas": {
                        "orders": "SELECT $id AS id, $customer AS customer, $amount AS amount"
                    }
                }
            },
            "shards": {"scaling": {"maxShards": 2}},
        },
    }
    return [collection, task]


def check_copied_once(documents: list[dict[str, Any]], orders: Orders) -> None:
    """One copy of every order that the capture took, and nothing else."""
    ids = collections.Counter(d["id"] for d in documents)
    assert [i for i, n in ids.items() if n > 1] == []
    assert len(ids) == orders.posted
    assert set(ids) >= set(orders.acked)


def check_derived_once(
    documents: list[dict[str, Any]], expected: dict[str, tuple[float, int]], posted: int
) -> None:
    """One running total per order, whichever shard derived it: every customer's counts
    run 1..n without a gap or a repeat, and its last total is the sum of its orders."""
    uuids = [d["_meta"]["uuid"] for d in documents]
    assert len(set(uuids)) == len(uuids)
    assert len(documents) == posted
    by_customer = collections.defaultdict(list)
    for document in documents:
        by_customer[document["customer"]].append((document["orders"], document["total"]))
    assert sorted(by_customer) == sorted(expected)
    for customer, seen in by_customer.items():
        total, count = expected[customer]
        assert sorted(n for n, _ in seen) == list(range(1, count + 1)), customer
        assert max(seen)[1] == total, customer


def restarted(
    operators: StartOperator, kubectl: Kubectl, namespace: str, identity: str
) -> OperatorProcess:
    """A new operator in place of one killed -9, leading at once: the dead one's Lease is
    deleted instead of waiting for it to expire (the takeover after expiry is tested
    elsewhere; here what matters is what the new one resumes)."""
    kubectl("delete", "lease", LEADER_LEASE, "-n", namespace, "--ignore-not-found")
    operator = operators(identity)
    operator.wait_leading(timeout=120)
    return operator


def time_of(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def at_step(kubectl: Kubectl, namespace: str, name: str, step: str) -> Callable[[], bool]:
    return lambda: split_step(kubectl, namespace, name) == step


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
    asked = run_cli(dev_env, "shardkeeper", "shards", "-n", namespace, "split", PARENT)
    assert "asked for a split" in asked
    wait_for(
        lambda: split_step(kubectl, namespace, PARENT) in ("Plan", "Children", "CatchUp"),
        timeout=60,
        what="a new split under way",
    )
    # Argo CD's health (docs/argocd/health.lua): the task is Progressing while it splits
    wait_for(
        lambda: health(get(kubectl, namespace, f"tasks.{GROUP}", TASK))[0] == "Progressing",
        timeout=30,
        what="the splitting task Progressing to Argo CD",
    )
    run_cli(dev_env, "kubectl", "shards", "-n", namespace, "cancel-split", PARENT)
    wait_for(
        lambda: split_step(kubectl, namespace, PARENT) == "Aborted",
        timeout=120,
        what="the split aborted by its removal",
    )
    check_untouched(kubectl, namespace, before)
    shown = run_cli(dev_env, "kubectl", "shards", "-n", namespace, "status", TASK)
    assert f"shard/{PARENT}  key 00000000-ffffffff  r-clock 00000000-ffffffff  Running" in shown
    everywhere = run_cli(dev_env, "kubectl", "shards", "status", "-A", "-o", "wide")
    assert f"task/{TASK}  (namespace {namespace})" in everywhere
    assert f"log {before['spec']['recoveryLog']}" in everywhere
    listed = yaml.safe_load(
        run_cli(dev_env, "kubectl", "shards", "-n", namespace, "status", TASK, "-o", "yaml")
    )
    assert listed["kind"] == "List"
    assert PARENT in [s["metadata"]["name"] for s in listed["items"]]
    # the primary's own log lines, through the API server and the node
    logged = run_cli(dev_env, "kubectl", "shards", "-n", namespace, "logs", PARENT)
    assert "fenced the recovery log" in logged, logged[-2000:]
    planned = run_cli(
        dev_env, "kubectl", "shards", "-n", namespace, "prune-logs", TASK, "--dry-run"
    )
    assert f"shard/{PARENT}" in planned
    assert "keeping data from offset" in planned
    assert planned.rstrip().endswith("DRY RUN: nothing deleted")
    refused = subprocess.run(
        [sys.executable, "-m", "shardkeeper", "shards", "-n", namespace, "split", "nope"],
        env=cli_env(dev_env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert "nope" in refused.stderr


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
