"""Which objects to reconcile when something changes: the object itself, and whatever
derives from it.

- a Task's Shards take their template from it; its output Collections list its shards,
  and a Collection being deleted waits for its Tasks;
- a Shard's Task counts it; a StatefulSet's Shard reports it; the child of a split moves
  its parent's split on;
- a StorageMapping decides whether Tasks and Collections can run, and its Secrets are in
  the Roles of the shards that use it (directly or through a Collection);
- a Collection's Tasks need it, and its StorageMapping's Secrets are in their shards' Roles;
- a Secret is checked by the StorageMappings and Tasks that name it.

Shards change often (each replica reports its progress, the primary its checkpoints), and
Tasks change whenever the operator writes their status; :class:`Seen` keeps what of each
object its dependents read, so that an event that changed none of it queues only what
needs it. It is memory only: after a restart every object is new, and queued.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from shardkeeper.controller.engine.cache import Cache
from shardkeeper.controller.engine.queue import Key
from shardkeeper.controller.engine.secrets import SecretEvent
from shardkeeper.controller.specs.names import SHARD_LABEL
from shardkeeper.controller.specs.splits import CATCH_UP_LAG


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
    spec = body.get("spec", {})
    task = str(spec.get("task", ""))
    out = [Key("Shard", namespace, name)]
    if task:
        out.append(Key("Task", namespace, task))
        out.extend(_outputs(cache, namespace, task))
    source = spec.get("splitSource")
    if source:
        # the child of a split: its parent's reconcile carries the split on
        out.append(Key("Shard", namespace, str(source)))
    if task:
        # a parent still names a child in splitTargets after the child's splitSource is
        # cleared (Finish); that clearing is the event its next step waits for
        out.extend(
            Key("Shard", namespace, parent.metadata.name or "")
            for parent in cache.shards_of(namespace, task)
            if name in parent.spec.split_targets and parent.metadata.name != source
        )
    return out


def lag_threshold(cache: Cache, namespace: str, body: Mapping[str, Any]) -> int | None:
    """The autoSplit.lagBytes of the shard's Task, if it has one."""
    task = cache.task(namespace, str(body.get("spec", {}).get("task", "")))
    auto = task.spec.shards.scaling.auto_split if task is not None else None
    return auto.lag_bytes if auto is not None else None


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


def for_secret_event(cache: Cache, event: SecretEvent) -> list[Key]:
    """What to reconcile after the Secret metadata watch reported ``event``; a Secret that
    nothing names is dropped from the cache (it holds the named ones only), one that did
    not change queues nothing."""
    secrets = cache.secrets
    if event.restart:
        stale = secrets.invalidate()
        return list(dict.fromkeys(k for ns, name in stale for k in for_secret(cache, ns, name)))
    namespace, name = event.namespace, event.name
    if not cache.names_secret(namespace, name):
        secrets.forget(namespace, name)
        return []
    if not secrets.changed(namespace, name, event.resource_version):
        return []
    return for_secret(cache, namespace, name)


class Seen:
    """What of each object (by uid) the last watch event showed, aspect by aspect."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], object] = {}

    def changed(self, uid: str, aspect: str, value: object) -> bool:
        key = (uid, aspect)
        if key in self._last and self._last[key] == value:
            return False
        self._last[key] = value
        return True

    def forget(self, uid: str) -> None:
        for key in [k for k in self._last if k[0] == uid]:
            del self._last[key]


def _conditions(status: Mapping[str, Any]) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
        for c in status.get("conditions", [])
    )


def _above(value: object, threshold: int | None) -> bool | None:
    return None if threshold is None or not isinstance(value, int) else value > threshold


def shard_aspects(
    body: Mapping[str, Any], lag_bytes: int | None = None
) -> tuple[object, object, object]:
    """What a Shard's own reconcile reads of it (not the checkpoint or log head, and of the
    lag only whether it is above ``lag_bytes``, its Task's autoSplit threshold), what its
    Task and Collections read of it, and what the parent of a split reads of its child."""
    meta, status = body.get("metadata", {}), body.get("status", {})
    replicas = tuple(
        (r.get("pod"), r.get("state"), r.get("message")) for r in status.get("replicas", [])
    )
    split = status.get("split") or {}
    own = (
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        status.get("primary"),
        status.get("epoch"),
        replicas,
        json.dumps(split, sort_keys=True),
        status.get("phase"),
        _conditions(status),
        _above(status.get("lag"), lag_bytes),
    )
    dependents = (
        meta.get("deletionTimestamp"),
        status.get("phase"),
        _conditions(status),
        split.get("step"),
        status.get("lagAboveSince"),
    )
    # a child's progress through the parent's log, only as coarse as the hand-off needs
    tailing = tuple(
        (
            r.get("pod"),
            r.get("state"),
            r.get("recoveryLogHead") is not None,
            _above(r.get("lag"), CATCH_UP_LAG),
        )
        for r in status.get("replicas", [])
    )
    for_parent = (
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        status.get("primary"),
        tailing,
    )
    return own, dependents, for_parent


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    kind: str
    type: str | None
    """kopf's: ADDED, MODIFIED, DELETED, or None while listing."""
    namespace: str
    name: str
    body: Mapping[str, Any]


def keys_for(cache: Cache, seen: Seen, event: WatchEvent) -> list[Key]:
    """What to reconcile after a watch event."""
    kind, namespace, name, body = event.kind, event.namespace, event.name, event.body
    uid = str(body.get("metadata", {}).get("uid", ""))
    gone = event.type == "DELETED"
    if gone:
        seen.forget(uid)

    def moved(aspect: str, value: object) -> bool:
        return gone or seen.changed(uid, aspect, value)

    if kind == "Task":
        meta = body.get("metadata", {})
        if moved("dependents", (meta.get("generation"), meta.get("deletionTimestamp"))):
            return for_task(cache, namespace, name, body)
        return [Key("Task", namespace, name)]
    if kind == "Shard":
        own, dependents, for_parent = shard_aspects(body, lag_threshold(cache, namespace, body))
        out = for_shard(cache, namespace, name, body)
        keep_self, keep_rest = moved("own", own), moved("dependents", dependents)
        keep_parent = moved("parent", for_parent)
        return [
            k
            for k in out
            if (k.kind == "Shard" and k.name == name and keep_self)
            or (k.kind == "Shard" and k.name != name and keep_parent)
            or (k.kind != "Shard" and keep_rest)
        ]
    if kind == "StatefulSet":
        return for_statefulset(namespace, body.get("metadata", {}).get("labels", {}))
    if kind == "StorageMapping":
        return for_mapping(cache, namespace, name)
    if kind == "Collection":
        return for_collection(cache, namespace, name)
    if kind == "Secret":
        return for_secret(cache, namespace, name)
    raise ValueError(f"no triggers for {kind}")
