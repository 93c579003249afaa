"""Small helpers for the plain-dict objects the operator applies: owner references, and the
hash that lets it skip applying a shard's objects when none of them changed."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from shardkeeper.api.meta import Resource
from shardkeeper.controller.specs.names import APPLIED_HASH_ANNOTATION

Object = dict[str, Any]


def owner_reference(owner: Resource) -> Object:
    """A controller reference to ``owner``: deleting it deletes the object (garbage
    collection), and the GC deletes the dependents before it when asked to in foreground."""
    if not owner.metadata.uid or not owner.metadata.name:
        raise ValueError(f"{owner.kind} has no uid or name yet: it must be read from the API")
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def namespaced_name(obj: Resource) -> tuple[str, str]:
    """(namespace, name) of an object read from the API, where both are always set."""
    namespace, name = obj.metadata.namespace, obj.metadata.name
    if namespace is None or name is None:
        raise ValueError(f"{obj.kind} without a namespace or name: it must be read from the API")
    return namespace, name


def content_hash(objects: Sequence[Mapping[str, Any]]) -> str:
    """A short hash of ``objects`` that ignores key order."""
    text = json.dumps(list(objects), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(obj: Object, digest: str) -> Object:
    """``obj`` with ``digest`` in its applied-hash annotation."""
    out = copy.deepcopy(obj)
    out.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
    return out


def applied_hash(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(APPLIED_HASH_ANNOTATION)
    return str(value) if value is not None else None
