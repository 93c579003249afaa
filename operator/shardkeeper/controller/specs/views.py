"""Small read-only views of the built-in objects the operator observes.

The operator keeps these (not whole objects) in its cache, and the pure modules decide
from them, so they never see the client's classes or more than they need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import applied_hash


@dataclasses.dataclass(frozen=True)
class StatefulSetView:
    name: str
    namespace: str
    uid: str
    applied_hash: str | None
    replicas: int
    """spec.replicas: how many pods are wanted."""
    generation: int
    observed_generation: int
    current: int
    """status.replicas: how many pods exist."""
    ready: int
    updated: int
    """Pods at the update revision."""
    update_revision: str
    volume_claim_templates: tuple[Mapping[str, Any], ...] = ()
    resource_version: str = ""

    @property
    def settled(self) -> bool:
        """Whether the status describes the current spec."""
        return self.observed_generation >= self.generation

    @property
    def rolling(self) -> bool:
        """Some pods run an outdated template (or may: the status is not caught up yet)."""
        return self.current > 0 and (not self.settled or self.updated < self.current)

    def as_observed(self) -> dict[str, Any]:
        """The parts of the object that an apply must take into account."""
        return {"spec": {"volumeClaimTemplates": [dict(c) for c in self.volume_claim_templates]}}

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> StatefulSetView:
        meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            applied_hash=applied_hash(obj),
            replicas=int(spec.get("replicas", 1)),
            generation=int(meta.get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            current=int(status.get("replicas", 0)),
            ready=int(status.get("readyReplicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            update_revision=str(status.get("updateRevision", "")),
            volume_claim_templates=tuple(spec.get("volumeClaimTemplates", [])),
            resource_version=str(meta.get("resourceVersion", "")),
        )


@dataclasses.dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    revision: str
    ready: bool
    terminating: bool

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> PodView:
        meta = obj["metadata"]
        conditions = obj.get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            revision=meta.get("labels", {}).get(names.REVISION_LABEL, ""),
            ready=ready,
            terminating=meta.get("deletionTimestamp") is not None,
        )
