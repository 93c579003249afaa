"""What a Task refers to, and what is wrong with those references.

A Task needs its StorageMapping to be ready (its bucket reachable and fencing-safe), every
Collection it reads or writes to exist and be ready, and every Secret it names to exist
with the key it names. Each problem has a CamelCase reason for the Task's conditions, so a
person sees what to fix instead of shards that crash-loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Protocol

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import READY, ConditionStatus, SecretKeyRef, find_condition
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import Task
from shardkeeper.controller.specs.objects import namespaced_name


class Lookup(Protocol):
    """Read access to the objects of one namespace, as the operator's cache has them."""

    def storage_mapping(self, namespace: str, name: str) -> StorageMapping | None: ...

    def collection(self, namespace: str, name: str) -> Collection | None: ...

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The keys of a Secret's data, or None if there is no such Secret."""
        ...


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why a Task cannot start shards. ``waiting`` problems clear by themselves (a mapping
    not checked yet); the others need a person."""

    reason: str
    message: str
    waiting: bool = False


def task_secret_refs(task: Task) -> Iterator[tuple[str, SecretKeyRef]]:
    """(field path, reference) of every Secret key the Task itself names."""
    spec = task.spec
    if spec.capture is not None and spec.capture.http is not None:
        ref = spec.capture.http.auth_token_secret_ref
        if ref is not None:
            yield "capture.http.authTokenSecretRef", ref
    if spec.materialize is not None and spec.materialize.postgres is not None:
        postgres = spec.materialize.postgres
        if postgres.dsn_secret_ref is not None:
            yield "materialize.postgres.dsnSecretRef", postgres.dsn_secret_ref
        if postgres.password_secret_ref is not None:
            yield "materialize.postgres.passwordSecretRef", postgres.password_secret_ref


def task_collections(task: Task) -> list[str]:
    """Collections the task reads or writes, each once, sources first."""
    return list(dict.fromkeys([*task.spec.sources, *task.spec.outputs]))


def mapping_names(task: Task, lookup: Lookup) -> list[str]:
    """StorageMappings the task's shards use: its own, and its collections'."""
    namespace = _namespace(task)
    found = [task.spec.storage_mapping]
    for name in task_collections(task):
        collection = lookup.collection(namespace, name)
        if collection is not None:
            found.append(collection.spec.storage_mapping)
    return list(dict.fromkeys(found))


def runtime_secret_names(task: Task, lookup: Lookup) -> list[str]:
    """Secrets a shard of the task may read: the credentials of every store of every
    StorageMapping it uses, and the Secrets the Task names."""
    namespace = _namespace(task)
    found: list[str] = []
    for mapping_name in mapping_names(task, lookup):
        mapping = lookup.storage_mapping(namespace, mapping_name)
        if mapping is None:
            continue
        for store in mapping.spec.stores:
            if store.credentials_secret_ref is not None:
                found.append(store.credentials_secret_ref.name)
    found.extend(ref.name for _, ref in task_secret_refs(task))
    return sorted(set(found))


def mapping_readiness(mapping: StorageMapping | None, name: str) -> Problem | None:
    """Why a StorageMapping cannot be used yet, if it cannot."""
    if mapping is None:
        return Problem("StorageMappingNotFound", f"StorageMapping {name} does not exist")
    ready = find_condition(mapping.status.conditions, READY)
    checked = mapping.status.observed_generation == mapping.metadata.generation
    if ready is None or not checked:
        return Problem(
            "StorageMappingNotReady",
            f"StorageMapping {name} has not been checked yet",
            waiting=True,
        )
    if ready.status != ConditionStatus.TRUE:
        return Problem(
            "StorageMappingNotReady",
            f"StorageMapping {name} is not ready ({ready.reason}): {ready.message}",
        )
    return None


def task_problems(task: Task, lookup: Lookup) -> list[Problem]:
    """Everything that keeps the task from running, most fundamental first."""
    namespace = _namespace(task)
    problems: list[Problem] = []
    own = task.spec.storage_mapping
    problem = mapping_readiness(lookup.storage_mapping(namespace, own), own)
    if problem is not None:
        problems.append(problem)
    for name in task_collections(task):
        role = "source" if name in task.spec.sources else "output"
        collection = lookup.collection(namespace, name)
        if collection is None:
            problems.append(
                Problem("CollectionNotFound", f"Collection {name} (a {role}) does not exist")
            )
            continue
        mapping_name = collection.spec.storage_mapping
        if mapping_name == own:
            continue  # already judged above
        problem = mapping_readiness(lookup.storage_mapping(namespace, mapping_name), mapping_name)
        if problem is not None:
            problems.append(
                Problem(
                    "CollectionNotReady",
                    f"Collection {name} (a {role}) cannot be used: {problem.message}",
                    waiting=problem.waiting,
                )
            )
    for path, ref in task_secret_refs(task):
        keys = lookup.secret_keys(namespace, ref.name)
        if keys is None:
            problems.append(
                Problem("SecretNotFound", f"Secret {ref.name} (spec.{path}) does not exist")
            )
        elif ref.key not in keys:
            problems.append(
                Problem(
                    "SecretKeyNotFound",
                    f"Secret {ref.name} has no key {ref.key} (spec.{path})",
                )
            )
    return problems


def summary(problems: Sequence[Problem]) -> str:
    return "; ".join(p.message for p in problems)


def _namespace(task: Task) -> str:
    return namespaced_name(task)[0]
