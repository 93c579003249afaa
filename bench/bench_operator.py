"""The operator: time for N Tasks to become Ready, against the same pods applied directly;
its memory with many Shards; API requests per reconcile, and per minute while idle.

- ``operator.tasks_ready``: N derivation Tasks applied at once until every one is Ready
  (the operator creates each Shard and its workload; the process node runs each shard's
  runtime until it is primary). Baseline: ``kubectl apply --server-side`` of the very same
  workloads (StatefulSet, Service, PDB, ServiceAccount, Role, RoleBinding per shard, as
  ``controller/specs/workload.py`` renders them) for pre-created Tasks and Shards, until every
  StatefulSet is ready, through the same process node, with no operator running.
- ``operator.rss``: the operator's resident memory once it manages M Shards (tasks with
  ``disable: true``: every Shard, StatefulSet and Role exists, no pod runs).
- ``operator.api_requests_per_reconcile`` and ``operator.idle_api_requests_per_minute``:
  the operator's own count of its requests (every request but its watches), during the N
  tasks' start, and over a minute of nothing changing.

N is 60 (20 with ``--quick``) and M 1,000 (100); ``SHARDKEEPER_BENCH_TASKS`` (200 for the
figure of docs/operator.md) and ``SHARDKEEPER_BENCH_SHARDS`` override them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from bench.harness import Context, Result, Run
from shardkeeper.api import Shard, Task
from shardkeeper.controller.specs.shards import initial_shard, shard_manifest
from shardkeeper.controller.specs.workload import WorkloadDefaults, WorkloadInputs, workload
from shardkeeper_dev import environment, processes, tools
from shardkeeper_dev.examples import render

GROUP = "shardkeeper.io"
ROOT = Path(__file__).resolve().parents[1]
SHARD_IMAGE = "shardkeeper:bench"
SHARED = {
    ("Secret", "s3-credentials"),
    ("StorageMapping", "local"),
    ("Collection", "orders"),
    ("Collection", "customer-totals"),
}


class Cluster:
    def __init__(self, ctx: Context) -> None:
        self.env = ctx.env
        self.kubectl_bin = str(tools.binary_path("kubectl"))
        self.kube_env = {**os.environ, "KUBECONFIG": str(ctx.env.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            [self.kubectl_bin, *args],
            input=input,
            env=self.kube_env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {proc.stderr}")
        return proc.stdout

    def apply(self, namespace: str, docs: Iterable[dict[str, Any]]) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-n",
            namespace,
            "-f",
            "-",
            input=yaml.safe_dump_all(list(docs)),
        )

    def items(self, namespace: str, kind: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            self.kubectl("get", "-n", namespace, kind, "-o", "json")
        )["items"]
        return found

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        return name

    def drop_namespace(self, namespace: str) -> None:
        self.kubectl("delete", "namespace", namespace, "--wait=false")


def wait(probe: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(interval)


def derivation(name: str, docs: list[dict[str, Any]], **shards: Any) -> dict[str, Any]:
    template = next(
        d for d in docs if d["kind"] == "Task" and d["metadata"]["name"] == "customer-totals"
    )
    task: dict[str, Any] = json.loads(json.dumps(template))
    task["metadata"] = {"name": name}
    task["spec"]["shards"] = {"image": SHARD_IMAGE, **shards}
    return task


def pipeline(ctx: Context, bucket: str, tasks: int, **shards: Any) -> list[dict[str, Any]]:
    docs = render(ctx.env, bucket=bucket)
    shared = [d for d in docs if (d["kind"], d["metadata"]["name"]) in SHARED]
    return shared + [derivation(f"b-{i:04d}", docs, **shards) for i in range(tasks)]


class Operator:
    def __init__(self, ctx: Context, namespace: str) -> None:
        self.port = _free_port()
        argv = [
            sys.executable,
            "-m",
            "shardkeeper",
            "operator",
            f"--namespace={namespace}",
            f"--leader-election-namespace={namespace}",
            f"--metrics-port={self.port}",
            "--metrics-address=127.0.0.1",
            f"--shard-image={SHARD_IMAGE}",
        ]
        env = {**os.environ, "KUBECONFIG": str(ctx.env.kubeconfig)}
        log = ctx.workdir / f"operator-{namespace}.log"
        self.record, self.proc = processes.spawn(
            "operator", argv, env=env, log_path=log, die_with_parent=True
        )
        wait(
            lambda: self.metric("shardkeeper_operator_leader") == 1, 60, "the operator to lead", 0.2
        )

    def metric(self, name: str, **labels: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as rsp:
                text = rsp.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if match and match.group(1) == name:
                found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
                if all(found.get(k) == v for k, v in labels.items()):
                    total += float(match.group(3))
        return total

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        processes.stop(self.record, timeout=30, reap=self.proc.poll)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ready_tasks(cluster: Cluster, namespace: str) -> int:
    count = 0
    for task in cluster.items(namespace, f"tasks.{GROUP}"):
        conditions = task.get("status", {}).get("conditions", [])
        count += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return count


def ready_statefulsets(cluster: Cluster, namespace: str) -> int:
    return sum(
        1
        for s in cluster.items(namespace, "statefulsets")
        if s.get("status", {}).get("readyReplicas", 0) == s["spec"]["replicas"]
    )


def cleanup(cluster: Cluster, namespace: str, operator: Operator | None) -> None:
    """Tasks go through the operator (their finalizers), then the namespace and its pods."""
    if operator is not None:
        cluster.kubectl("delete", f"tasks.{GROUP}", "--all", "-n", namespace, "--timeout=600s")
        operator.stop()
    cluster.drop_namespace(namespace)
    wait(lambda: not _exists(cluster, namespace), 900, f"namespace {namespace} to go", 2.0)


def _exists(cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.kubectl("get", "namespace", namespace)
    except RuntimeError:
        return False
    return True


def baseline_seconds(ctx: Context, cluster: Cluster, bucket: str, count: int) -> float:
    """The same workloads, applied directly: Tasks and Shards first (not timed), then every
    shard's objects in one server-side apply, until every StatefulSet is ready."""
    namespace = cluster.namespace("bench-base")
    try:
        cluster.apply(namespace, pipeline(ctx, bucket, count))
        tasks = {
            t["metadata"]["name"]: Task.from_k8s(t)
            for t in cluster.items(namespace, f"tasks.{GROUP}")
        }
        cluster.apply(namespace, [shard_manifest(initial_shard(t)) for t in tasks.values()])
        shards = {
            s["spec"]["task"]: Shard.from_k8s(s)
            for s in cluster.items(namespace, f"shards.{GROUP}")
        }
        defaults = WorkloadDefaults(shard_image=SHARD_IMAGE)
        objects = [
            obj
            for name, task in tasks.items()
            for obj in workload(WorkloadInputs(shards[name], task, ["s3-credentials"], defaults))
        ]
        started = time.monotonic()
        cluster.apply(namespace, objects)
        wait(
            lambda: ready_statefulsets(cluster, namespace) == count,
            1800,
            f"{count} StatefulSets ready",
            2.0,
        )
        return time.monotonic() - started
    finally:
        # a failed baseline must not leave its shard processes loading what comes next
        cleanup(cluster, namespace, None)


