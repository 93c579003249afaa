"""Which objects to reconcile when something changes: the object itself, and whatever
derives from it.

- a Task's Shards take their template from it; its output Collections list its shards,
  and a Collection being deleted waits for its Tasks;
- a Shard's Task counts it; a StatefulSet's Shard reports it;
- a StorageMapping decides whether Tasks and Collections can run, and its Secrets are in
  the Roles of the shards that use it (directly or through a Collection);
- a Collection's Tasks need it, and its StorageMapping's Secrets are in their shards' Roles;
- a Secret is checked by the StorageMappings and Tasks that name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shardkeeper.controller.cache import Cache
from shardkeeper.controller.names import SHARD_LABEL
from shardkeeper.controller.queue import Key


def _task_and_shards(cache: Cache, namespace: str, tasks: Iterable[str]) -> list[Key]:
    out = []
    for task in tasks:
        out.append(Key("Task", namespace, task))
        out.extend(
            Key("Shard", namespace, s.metadata.name or "") for s in cache.shards_of(namespace, task)
        )
    return out


def _outputs(cache: Cache, namespace: str, task: str) -> list[Key]:
    found = cache.task(namespace, task)
    outputs = found.spec.outputs if found is not None else []
    return [Key("Collection", namespace, c) for c in outputs]


def for_task(cache: Cache, namespace: str, name: str, body: Mapping[str, Any]) -> list[Key]:
    # the body, not the cache: a deleted Task is no longer in the cache, and a Collection
    # being deleted waits for its Tasks to go
    spec = body.get("spec", {})
    collections = dict.fromkeys([*spec.get("sources", []), *spec.get("outputs", [])])
    return _task_and_shards(cache, namespace, [name]) + [
        Key("Collection", namespace, c) for c in collections
    ]


def for_shard(cache: Cache, namespace: str, name: str, body: Mapping[str, Any]) -> list[Key]:
    # the body, not the cache: a deleted Shard is no longer in the cache
    task = str(body.get("spec", {}).get("task", ""))
    out = [Key("Shard", namespace, name)]
    if task:
        out.append(Key("Task", namespace, task))
        out.extend(_outputs(cache, namespace, task))
    return out


def for_statefulset(namespace: str, labels: Mapping[str, str]) -> list[Key]:
    shard = labels.get(SHARD_LABEL)
    return [Key("Shard", namespace, shard)] if shard else []


def for_collection(cache: Cache, namespace: str, name: str) -> list[Key]:
    tasks = cache.tasks_referring(namespace, "Collection", name)
    return [Key("Collection", namespace, name), *_task_and_shards(cache, namespace, tasks)]


def for_mapping(cache: Cache, namespace: str, name: str) -> list[Key]:
    out = [Key("StorageMapping", namespace, name)]
    out += _task_and_shards(
        cache, namespace, cache.tasks_referring(namespace, "StorageMapping", name)
    )
    for collection in cache.collections_using(namespace, name):
        out += for_collection(cache, namespace, collection)
    return list(dict.fromkeys(out))


def for_secret(cache: Cache, namespace: str, name: str) -> list[Key]:
    out = [Key("StorageMapping", namespace, m) for m in cache.mappings_referring(namespace, name)]
    out += [Key("Task", namespace, t) for t in cache.tasks_referring(namespace, "Secret", name)]
    return out
