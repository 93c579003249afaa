"""Idempotency keys of captured requests, remembered in the shard store.

A request to a capture may carry an ``Idempotency-Key``. The transaction that writes its
documents also records the key (table ``_shardkeeper_idempotency``), so the key is
committed, and replicated through the recovery log, with the documents or not at all. A
request whose key is already recorded writes nothing: it is answered with what the first
request wrote, on this primary or on any later one, since the record is store state like
the checkpoint.

What is remembered stays bounded: each record names its commit time (the wall clock,
since it must mean the same on the next primary), and recording a key forgets the keys
older than the window and all but the newest ``limit`` keys.
"""

from __future__ import annotations

import dataclasses

from shardkeeper.storage.store import Transaction

IDEMPOTENCY_TABLE = "_shardkeeper_idempotency"

SCHEMA = (
    # seq orders the records (the rowid: each new record is past every kept one)
    f"CREATE TABLE IF NOT EXISTS {IDEMPOTENCY_TABLE} ("
    "seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, digest BLOB NOT NULL, "
    "documents INTEGER NOT NULL, at REAL NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {IDEMPOTENCY_TABLE}_at ON {IDEMPOTENCY_TABLE} (at)",
)

# what a key may be: printable ASCII, as in an HTTP header value, and not too long to keep
MAX_KEY_LENGTH = 255


@dataclasses.dataclass(frozen=True)
class Limits:
    keys: int  # the newest this many are kept
    window: float  # seconds a key is kept after its commit


@dataclasses.dataclass(frozen=True)
class Remembered:
    """What the first request with a key wrote."""

    digest: bytes  # of its collection and body: a retry must be the same request
    documents: int


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an idempotency key, or ``None``."""
    if not key:
        return "the Idempotency-Key is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"the Idempotency-Key has {len(key)} characters, more than {MAX_KEY_LENGTH}"
    if not all(" " <= c <= "~" for c in key):
        return "the Idempotency-Key must be printable ASCII"
    return None


def look_up(txn: Transaction, key: str) -> Remembered | None:
    """The key's record as the open transaction sees it (its own records included)."""
    rows = txn.runtime_execute(
        f"SELECT digest, documents FROM {IDEMPOTENCY_TABLE} WHERE key = ?", (key,)
    ).fetchall()
    if not rows:
        return None
    digest, documents = rows[0]
    return Remembered(bytes(digest), int(documents))


def remember(txn: Transaction, key: str, written: Remembered, now: float, limits: Limits) -> None:
    """Record ``key`` in the open transaction, and forget what is past ``limits``."""
    cursor = txn.runtime_execute(
        f"INSERT INTO {IDEMPOTENCY_TABLE} (key, digest, documents, at) VALUES (?, ?, ?, ?)",
        (key, written.digest, written.documents, now),
    )
    seq = cursor.lastrowid
    assert seq is not None
    txn.runtime_execute(f"DELETE FROM {IDEMPOTENCY_TABLE} WHERE seq <= ?", (seq - limits.keys,))
    txn.runtime_execute(f"DELETE FROM {IDEMPOTENCY_TABLE} WHERE at < ?", (now - limits.window,))
