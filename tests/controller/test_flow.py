"""Documents flow through the example pipeline the operator runs: orders posted to the HTTP
capture come out of the derivation as running totals and land in PostgreSQL."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import psycopg
from psycopg import sql
from tests.controller.support import (
    GROUP,
    Kubectl,
    OperatorProcess,
    apply,
    examples_in_a_schema,
    get,
    wait_ready,
)
from tests.support.wait import NOT_YET, wait_for

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
    with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
