"""Running the operator as a local process, and reading what it made, for the end-to-end
tests. The process node runs the shard pods it creates (`shardkeeper shard` processes)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from tests.support.wait import wait_for

from shardkeeper_dev import processes, tools
from shardkeeper_dev.environment import EnvInfo
from shardkeeper_dev.examples import render

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]
GROUP = "shardkeeper.io"
# the example pipeline's Tasks, capture to materialization
EXAMPLE_TASKS = ("ingest-orders", "customer-totals", "totals-to-postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """``shardkeeper operator`` for one namespace, with its leader Lease in it."""

    def __init__(
        self,
        dev_env: EnvInfo,
        namespace: str,
        log_dir: Path,
        *,
        identity: str = "operator-a",
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.dev_env = dev_env
        self.namespace = namespace
        self.identity = identity
        self.port = free_port()
        self.log = log_dir / f"operator-{identity}.log"
        self.extra = list(extra)
        # over the test's own environment (the operator's credential chain, say)
        self.env = dict(env or {})
        self.record: processes.ProcessRecord | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        argv = [
            sys.executable,
            "-m",
            "shardkeeper",
            "operator",
            f"--namespace={self.namespace}",
            f"--leader-election-namespace={self.namespace}",
            f"--identity={self.identity}",
            f"--metrics-port={self.port}",
            "--metrics-address=127.0.0.1",
            *self.extra,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.dev_env.kubeconfig), **self.env}
        self.record, self.proc = processes.spawn(
            f"operator-{self.identity}", argv, env=env, log_path=self.log, die_with_parent=True
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (a clean stop releases the Lease); the exit code."""
        if self.record is not None and self.proc is not None:
            processes.stop(self.record, timeout=30, reap=self.proc.poll)
            return self.proc.wait(timeout=5)
        return None

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a node dies."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as rsp:
            text: str = rsp.read().decode()
            return text

    def healthz(self, path: str = "/healthz") -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as rsp:
                status: int = rsp.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_leading(self, timeout: float = 30) -> None:
        wait_for(
            lambda: self.metric("shardkeeper_operator_leader") == 1,
            timeout=timeout,
            what=f"operator {self.identity} to lead",
        )


def get(kubectl: Kubectl, namespace: str, kind: str, name: str = "") -> Any:
    """The object (or the list of all) as JSON; None if it does not exist."""
    args = ["get", "-n", namespace, kind, *([name] if name else []), "-o", "json"]
    proc = kubectl(*args, check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    data = json.loads(proc.stdout)
    return data if name else data["items"]


def condition_of(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    for found in obj.get("status", {}).get("conditions", []):
        if found["type"] == type_:
            return dict(found)
    return None


def has_condition(
    kubectl: Kubectl, namespace: str, target: str, condition: str, reason: str = ""
) -> dict[str, Any] | None:
    """The condition (``Ready=True``) of ``target`` (``task/name``), if it has that status
    (and ``reason``)."""
    kind, name = target.split("/", 1)
    type_, status = condition.split("=", 1)
    found = condition_of(get(kubectl, namespace, kind, name), type_)
    if found and found["status"] == status and (not reason or found["reason"] == reason):
        return found
    return None


def wait_condition(
    kubectl: Kubectl,
    namespace: str,
    target: str,
    condition: str,
    *,
    reason: str = "",
    timeout: float = 60,
) -> dict[str, Any]:
    return wait_for(
        lambda: has_condition(kubectl, namespace, target, condition, reason),
        timeout=timeout,
        what=f"{target} {condition} {reason}",
        interval=0.3,
    )


def events(kubectl: Kubectl, namespace: str, name: str = "") -> list[dict[str, Any]]:
    found = get(kubectl, namespace, "events") or []
    return [e for e in found if not name or e["involvedObject"]["name"] == name]


def event_reasons(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(kubectl, namespace, name)]


def apply(kubectl: Kubectl, namespace: str, docs: Sequence[dict[str, Any]]) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def examples(
    dev_env: EnvInfo, bucket: str, *kinds_and_names: tuple[str, str]
) -> list[dict[str, Any]]:
    """The examples pointed at the environment and ``bucket``; only those named, if any."""
    docs = render(dev_env, bucket=bucket)
    if not kinds_and_names:
        return docs
    wanted = set(kinds_and_names)
    return [d for d in docs if (d["kind"], d["metadata"]["name"]) in wanted]


def admission_policy(
    name: str, namespace: str, rules: list[dict[str, Any]], expression: str, message: str
) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding: in ``namespace``, the API server refuses
    each request that ``rules`` match and ``expression`` (CEL) does not hold for."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": rules},
            "validations": [{"expression": expression, "message": message}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return [policy, binding]


def remove_admission_policy(kubectl: Kubectl, name: str) -> None:
    """Remove what :func:`admission_policy` made (if it is there)."""
    kubectl(
        "delete", "--ignore-not-found", "--wait=true",
        f"validatingadmissionpolicybinding/{name}", f"validatingadmissionpolicy/{name}",
    )  # fmt: skip


def examples_in_a_schema(dev_env: EnvInfo, bucket: str) -> tuple[list[dict[str, Any]], str]:
    """Every example, with the materialization writing to a PostgreSQL schema of its own
    (``t_<random>``, which the test drops): the database is the session's."""
    schema = f"t_{secrets.token_hex(4)}"
    docs = examples(dev_env, bucket)
    for doc in docs:
        if doc["kind"] == "Task" and "materialize" in doc["spec"]:
            doc["spec"]["materialize"]["postgres"]["schema"] = schema
    return docs, schema


def wait_ready(
    kubectl: Kubectl, namespace: str, tasks: Sequence[str] = EXAMPLE_TASKS, timeout: int = 120
) -> None:
    """``kubectl wait --for=condition=Ready`` on each of ``tasks``."""
    for task in tasks:
        wait = f"--timeout={timeout}s"
        kubectl("wait", "-n", namespace, "--for=condition=Ready", wait, f"task/{task}")


def elapsed(start: float) -> float:
    return time.monotonic() - start


def cli_env(dev_env: EnvInfo) -> dict[str, str]:
    """The environment of a command run as a person runs it: the kubeconfig of the dev
    environment, and kubectl and this venv's scripts (its plugins) on the PATH."""
    bin_dir = str(Path(sys.executable).parent)
    path = f"{bin_dir}:{tools.binary_path('kubectl').parent}:{os.environ.get('PATH', '')}"
    return {**os.environ, "KUBECONFIG": str(dev_env.kubeconfig), "PATH": path}


def run_cli(dev_env: EnvInfo, *argv: str) -> str:
    """The output of a command line (``kubectl shards ...``, ``shardkeeper ...``); it must
    succeed."""
    done = subprocess.run(argv, env=cli_env(dev_env), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def bucket_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """The keys of the bucket's objects under ``prefix``, as boto3 lists them."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]
