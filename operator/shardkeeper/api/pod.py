"""Kubernetes scheduling and compute shapes that a Task's shard template passes to its pods.

They mirror the core/v1 types of the same names, narrowed to what Shardkeeper uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from shardkeeper.api.meta import (
    FORBIDDEN,
    REQUIRED,
    ApiModel,
    Quantity,
    Rule,
    cel_quantity,
    quantity_value,
)

ADMIN_PORT = 8081
"""The port of every shard pod's admin endpoints (health, readiness, metrics)."""


def pod_name(shard: str, ordinal: int) -> str:
    """The name of a shard's StatefulSet pod: the operator names them, replicas read them."""
    return f"{shard}-{ordinal}"


def pod_ordinal(shard: str, pod: str) -> int | None:
    """The ordinal of one of the shard's StatefulSet pods, or None if it is not one."""
    prefix = f"{shard}-"
    if not pod.startswith(prefix) or not pod[len(prefix) :].isdigit():
        return None
    return int(pod[len(prefix) :])


# A qualified name as Kubernetes accepts for label and taint keys: an optional DNS prefix
# and a '/', then a name of at most 63 characters.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QualifiedName = Annotated[
    str, StringConstraints(pattern=QUALIFIED_NAME_PATTERN, min_length=1, max_length=317)
]
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
"""A label value as Kubernetes accepts it (a node label's, or a taint's)."""

# A container's resources: the standard ones, huge pages of a size, or an extended
# resource, whose name is qualified by a domain (example.com/gpu).
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
HUGEPAGES_PREFIX = "hugepages-"
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_EXTENDED_RESOURCE = re.compile(EXTENDED_RESOURCE_PATTERN)


def is_resource_name(name: str) -> bool:
    return (
        name in STANDARD_RESOURCES
        or name.startswith(HUGEPAGES_PREFIX)
        or bool(_EXTENDED_RESOURCE.match(name))
    )


def _resource_name_cel(key: str) -> str:
    standard = ", ".join(f"'{r}'" for r in STANDARD_RESOURCES)
    return (
        f"{key} in [{standard}] || {key}.startsWith('{HUGEPAGES_PREFIX}') || "
        f"{key}.matches(r'{EXTENDED_RESOURCE_PATTERN}')"
    )


class ImagePullPolicy(StrEnum):
    """When the kubelet pulls the shard image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


def _names_known(field: str) -> Callable[[Any], bool]:
    return lambda r: all(is_resource_name(k) for k in getattr(r, field))


def _not_negative(field: str) -> Callable[[Any], bool]:
    return lambda r: all(quantity_value(v) >= 0 for v in getattr(r, field).values())


def _resource_rules() -> Iterator[Rule]:
    """The names and signs the API server accepts in a container's resources, for each of
    limits and requests."""
    for field in ("limits", "requests"):
        value = cel_quantity(f"self.{field}[k]")
        yield Rule(
            f"!has(self.{field}) || self.{field}.all(k, {_resource_name_cel('k')})",
            f"each key of {field} is cpu, memory, ephemeral-storage, hugepages-<size> or an "
            "extended resource qualified by a domain, such as example.com/gpu",
            field_path=f".{field}",
            holds=_names_known(field),
        )
        yield Rule(
            f"!has(self.{field}) || self.{field}.all(k, "
            f"!isQuantity(string(self.{field}[k])) || !{value}.isLessThan(quantity('0')))",
            f"{field} must not be negative",
            field_path=f".{field}",
            holds=_not_negative(field),
        )


def is_overcommitable(name: str) -> bool:
    """Whether a request may be below its limit: not for huge pages or extended resources,
    which the API server wants requested exactly as limited."""
    return not ("/" in name or name.startswith(HUGEPAGES_PREFIX))


_NOT_OVERCOMMITABLE_CEL = f"(k.contains('/') || k.startsWith('{HUGEPAGES_PREFIX}'))"
# request k against its limit, when both are quantities: <0, 0 or >0
_BOTH_QUANTITIES = "isQuantity(string(self.requests[k])) && isQuantity(string(self.limits[k]))"
_REQUEST_VS_LIMIT = (
    f"{cel_quantity('self.requests[k]')}.compareTo({cel_quantity('self.limits[k]')})"
)


def _whole_extended(field: str) -> Callable[[Any], bool]:
    return lambda r: all(
        quantity_value(v) == int(quantity_value(v))
        for k, v in getattr(r, field).items()
        if "/" in k
    )


def _exact_requests(r: Any) -> bool:
    return all(
        k in r.limits and quantity_value(v) == quantity_value(r.limits[k])
        for k, v in r.requests.items()
        if not is_overcommitable(k)
    )


def _requests_within_limits(r: Any) -> bool:
    return all(
        quantity_value(v) <= quantity_value(r.limits[k])
        for k, v in r.requests.items()
        if k in r.limits
    )


class ResourceRequirements(ApiModel):
    """Compute resources of each shard pod, as in a container's resources."""

    limits: Annotated[dict[str, Quantity], Field(max_length=16)] = Field(default_factory=dict)
    """Most compute resources each pod may use, such as cpu: "2" or memory: 1Gi."""
    requests: Annotated[dict[str, Quantity], Field(max_length=16)] = Field(default_factory=dict)
    """Compute resources each pod is scheduled with, such as cpu: 500m or memory: 512Mi."""

    RULES = (
        *_resource_rules(),
        Rule(
            "!has(self.requests) || !has(self.limits) || self.requests.all(k, "
            f"!(k in self.limits) || !({_BOTH_QUANTITIES}) || {_REQUEST_VS_LIMIT} <= 0)",
            "each request must not exceed the limit of that resource",
            field_path=".requests",
            holds=_requests_within_limits,
        ),
        *(
            Rule(
                f"!has(self.{field}) || self.{field}.all(k, !k.contains('/') || "
                f"!isQuantity(string(self.{field}[k])) || "
                f"{cel_quantity(f'self.{field}[k]')}.isInteger())",
                "an extended resource (domain/name) is counted in whole units",
                field_path=f".{field}",
                holds=_whole_extended(field),
            )
            for field in ("limits", "requests")
        ),
        Rule(
            f"!has(self.requests) || self.requests.all(k, !{_NOT_OVERCOMMITABLE_CEL} || "
            "(has(self.limits) && k in self.limits && "
            f"{_BOTH_QUANTITIES} && {_REQUEST_VS_LIMIT} == 0))",
            "huge pages and extended resources are requested exactly as limited: set the same "
            "limit",
            field_path=".requests",
            holds=_exact_requests,
        ),
    )


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
    value: LabelValue | None = None
    """Taint value to match with operator Equal."""
    effect: TaintEffect | None = None
    """Taint effect to match; unset matches all effects."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """How long a pod stays bound to a node with a NoExecute taint."""

    RULES = (
        Rule(
            "(has(self.key) && self.key != '') || "
            "(has(self.operator) && self.operator == 'Exists')",
            "a toleration without a key matches every taint: it needs operator Exists",
            field_path=".operator",
            reason=REQUIRED,
            holds=lambda t: bool(t.key) or t.operator == TolerationOperator.EXISTS,
        ),
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
