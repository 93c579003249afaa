"""Kubernetes scheduling and compute shapes that a Task's shard template passes to its pods.

They mirror the core/v1 types of the same names, narrowed to what Shardkeeper uses.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from shardkeeper.api.meta import FORBIDDEN, ApiModel, Quantity, Rule

# A qualified name as Kubernetes accepts for label and taint keys: an optional DNS prefix
# and a '/', then a name of at most 63 characters.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QualifiedName = Annotated[
    str, StringConstraints(pattern=QUALIFIED_NAME_PATTERN, min_length=1, max_length=317)
]


class ImagePullPolicy(StrEnum):
    """When the kubelet pulls the shard image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ResourceRequirements(ApiModel):
    """Compute resources of each shard pod, as in a container's resources."""

    limits: Annotated[dict[str, Quantity], Field(max_length=16)] = Field(default_factory=dict)
    """Most compute resources each pod may use, such as cpu: "2" or memory: 1Gi."""
    requests: Annotated[dict[str, Quantity], Field(max_length=16)] = Field(default_factory=dict)
    """Compute resources each pod is scheduled with, such as cpu: 500m or memory: 512Mi."""


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect a toleration matches; empty matches all effects."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """Lets shard pods run on nodes with a matching taint, as a pod's tolerations."""

    key: QualifiedName | None = None
    """Taint key to match; empty with operator Exists matches every taint."""
    operator: TolerationOperator | None = None
    """Exists or Equal (the default when unset)."""
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    """Taint value to match with operator Equal."""
    effect: TaintEffect | None = None
    """Taint effect to match; unset matches all effects."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """How long a pod stays bound to a node with a NoExecute taint."""

    RULES = (
        Rule(
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
            "value must be empty when operator is Exists",
            field_path=".value",
            reason=FORBIDDEN,
            holds=lambda t: t.operator != TolerationOperator.EXISTS or t.value is None,
        ),
        Rule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds is only valid with effect NoExecute",
            field_path=".tolerationSeconds",
            reason=FORBIDDEN,
            holds=lambda t: t.toleration_seconds is None or t.effect == TaintEffect.NO_EXECUTE,
        ),
    )


Affinity = dict[str, Any]
"""A pod affinity in core/v1 Affinity shape, passed to the pods unchanged."""
