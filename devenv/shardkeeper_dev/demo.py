"""``shardkeeper dev demo``: the example pipeline on the local environment, documents flowing.

It applies ``examples/`` (pointed at the environment's MinIO and PostgreSQL), waits until
every Task is Ready, posts orders to the HTTP capture, and prints the running totals per
customer as the derivation computed them and the materialization wrote them to
PostgreSQL. Run it again to post more orders: the totals grow by exactly what was posted.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import yaml

from shardkeeper_dev import examples, tools
from shardkeeper_dev.environment import EnvInfo, EnvironmentError_, postgres_bin_dir

CAPTURE_TASK = "ingest-orders"
SOURCE_COLLECTION = "orders"
TOTALS_TABLE = "customer_totals"
CUSTOMERS = ("ada", "grace", "edsger", "barbara", "donald")
READY_TIMEOUT = 300.0


def _kubectl(info: EnvInfo, *args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        [str(tools.binary_path("kubectl")), *args],
        input=input,
        env={**os.environ, "KUBECONFIG": str(info.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT + 30,
    )
    if proc.returncode != 0:
        raise EnvironmentError_(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _psql(info: EnvInfo, sql: str) -> list[list[str]]:
    proc = subprocess.run(
        [str(postgres_bin_dir() / "psql"), info.postgres_dsn, "-tA", "-F", "\t", "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        return []
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def capture_url(info: EnvInfo, namespace: str) -> str:
    """The ingest endpoint of the capture's primary pod."""
    pods = json.loads(
        _kubectl(
            info,
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            f"shardkeeper.io/task={CAPTURE_TASK}",
            "-o",
            "json",
        )
    )["items"]
    ready = [
        p
        for p in pods
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]
    if not ready:
        raise EnvironmentError_(f"no Ready pod of task {CAPTURE_TASK} in {namespace}")
    ingest = examples.capture_port(CAPTURE_TASK)
    return f"http://{ready[0]['status']['podIP']}:{ingest}/collections/{SOURCE_COLLECTION}"


def post_orders(url: str, orders: list[dict[str, Any]]) -> None:
    body = json.dumps(orders).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        if resp.status != 200:
            raise EnvironmentError_(f"the capture answered {resp.status}")


def totals(info: EnvInfo) -> dict[str, tuple[float, int]]:
    rows = _psql(info, f"SELECT customer, total, orders FROM {TOTALS_TABLE} ORDER BY customer")
    return {customer: (float(total), int(count)) for customer, total, count in rows}


def _wait(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise EnvironmentError_(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def run(info: EnvInfo, *, namespace: str = "default", count: int = 20, say: Any = print) -> None:
    say(f"applying examples/ to namespace {namespace}")
    docs = examples.render(info)
    _kubectl(
        info,
        "apply",
        "--server-side",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(docs, sort_keys=False),
    )
    say("waiting for every Task to be Ready (the first start restores empty stores)")
    _kubectl(
        info,
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        "task",
        "--all",
        f"--timeout={READY_TIMEOUT:.0f}s",
    )
    say(_kubectl(info, "get", "-n", namespace, "tasks,shards"))

    before = totals(info)
    orders: list[dict[str, Any]] = [
        {"id": str(uuid.uuid4()), "customer": random.choice(CUSTOMERS), "amount": amount}
        for amount in (round(random.uniform(1, 100), 2) for _ in range(count))
    ]
    url = capture_url(info, namespace)
    say(f"posting {count} orders to {url}")
    post_orders(url, orders)

    expected = dict(before)
    for order in orders:
        customer, amount = str(order["customer"]), float(order["amount"])
        total, n = expected.get(customer, (0.0, 0))
        expected[customer] = (total + amount, n + 1)

    def arrived() -> bool:
        now = totals(info)
        return set(now) == set(expected) and all(
            now[c][1] == expected[c][1] and abs(now[c][0] - expected[c][0]) < 1e-6 for c in expected
        )

    say("waiting for the totals to reach PostgreSQL (capture -> derivation -> materialization)")
    _wait(arrived, timeout=120, what="the posted orders to reach PostgreSQL")
    say(f"\n{TOTALS_TABLE} in PostgreSQL ({info.postgres_dsn.rsplit('@', 1)[-1]}):")
    say(f"  {'customer':<10} {'total':>10} {'orders':>7}")
    for customer, (total, n) in sorted(totals(info).items()):
        say(f"  {customer:<10} {total:>10.2f} {n:>7}")
