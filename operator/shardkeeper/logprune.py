"""Pruning shards' recovery logs by hand: what ``shardkeeper storage prune`` and
``kubectl shards prune-logs`` both run.

Each shard's Shard, Task, Collections, StorageMapping and credentials Secret are read
with the caller's rights, as a shard replica reads them (:mod:`.runtime.shell.startup`),
and its log in the mapping's first store is pruned by :func:`.storage.prune.prune`. The
holds of automatic pruning (:mod:`.runtime.shell.autoprune`) apply: a shard that a split
involves, or whose standbys' positions are not known, is skipped unless ``force``; and
the standbys' lowest ``recoveryLogHead`` is passed as ``retain_from``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.shard import Shard
from shardkeeper.kube.client import Transport, request
from shardkeeper.kube.paths import resource_path
from shardkeeper.kubecli import CliError
from shardkeeper.runtime.shell.autoprune import split_in_progress, standby_floor
from shardkeeper.runtime.shell.startup import KubeReader, StartupError, load_resources
from shardkeeper.runtime.shell.storagemap import object_store
from shardkeeper.storage import errors
from shardkeeper.storage.prune import PrunePlan, prune
from shardkeeper.storage.recoverylog import RecoveryLog


@dataclasses.dataclass(frozen=True)
class ShardPrune:
    """One shard's outcome: the plan that ran (or would, in a dry run), or why not."""

    shard: str
    plan: PrunePlan | None = None
    held: str | None = None
    retain_from: int | None = None


def hold(shard: Shard, hot_standbys: int) -> tuple[str | None, int | None]:
    """Why automatic pruning would hold ``shard`` back now (``None``: it would not), and
    the lowest position its replicas other than the primary report (``retain_from``; a
    shard without a primary has every replica counted). Pure."""
    floor = standby_floor(shard, shard.status.primary or "", hot_standbys)
    return split_in_progress(shard) or floor.unknown, floor.position


def prune_logs(
    kube: Transport, namespace: str, task: str | None, *, dry_run: bool, force: bool = False
) -> list[ShardPrune]:
    """Prune the log of each shard of ``task`` (or of every shard of ``namespace``), in
    name order; the first shard whose objects or bucket fail stops it (:class:`CliError`)."""
    shards = request(kube, "GET", resource_path(API_VERSION, Shard.PLURAL, namespace))["items"]
    names = sorted(s["metadata"]["name"] for s in shards if not task or s["spec"]["task"] == task)
    if not names:
        raise CliError(f"no shards{f' of task {task}' if task else ''} in {namespace}")
    reader = KubeReader(kube, namespace)
    done = []
    for name in names:
        try:
            resources = load_resources(reader, name)
            held, retain_from = hold(resources.shard, resources.task.spec.shards.hot_standbys)
            if held is not None and not force:
                done.append(ShardPrune(name, held=held, retain_from=retain_from))
                continue
            store = object_store(resources.mapping, resources.credentials)
            log = RecoveryLog(store, resources.recovery_log)
            plan = prune(log, dry_run=dry_run, retain_from=retain_from)
        except (StartupError, ValueError, errors.StorageError) as exc:
            raise CliError(f"shard {name}: {exc}") from None
        done.append(ShardPrune(name, plan=plan, held=held, retain_from=retain_from))
    return done


def report(results: Sequence[ShardPrune], *, dry_run: bool) -> str:
    """Each shard's plan and a line of what went (or would go). Pure."""
    lines = []
    would = "would remove" if dry_run else "removed"
    for result in results:
        plan = result.plan
        if plan is None:
            lines.append(f"shard/{result.shard}: skipped: {result.held} (--force prunes it)")
            continue
        lines.append(f"shard/{result.shard}")
        if result.held is not None:
            lines.append(f"  pruned despite: {result.held} (--force)")
        lines.append("  " + plan.describe().replace("\n", "\n  "))
        lines.append(
            f"  {would} {len(plan.keys)} objects and {plan.removed_bytes} log bytes, "
            f"kept {plan.kept_bytes} log bytes, {len(plan.tombstones)} fences as tombstones"
        )
    if dry_run:
        lines.append("DRY RUN: nothing deleted")
    return "\n".join(lines)


def to_json(results: Sequence[ShardPrune], *, dry_run: bool) -> dict[str, Any]:
    """The outcome for scripts: per shard, what was (or would be) removed. Pure."""
    shards = []
    for result in results:
        entry: dict[str, Any] = {
            "shard": result.shard,
            "pruned": result.plan is not None and not dry_run,
            "heldBack": result.held,
            "retainFrom": result.retain_from,
        }
        if result.plan is not None:
            plan = result.plan
            entry |= {
                "log": plan.log,
                "keptFrom": plan.keep_from,
                "removedObjects": len(plan.keys),
                "removedLogBytes": plan.removed_bytes,
                "keptLogBytes": plan.kept_bytes,
                "removed": list(plan.keys),
                "tombstones": [t.key for t in plan.tombstones],
            }
        shards.append(entry)
    return {"dryRun": dry_run, "shards": shards}


def run(kube: Transport, namespace: str, args: argparse.Namespace) -> int:
    """The command: ``args.task``, ``args.dry_run``, ``args.force`` and ``args.output``."""
    results = prune_logs(kube, namespace, args.task, dry_run=args.dry_run, force=args.force)
    if args.output == "json":
        print(json.dumps(to_json(results, dry_run=args.dry_run), indent=2))
    else:
        print(report(results, dry_run=args.dry_run))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", nargs="?", help="only this task's shards")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would go, delete nothing"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="also prune shards that a split involves or whose standbys' positions are unknown",
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
