"""Python derivation plug-ins used by the processing-core tests (``tests.runtime.core_plugins:*``).

They record what they were called with, so a test can see when the shard read a document.
"""

from __future__ import annotations

import threading
from typing import Any

from tests.support.clock import Clock

from shardkeeper.runtime.kinds.derivation import SqlHandle

_lock = threading.Lock()
_calls: list[tuple[str, Any]] = []
# the manual clock of a test that passes it to the processor; ``ticking_echo`` moves it
CLOCK = Clock()
TICK = 0.002


def reset() -> None:
    with _lock:
        _calls.clear()
    CLOCK.now = Clock().now


def calls() -> list[tuple[str, Any]]:
    """(source, document id) of every call so far."""
    with _lock:
        return list(_calls)


def echo(txn: SqlHandle, source: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    with _lock:
        _calls.append((source, document.get("id")))
    return [{"id": document["id"], "source": source}]


def ticking_echo(txn: SqlHandle, source: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """``echo`` whose work takes 2 ms of ``CLOCK``: it fills a transaction by the clock the
    processor is given, however fast the machine runs it."""
    CLOCK.now += TICK
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
