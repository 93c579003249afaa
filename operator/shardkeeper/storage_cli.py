"""``shardkeeper storage``: what tasks and collections take in their buckets (``usage``),
and pruning shards' recovery logs by hand (``prune``, the same code as ``kubectl shards
prune-logs``). It reads Tasks, Shards, Collections, StorageMappings and their Secrets with
the caller's own rights, as a shard replica does, and only the mappings' first stores."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from shardkeeper import logprune
from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.shard import Shard
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import Task
from shardkeeper.kube.client import Transport, request
from shardkeeper.kube.paths import resource_path
from shardkeeper.kubecli import CliError, add_kube_arguments, client, run
from shardkeeper.runtime.shell.startup import (
    KubeReader,
    StartupError,
    load_object,
    mapping_credentials,
    parse,
)
from shardkeeper.runtime.shell.storagemap import object_store, store_prefix
from shardkeeper.storage import errors
from shardkeeper.storage.layout import collection_dir, object_key, task_recovery_dir
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.usage import (
    CollectionUsage,
    TaskUsage,
    collection_usage,
    table,
    task_usage,
    to_json,
)


class Stores:
    """Each (namespace, StorageMapping)'s first store, opened once."""

    def __init__(self, kube: Transport) -> None:
        self.kube = kube
        self._open: dict[tuple[str, str], tuple[ObjectStore, str]] = {}

    def get(self, namespace: str, mapping: str, why: str) -> tuple[ObjectStore, str]:
        """The store and its prefix."""
        if (namespace, mapping) not in self._open:
            reader = KubeReader(self.kube, namespace)
            loaded = load_object(reader, StorageMapping, mapping, why)
            store = object_store(loaded, mapping_credentials(reader, loaded))
            self._open[namespace, mapping] = (store, store_prefix(loaded))
        return self._open[namespace, mapping]


def _items(kube: Transport, plural: str, namespace: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = request(
        kube, "GET", resource_path(API_VERSION, plural, namespace)
    )["items"]
    return items


def _where(store: ObjectStore, prefix: str) -> str:
    return f"s3://{store.bucket}/{prefix}"


def gather(
    kube: Transport, namespace: str | None, task: str | None
) -> tuple[list[TaskUsage], list[CollectionUsage]]:
    """Usage of ``task`` (or of every task of ``namespace``, or of all namespaces for
    ``None``) and of the collections the task names (or of every collection there): one
    listing per task's recovery directory and per collection's directory."""
    if task is not None:
        path = resource_path(API_VERSION, Task.PLURAL, namespace, task)
        task_objects = [request(kube, "GET", path)]
    else:
        task_objects = _items(kube, Task.PLURAL, namespace)
    tasks = [parse(Task, obj, "listed by the command") for obj in task_objects]
    logs = {
        (s["metadata"]["namespace"], s["spec"]["recoveryLog"]): s["metadata"]["name"]
        for s in _items(kube, Shard.PLURAL, namespace)
    }
    if task is not None:
        named = dict.fromkeys([*tasks[0].spec.sources, *tasks[0].spec.outputs])
        reader = KubeReader(kube, namespace or "default")
        why = f"named by Task {task!r}"
        collections = [load_object(reader, Collection, name, why) for name in named]
    else:
        collections = [
            parse(Collection, obj, "listed by the command")
            for obj in _items(kube, Collection.PLURAL, namespace)
        ]
    stores = Stores(kube)
    task_usages = []
    for t in sorted(tasks, key=lambda t: (t.metadata.namespace or "", t.metadata.name or "")):
        ns, name = t.metadata.namespace or "", t.metadata.name or ""
        why = f"spec.storageMapping of Task {name!r}"
        store, prefix = stores.get(ns, t.spec.storage_mapping, why)
        listing = store.list(object_key(prefix, task_recovery_dir(ns, name)))
        shards = {log: shard for (shard_ns, log), shard in logs.items() if shard_ns == ns}
        task_usages.append(
            task_usage(
                ns, name, store=_where(store, prefix), prefix=prefix, listing=listing, shards=shards
            )
        )
    collection_usages = []
    for c in sorted(collections, key=lambda c: (c.metadata.namespace or "", c.metadata.name or "")):
        ns, name = c.metadata.namespace or "", c.metadata.name or ""
        why = f"spec.storageMapping of Collection {name!r}"
        store, prefix = stores.get(ns, c.spec.storage_mapping, why)
        listing = store.list(object_key(prefix, collection_dir(ns, name)))
        collection_usages.append(
            collection_usage(ns, name, store=_where(store, prefix), prefix=prefix, listing=listing)
        )
    return task_usages, collection_usages


def _usage(kube: Transport, namespace: str, args: argparse.Namespace) -> int:
    where = None if args.all_namespaces else namespace
    try:
        tasks, collections = gather(kube, where, args.task)
    except (StartupError, ValueError, errors.StorageError) as exc:
        raise CliError(str(exc)) from None
    if args.output == "json":
        print(json.dumps(to_json(tasks, collections), indent=2))
    else:
        print(table(tasks, collections, namespaces=args.all_namespaces))
    return 0


COMMANDS = {"usage": _usage, "prune": logprune.run}


def parser(prog: str) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=prog, description="What Shardkeeper tasks keep in their buckets, and pruning it."
    )
    add_kube_arguments(top)
    commands = top.add_subparsers(dest="command", required=True)
    usage = commands.add_parser(
        "usage", help="bytes and objects of each task's recovery logs and each collection"
    )
    usage.add_argument("task", nargs="?", help="only this task and the collections it names")
    usage.add_argument("-o", "--output", choices=("table", "json"), default="table")
    usage.add_argument(
        "-A", "--all-namespaces", action="store_true", help="tasks of every namespace"
    )
    prune = commands.add_parser(
        "prune", help="delete what no recovery needs from shards' recovery logs"
    )
    logprune.add_arguments(prune)
    for sub in (usage, prune):
        add_kube_arguments(sub, again=True)
    return top


def main(argv: Sequence[str], prog: str = "shardkeeper storage") -> int:
    args = parser(prog).parse_args(argv)
    if getattr(args, "all_namespaces", False) and args.task:
        print(f"{prog}: a TASK names one namespace's task: leave out -A", file=sys.stderr)
        return 2

    def command() -> int:
        kube, namespace = client(args)
        return COMMANDS[args.command](kube, namespace, args)

    return run(prog, command)