def operator_run(ctx: Context, cluster: Cluster, bucket: str, count: int, out: Run) -> float:
    namespace = cluster.namespace("bench-op")
    docs = pipeline(ctx, bucket, count)
    shared = [d for d in docs if d["kind"] != "Task"]
    cluster.apply(namespace, shared)
    operator = Operator(ctx, namespace)
    try:
        wait(lambda: ready_storage(cluster, namespace), 60, "the StorageMapping to be checked", 0.5)
        requests_before = operator.metric("shardkeeper_operator_api_requests_total")
        reconciles_before = operator.metric("shardkeeper_operator_reconciles_total")
        started = time.monotonic()
        cluster.apply(namespace, [d for d in docs if d["kind"] == "Task"])
        wait(lambda: ready_tasks(cluster, namespace) == count, 1800, f"{count} Tasks ready", 2.0)
        elapsed = time.monotonic() - started
        requests = operator.metric("shardkeeper_operator_api_requests_total") - requests_before
        reconciles = operator.metric("shardkeeper_operator_reconciles_total") - reconciles_before
        params = {"tasks": count, "requests": requests, "reconciles": reconciles}
        out.add(
            Result(
                "operator.api_requests_per_reconcile",
                requests / max(reconciles, 1),
                "req",
                None,
                "lower",
                params,
                target="informational",
            )
        )
        out.add(
            Result(
                "operator.api_requests_per_task_started",
                requests / count,
                "req",
                None,
                "lower",
                params,
                target="informational",
            )
        )
        # a minute of nothing changing: lease renewals and periodic bucket checks remain
        idle_before = operator.metric("shardkeeper_operator_api_requests_total")
        time.sleep(60)
        idle = operator.metric("shardkeeper_operator_api_requests_total") - idle_before
        out.add(
            Result(
                "operator.idle_api_requests_per_minute",
                idle,
                "req/min",
                None,
                "lower",
                {"tasks": count},
                target="informational",
            )
        )
    finally:
        cleanup(cluster, namespace, operator)
    return elapsed


