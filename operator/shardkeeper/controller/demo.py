"""Show documents flowing through the example pipeline on a development environment.

Posts orders to the HTTP capture of ``ingest-orders``, waits until the derivation's running
totals reach PostgreSQL through ``totals-to-postgres``, and prints the table::

    python -m shardkeeper.controller.demo [--state-dir DIR] [--namespace NS] [--orders N]

It expects the examples to run (``python -m shardkeeper.controller.examples | kubectl
apply --server-side -f -`` with the operator running) and the tasks to be Ready.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CAPTURE_POD = "ingest-orders-00000000-00000000-0"
CUSTOMERS = ("alice", "bob", "carol", "dave")


def capture_url(kubeconfig: Path, namespace: str) -> str:
    """The capture's ingest endpoint: the primary pod's own address (there is no Service
    routing in the development environment)."""
    from shardkeeper.controller.kube import AsyncKube, connect

    kube = AsyncKube(connect(kubeconfig))
    try:
        pod: Any = kube.kube.get(f"/api/v1/namespaces/{namespace}/pods/{CAPTURE_POD}")
    finally:
        kube.close()
    if not pod or not pod.get("status", {}).get("podIP"):
        raise SystemExit(f"pod {namespace}/{CAPTURE_POD} is not running: are the examples applied?")
    return f"http://{pod['status']['podIP']}:8080/orders"


def orders(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"demo-{seed}-{i}",
            "customer": rng.choice(CUSTOMERS),
            "amount": round(rng.uniform(1, 100), 2),
        }
        for i in range(count)
    ]


def post(url: str, documents: list[dict[str, Any]]) -> None:
    body = json.dumps(documents).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as rsp:
        print(f"POST {url}: {rsp.status} {rsp.read().decode().strip()}")


def order_count(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT coalesce(sum(orders), 0) FROM customer_totals").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def print_totals(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT customer, total, orders FROM customer_totals ORDER BY customer"
        ).fetchall()
    print(f"{'customer':<10} {'total':>10} {'orders':>7}")
    for customer, total, count in rows:
        print(f"{customer:<10} {total:>10.2f} {count:>7}")


def main(argv: Sequence[str] | None = None) -> int:
    from shardkeeper.dev.environment import Environment, default_state_dir

    parser = argparse.ArgumentParser(prog="python -m shardkeeper.controller.demo")
    parser.add_argument("--state-dir", type=Path, default=None, help="the environment's")
    parser.add_argument("--namespace", default="default", help="where the examples run")
    parser.add_argument("--orders", type=int, default=10, help="orders to post")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    args = parser.parse_args(argv)
    env = Environment(args.state_dir or default_state_dir()).info()

    before = order_count(env.postgres_dsn)
    post(capture_url(env.kubeconfig, args.namespace), orders(args.orders, int(time.time())))
    deadline = time.monotonic() + args.timeout
    while order_count(env.postgres_dsn) < before + args.orders:
        if time.monotonic() > deadline:
            print("the orders did not reach PostgreSQL in time", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"\ncustomer_totals in PostgreSQL ({env.postgres_dsn.rsplit('@', 1)[-1]}):")
    print_totals(env.postgres_dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
