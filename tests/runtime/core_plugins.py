"""Python derivation plug-ins used by the processing-core tests (``tests.runtime.core_plugins:*``).

They record what they were called with, so a test can see when the shard read a document.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from shardkeeper.runtime.kinds.derivation import SqlHandle

_lock = threading.Lock()
_calls: list[tuple[str, Any]] = []


def reset() -> None:
    with _lock:
        _calls.clear()


def calls() -> list[tuple[str, Any]]:
    """(source, document id) of every call so far."""
    with _lock:
        return list(_calls)


def echo(txn: SqlHandle, source: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    with _lock:
        _calls.append((source, document.get("id")))
    return [{"id": document["id"], "source": source}]


def slow_echo(txn: SqlHandle, source: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """``echo`` that computes for 2 ms per document: work enough to fill a transaction."""
    deadline = time.perf_counter() + 0.002
    while time.perf_counter() < deadline:
        pass
    return echo(txn, source, document)


def count(txn: SqlHandle, source: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """Counts documents per key in the shard store; fails on a document asking for it."""
    if document.get("explode"):
        raise ValueError(f"asked to explode on {document['id']}")
    txn.execute("CREATE TABLE IF NOT EXISTS counts (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    row = txn.execute(
        "INSERT INTO counts (id, n) VALUES (:id, 1) "
        "ON CONFLICT (id) DO UPDATE SET n = n + 1 RETURNING n",
        {"id": str(document["id"])},
    ).fetchone()
    return [{"id": document["id"], "n": row[0]}]