def ready_storage(cluster: Cluster, namespace: str) -> bool:
    mappings = cluster.items(namespace, f"storagemappings.{GROUP}")
    return bool(mappings) and all(m.get("status", {}).get("bucketReachable") for m in mappings)


def rss_run(ctx: Context, cluster: Cluster, bucket: str, count: int) -> tuple[int, int]:
    """The operator's RSS before any Shard and with ``count`` disabled Shards."""
    namespace = cluster.namespace("bench-rss")
    docs = pipeline(ctx, bucket, count, disable=True)
    cluster.apply(namespace, [d for d in docs if d["kind"] != "Task"])
    operator = Operator(ctx, namespace)
    try:
        wait(lambda: ready_storage(cluster, namespace), 60, "the StorageMapping to be checked", 0.5)
        empty = operator.rss_bytes()
        cluster.apply(namespace, [d for d in docs if d["kind"] == "Task"])
        wait(
            lambda: ready_tasks(cluster, namespace) == count,
            1800,
            f"{count} disabled Tasks ready",
            3.0,
        )
        assert operator.metric("shardkeeper_operator_shards", phase="Disabled") == count
        return empty, operator.rss_bytes()
    finally:
        cleanup(cluster, namespace, operator)


def run(ctx: Context, out: Run) -> None:
    # each running shard is a runtime process of its own (about 80 MB): 200 of them took
    # this 2-core machine past a load of 28 with the baseline's apply timing out, so the
    # default is 60 and 200 is SHARDKEEPER_BENCH_TASKS=200 (the shard count runs no pods)
    tasks = int(os.environ.get("SHARDKEEPER_BENCH_TASKS") or (20 if ctx.quick else 60))
    shards = int(os.environ.get("SHARDKEEPER_BENCH_SHARDS") or (100 if ctx.quick else 1000))
    cluster = Cluster(ctx)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    s3 = environment.s3_client(ctx.env)
    bucket = f"bench-operator-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=bucket)

    base = baseline_seconds(ctx, cluster, bucket, tasks)
    elapsed = operator_run(ctx, cluster, bucket, tasks, out)
    out.add(
        Result(
            "operator.tasks_ready",
            elapsed,
            "s",
            base,
            "lower",
            {"tasks": tasks},
            target="<= 1.5x kubectl apply of the same StatefulSets",
        )
    )

    empty, full = rss_run(ctx, cluster, bucket, shards)
    out.add(
        Result(
            "operator.rss",
            full / 2**20,
            "MiB",
            empty / 2**20,
            "lower",
            {"shards": shards},
            target="informational",
        )
    )
