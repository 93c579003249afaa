"""What the runtime keeps in the shard store beside the task's own tables.

All of it is written in the same store transaction as the task's state, so it commits (and
replicates through the recovery log) with it or not at all:

``_shardkeeper_checkpoint``
    per source journal: the offset up to which its documents are processed, and the begin
    of the fragment that holds that offset (where reading resumes without a full listing).
``_shardkeeper_output_heads``
    per output journal of this shard: the offset its next output goes to.
``_shardkeeper_pending_outputs``
    output batches (zlib-compressed) committed but not yet known to be appended (see
    :mod:`.outputs`). A transaction deletes the batches of the previous one, which by then
    were appended.
``_shardkeeper_stats``
    transactions committed since the shard was created.
``_shardkeeper_migrations``
    migrations of an SQL derivation that have run, by index, with their text.
``_shardkeeper_idempotency``
    a capture's recent Idempotency-Keys and what their requests wrote (see
    :mod:`.idempotency`).

Task SQL cannot touch the ``_shardkeeper_`` tables: the store's authorizer refuses it any
access (:mod:`shardkeeper.storage.authorizer`); the runtime writes them through
:meth:`Transaction.runtime_execute`.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from shardkeeper.runtime.core import idempotency
from shardkeeper.runtime.core.compression import compress
from shardkeeper.runtime.core.outputs import OutputBatch
from shardkeeper.storage import authorizer
from shardkeeper.storage.store import ShardStore, Transaction

RESERVED_PREFIX = authorizer.RESERVED_PREFIX
CHECKPOINT_TABLE = "_shardkeeper_checkpoint"
OUTPUT_HEADS_TABLE = "_shardkeeper_output_heads"
PENDING_TABLE = "_shardkeeper_pending_outputs"
STATS_TABLE = "_shardkeeper_stats"
MIGRATIONS_TABLE = "_shardkeeper_migrations"

SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} ("
    "journal TEXT PRIMARY KEY, offset INTEGER NOT NULL, fragment INTEGER NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {OUTPUT_HEADS_TABLE} ("
    "journal TEXT PRIMARY KEY, head INTEGER NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {PENDING_TABLE} ("
    "journal TEXT NOT NULL, begin INTEGER NOT NULL, epoch INTEGER NOT NULL, "
    "compressed BLOB NOT NULL, PRIMARY KEY (journal, begin))",
    f"CREATE TABLE IF NOT EXISTS {STATS_TABLE} ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), transactions INTEGER NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
    "idx INTEGER PRIMARY KEY, statement TEXT NOT NULL)",
    *idempotency.SCHEMA,
)
# a store made before a table was added gets it (with the others, each IF NOT EXISTS)
_TABLES = (
    CHECKPOINT_TABLE,
    OUTPUT_HEADS_TABLE,
    PENDING_TABLE,
    STATS_TABLE,
    MIGRATIONS_TABLE,
    idempotency.IDEMPOTENCY_TABLE,
)


class SourceOffset(NamedTuple):
    """How far a source journal is processed: ``offset``, inside the fragment beginning
    at ``fragment`` (equal to ``offset`` when it is a fragment boundary)."""

    offset: int
    fragment: int


@dataclasses.dataclass(frozen=True)
class SavedState:
    """The runtime's tables as of the store's last commit."""

    sources: dict[str, SourceOffset]
    output_heads: dict[str, int]
    pending: list[OutputBatch]
    transactions: int
    migrations: list[str]


@dataclasses.dataclass(frozen=True)
class CommitRows:
    """What one transaction changes in the runtime's tables."""

    sources: Mapping[str, SourceOffset]
    output_heads: Mapping[str, int]
    appended: Iterable[OutputBatch]
    pending: Iterable[OutputBatch]
    transactions: int


def open_state(store: ShardStore) -> SavedState:
    """The runtime's state as the primary store holds it; creates the tables (one commit)
    the first time.

    Read inside a store transaction on the store's own connection, then rolled back when
    nothing was created: nothing is appended to the recovery log for a plain read.
    """
    txn = store.begin()
    try:
        present = {
            row[0]
            for row in txn.runtime_execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        created = not all(t in present for t in _TABLES)
        if created:
            for statement in SCHEMA:
                txn.runtime_execute(statement)
            txn.runtime_execute(
                f"INSERT OR IGNORE INTO {STATS_TABLE} (id, transactions) VALUES (1, 0)"
            )
        saved = _read(txn)
    except BaseException:
        store.rollback()
        raise
    if created:
        store.commit()
    else:
        store.rollback()
    return saved


def _read(txn: Transaction) -> SavedState:
    sources = {
        journal: SourceOffset(offset, fragment)
        for journal, offset, fragment in txn.runtime_execute(
            f"SELECT journal, offset, fragment FROM {CHECKPOINT_TABLE}"
        )
    }
    heads = dict(txn.runtime_execute(f"SELECT journal, head FROM {OUTPUT_HEADS_TABLE}").fetchall())
    pending = [
        OutputBatch(journal, begin, epoch, zlib.decompress(compressed))
        for journal, begin, epoch, compressed in txn.runtime_execute(
            f"SELECT journal, begin, epoch, compressed FROM {PENDING_TABLE} ORDER BY journal, begin"
        )
    ]
    stats = txn.runtime_execute(f"SELECT transactions FROM {STATS_TABLE} WHERE id = 1").fetchall()
    migrations = [
        row[0]
        for row in txn.runtime_execute(f"SELECT statement FROM {MIGRATIONS_TABLE} ORDER BY idx")
    ]
    return SavedState(sources, heads, pending, int(stats[0][0]) if stats else 0, migrations)


def write(txn: Transaction, rows: CommitRows) -> None:
    """Record one transaction's checkpoint, output heads and batches in ``txn``."""
    txn.runtime_executemany(
        f"INSERT OR REPLACE INTO {CHECKPOINT_TABLE} (journal, offset, fragment) VALUES (?, ?, ?)",
        [(j, s.offset, s.fragment) for j, s in rows.sources.items()],
    )
    txn.runtime_executemany(
        f"INSERT OR REPLACE INTO {OUTPUT_HEADS_TABLE} (journal, head) VALUES (?, ?)",
        list(rows.output_heads.items()),
    )
    txn.runtime_executemany(
        f"DELETE FROM {PENDING_TABLE} WHERE journal = ? AND begin = ?",
        [(b.journal, b.begin) for b in rows.appended],
    )
    txn.runtime_executemany(
        f"INSERT INTO {PENDING_TABLE} (journal, begin, epoch, compressed) VALUES (?, ?, ?, ?)",
        [
            (
                b.journal,
                b.begin,
                b.epoch,
                compress(b.payload) if b.compressed is None else b.compressed.result(),
            )
            for b in rows.pending
        ],
    )
    txn.runtime_execute(
        f"UPDATE {STATS_TABLE} SET transactions = ? WHERE id = 1", (rows.transactions,)
    )


def record_migrations(txn: Transaction, first: int, statements: Iterable[str]) -> None:
    txn.runtime_executemany(
        f"INSERT INTO {MIGRATIONS_TABLE} (idx, statement) VALUES (?, ?)",
        [(first + i, s) for i, s in enumerate(statements)],
    )
