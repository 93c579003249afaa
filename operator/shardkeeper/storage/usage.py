"""What a task's recovery logs and a collection's journals take in a bucket, from listings.

The caller lists each task's recovery directory and each collection's directory once
(:mod:`.layout` names them) and hands the listings here; this module sums them into
objects and bytes per shard's log (log fragments, snapshots, the rest), per task and per
collection, and renders the sums as a table or as JSON.

Pure: listings in, sums and text out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shardkeeper.storage.fragment import WRITER_OBJECT
from shardkeeper.storage.layout import collection_dir, task_recovery_dir
from shardkeeper.storage.objectstore import ObjectInfo

# the parts of a recovery log (:mod:`.recoverylog`): its journal, and its snapshots
FRAGMENTS_DIR = "journal"
SNAPSHOT_DIRS = ("snapshots", "snapshot-data")


@dataclasses.dataclass(frozen=True)
class Tally:
    objects: int = 0
    bytes: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.objects + other.objects, self.bytes + other.bytes)

    def to_json(self) -> dict[str, int]:
        return {"objects": self.objects, "bytes": self.bytes}


@dataclasses.dataclass(frozen=True)
class LogUsage:
    """One recovery log: ``log`` as in ``spec.recoveryLog``; ``shard`` the Shard that
    names it, ``None`` for a log no Shard names now (a split's retired parent)."""

    log: str
    shard: str | None
    fragments: Tally
    snapshots: Tally
    # fork registrations and fence claims
    other: Tally

    @property
    def total(self) -> Tally:
        return self.fragments + self.snapshots + self.other


@dataclasses.dataclass(frozen=True)
class TaskUsage:
    namespace: str
    task: str
    store: str  # s3://bucket/prefix, where the logs were listed
    logs: tuple[LogUsage, ...]

    @property
    def total(self) -> Tally:
        return sum((log.total for log in self.logs), Tally())


@dataclasses.dataclass(frozen=True)
class CollectionUsage:
    namespace: str
    collection: str
    store: str
    journals: int
    total: Tally


def task_usage(
    namespace: str,
    task: str,
    *,
    store: str,
    prefix: str,
    listing: Iterable[ObjectInfo],
    shards: Mapping[str, str],
) -> TaskUsage:
    """Sum ``listing`` (the objects under ``prefix`` + the task's recovery directory) per
    log. ``shards``: recovery log name (relative to the store's ``prefix``, as
    ``spec.recoveryLog``) → Shard name."""
    directory = prefix + task_recovery_dir(namespace, task)
    sums: dict[str, dict[str, Tally]] = {}
    for obj in listing:
        own, _, inside = obj.key[len(directory) :].partition("/")
        part = inside.split("/", 1)[0]
        if part == FRAGMENTS_DIR and not inside.endswith("/" + WRITER_OBJECT):
            kind = "fragments"
        elif part in SNAPSHOT_DIRS:
            kind = "snapshots"
        else:
            kind = "other"
        tallies = sums.setdefault(task_recovery_dir(namespace, task) + own, {})
        tallies[kind] = tallies.get(kind, Tally()) + Tally(1, obj.size)
    logs = tuple(
        LogUsage(
            log=name,
            shard=shards.get(name),
            fragments=sums[name].get("fragments", Tally()),
            snapshots=sums[name].get("snapshots", Tally()),
            other=sums[name].get("other", Tally()),
        )
        for name in sorted(sums)
    )
    return TaskUsage(namespace, task, store, logs)


def collection_usage(
    namespace: str, collection: str, *, store: str, prefix: str, listing: Iterable[ObjectInfo]
) -> CollectionUsage:
    """Sum ``listing`` (the objects under ``prefix`` + the collection's directory); each
    journal is one writer shard's (:func:`.layout.collection_journal`)."""
    directory = prefix + collection_dir(namespace, collection)
    total = Tally()
    writers = set()
    for obj in listing:
        writers.add(obj.key[len(directory) :].split("/", 1)[0])
        total += Tally(1, obj.size)
    return CollectionUsage(namespace, collection, store, len(writers), total)


def to_json(tasks: Sequence[TaskUsage], collections: Sequence[CollectionUsage]) -> dict[str, Any]:
    return {
        "tasks": [
            {
                "namespace": t.namespace,
                "task": t.task,
                "store": t.store,
                "total": t.total.to_json(),
                "logs": [
                    {
                        "log": log.log,
                        "shard": log.shard,
                        "fragments": log.fragments.to_json(),
                        "snapshots": log.snapshots.to_json(),
                        "other": log.other.to_json(),
                        "total": log.total.to_json(),
                    }
                    for log in t.logs
                ],
            }
            for t in tasks
        ],
        "collections": [
            {
                "namespace": c.namespace,
                "collection": c.collection,
                "store": c.store,
                "journals": c.journals,
                "total": c.total.to_json(),
            }
            for c in collections
        ],
    }


def size_text(size: int) -> str:
    """``512B``, ``1.5KiB``, ``3.0MiB``: binary units, as the CRDs' quantities."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _cell(tally: Tally) -> str:
    return f"{size_text(tally.bytes)} ({tally.objects})"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def table(
    tasks: Sequence[TaskUsage],
    collections: Sequence[CollectionUsage],
    *,
    namespaces: bool = False,
) -> str:
    """kubectl-like columns: one row per shard's log and a total per task, then one row
    per collection; cells are ``size (objects)``. ``namespaces`` adds a NAMESPACE column
    (``-A``)."""
    first = ["NAMESPACE"] if namespaces else []
    rows = [[*first, "TASK", "SHARD", "LOG FRAGMENTS", "SNAPSHOTS", "OTHER", "TOTAL"]]
    for t in tasks:
        where = [t.namespace] if namespaces else []
        for log in t.logs:
            shard = log.shard or f"({log.log}: no shard)"
            parts = (log.fragments, log.snapshots, log.other, log.total)
            rows.append([*where, t.task, shard, *(_cell(p) for p in parts)])
        rows.append([*where, t.task, "(all)", "", "", "", _cell(t.total)])
    lines = _columns(rows)
    crows = [[*first, "COLLECTION", "JOURNALS", "TOTAL"]]
    for c in collections:
        where = [c.namespace] if namespaces else []
        crows.append([*where, c.collection, str(c.journals), _cell(c.total)])
    return "\n".join([*lines, "", *_columns(crows)])
