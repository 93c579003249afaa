"""Python derivation plug-ins for the development environment, importable by the process
node's shard pods (which run the project's Python).

``slow_totals`` is the example's running total per customer (examples/04-derivation-sql.yaml)
whose every document costs ``SECONDS_PER_DOCUMENT`` of waiting, as a derivation that calls
a slow service per document would: a shard of it keeps up with fewer documents a second
than a test posts, so its source lag grows and autoSplit has a real reason to split it.
"""

from __future__ import annotations

import time
from typing import Any

from shardkeeper.runtime.kinds.derivation import SqlHandle

SECONDS_PER_DOCUMENT = 0.025


def slow_totals(txn: SqlHandle, source: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    time.sleep(SECONDS_PER_DOCUMENT)
    txn.execute(
        "CREATE TABLE IF NOT EXISTS totals (customer TEXT PRIMARY KEY NOT NULL, "
        "total REAL NOT NULL, orders INTEGER NOT NULL)"
    )
    customer, total, orders = txn.execute(
        "INSERT INTO totals (customer, total, orders) VALUES (:customer, :amount, 1) "
        "ON CONFLICT (customer) DO UPDATE SET total = total + excluded.total, "
        "orders = orders + 1 RETURNING customer, total, orders",
        {"customer": document["customer"], "amount": document["amount"]},
    ).fetchone()
    return [{"customer": customer, "total": total, "orders": orders}]
