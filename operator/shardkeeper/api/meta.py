"""Types shared by every Shardkeeper resource.

The API server validates objects against the CRD schemas generated from these types, and
the operator, the shard runtime and the CLI parse objects with them, so each constraint
here (pattern, bound, canonical form) is written once and holds on both sides.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

GROUP = "shardkeeper.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "shardkeeper"

# --- names -------------------------------------------------------------------------------

DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

DnsLabel = Annotated[str, StringConstraints(pattern=DNS1123_LABEL_PATTERN, max_length=63)]
"""A DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters."""

ObjectName = Annotated[
    str, StringConstraints(pattern=DNS1123_SUBDOMAIN_PATTERN, min_length=1, max_length=253)
]
"""The name of an object in the same namespace (a DNS-1123 subdomain)."""

SecretKey = Annotated[
    str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", min_length=1, max_length=253)
]
"""A key of a Secret's data."""

# --- 32-bit range bounds --------------------------------------------------------------------

RANGE_BOUND_PATTERN = r"^[0-9a-f]{8}$"
RANGE_MIN = 0x00000000
RANGE_MAX = 0xFFFFFFFF
_RANGE_BOUND_RE = re.compile(RANGE_BOUND_PATTERN)


def parse_range_bound(value: object) -> int:
    """A key or r-clock bound: 8 lowercase hex digits on the wire, an int in Python."""
    if isinstance(value, bool):
        raise ValueError("a range bound is 8 lowercase hex digits, not a boolean")
    if isinstance(value, int):
        if not RANGE_MIN <= value <= RANGE_MAX:
            raise ValueError(f"range bound {value} is outside 00000000..ffffffff")
        return value
    if isinstance(value, str) and _RANGE_BOUND_RE.match(value):
        return int(value, 16)
    raise ValueError(f"range bound must be 8 lowercase hex digits, like 7fffffff (got {value!r})")


def format_range_bound(value: int) -> str:
    return f"{value:08x}"


RangeBound = Annotated[
    int,
    PlainValidator(parse_range_bound),
    PlainSerializer(format_range_bound, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": RANGE_BOUND_PATTERN, "maxLength": 8}),
]
"""An inclusive key or r-clock range bound: 8 lowercase hex digits, 00000000 to ffffffff."""

# --- lists of distinct names ---------------------------------------------------------------


def distinct(items: list[str]) -> list[str]:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"duplicate value {item!r}")
        seen.add(item)
    return items


DistinctNames = Annotated[
    list[ObjectName],
    AfterValidator(distinct),
    Field(json_schema_extra={"x-kubernetes-list-type": "set"}),
]
"""Names without repeats; the API server refuses a repeat as a duplicate in a set."""

# --- durations -----------------------------------------------------------------------------

# A strict subset of Go's time.ParseDuration syntax (which CEL's duration() uses): no sign,
# no bare "0", ASCII units only. Whatever matches this parses identically in Go and here.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
DURATION_MAX_LENGTH = 32
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_NS = {
    "h": 3_600_000_000_000,
    "m": 60_000_000_000,
    "s": 1_000_000_000,
    "ms": 1_000_000,
    "us": 1_000,
    "ns": 1,
}
_MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds


class Duration:
    """A non-negative length of time, written like Go and Kubernetes durations.

    ``Duration.parse`` accepts ``500ms``, ``1s``, ``5m``, ``1h30m`` or ``1.5s``; ``str()``
    prints one canonical form: the non-zero units from hours down to nanoseconds
    (``1h30m``, ``1s500ms``), or ``0s``. Fractions below a nanosecond are truncated, as Go does.
    """

    __slots__ = ("_ns",)

    def __init__(self, nanoseconds: int) -> None:
        if not 0 <= nanoseconds <= _MAX_NS:
            raise ValueError(f"duration of {nanoseconds}ns is out of range")
        self._ns = nanoseconds

    @classmethod
    def parse(cls, text: str) -> Duration:
        if len(text) > DURATION_MAX_LENGTH or not _DURATION_RE.match(text):
            raise ValueError(
                f"invalid duration {text!r}: use a number and a unit (ns, us, ms, s, m, h), "
                "like 500ms, 1s, 5m or 1h30m"
            )
        total = Decimal(0)
        for number, unit in _DURATION_PART_RE.findall(text):
            total += Decimal(number) * _UNIT_NS[unit]
        return cls(int(total))

    @classmethod
    def of(
        cls, *, hours: int = 0, minutes: int = 0, seconds: int = 0, milliseconds: int = 0
    ) -> Duration:
        return cls(
            hours * _UNIT_NS["h"]
            + minutes * _UNIT_NS["m"]
            + seconds * _UNIT_NS["s"]
            + milliseconds * _UNIT_NS["ms"]
        )

    @property
    def nanoseconds(self) -> int:
        return self._ns

    def total_seconds(self) -> float:
        return self._ns / 1e9

    def to_timedelta(self) -> timedelta:
        return timedelta(microseconds=self._ns // 1000)

    def __str__(self) -> str:
        if self._ns == 0:
            return "0s"
        parts, rest = [], self._ns
        for unit, size in _UNIT_NS.items():
            count, rest = divmod(rest, size)
            if count:
                parts.append(f"{count}{unit}")
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and self._ns == other._ns

    def __lt__(self, other: Duration) -> bool:
        return self._ns < other._ns

    def __le__(self, other: Duration) -> bool:
        return self._ns <= other._ns

    def __gt__(self, other: Duration) -> bool:
        return self._ns > other._ns

    def __ge__(self, other: Duration) -> bool:
        return self._ns >= other._ns

    def __hash__(self) -> int:
        return hash(self._ns)

    @classmethod
    def _validate(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, timedelta):
            return cls(int(value / timedelta(microseconds=1)) * 1000)
        if isinstance(value, str):
            return cls.parse(value)
        raise ValueError(f"a duration is a string like 1s or 5m (got {value!r})")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema(), when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH}


# --- timestamps and quantities ---------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a timestamp needs a time zone (RFC 3339, like 2024-01-31T12:00:00Z)")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a 'Z', as Kubernetes writes metav1.Time; micros only if set."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _validate_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, str):
        try:
            return _utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise ValueError(f"a timestamp is RFC 3339, like 2024-01-31T12:00:00Z (got {value!r})")


Time = Annotated[
    datetime,
    PlainValidator(_validate_time),
    PlainSerializer(format_time, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A point in time, RFC 3339 on the wire and an aware UTC datetime in Python."""

# The pattern Kubernetes itself publishes for resource.Quantity.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
# far above any real quantity; a bound keeps the CEL rules over quantities within budget
QUANTITY_MAX_LENGTH = 64


def _validate_quantity(value: object) -> str:
    if isinstance(value, bool):
        raise ValueError("a quantity is a number or a string like 500m or 1Gi")
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str) and len(value) <= QUANTITY_MAX_LENGTH and _QUANTITY_RE.match(value):
        return value
    raise ValueError(f"invalid quantity {value!r}: use a number or a string like 500m or 1Gi")


_QUANTITY_SUFFIXES = {
    "": Decimal(1),
    **{
        s: Decimal(1000) ** e
        for s, e in zip("numkMGTPE", (-3, -2, -1, 1, 2, 3, 4, 5, 6), strict=True)
    },
    **{f"{s}i": Decimal(1024) ** e for e, s in enumerate("KMGTPE", start=1)},
}


def quantity_value(quantity: str) -> Decimal:
    """The number a valid quantity stands for: ``500m`` is 0.5, ``1Ki`` is 1024."""
    number = re.match(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)", quantity)
    if number is None:
        raise ValueError(f"invalid quantity {quantity!r}")
    suffix = quantity[number.end() :]
    if suffix in _QUANTITY_SUFFIXES:
        return Decimal(number[0]) * _QUANTITY_SUFFIXES[suffix]
    return Decimal(number[0]) * Decimal(10) ** Decimal(suffix[1:])  # 1e3, 1E-3


def cel_quantity(expression: str) -> str:
    """CEL for the quantity an int-or-string field holds (Kubernetes' quantity library)."""
    return f"quantity(string({expression}))"


Quantity = Annotated[
    str,
    PlainValidator(_validate_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": QUANTITY_MAX_LENGTH,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity, such as ``500m``, ``2`` or ``10Gi``."""

# --- CEL validation rules --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """A rule that spans fields, written once for both sides of the API.

    ``cel`` goes into the CRD as an ``x-kubernetes-validations`` entry, so the API server
    refuses a violating object with ``message`` at ``field_path`` (relative to the model the
    rule sits on). ``holds`` is the same rule in Python, so the models refuse it too. A
    transition rule (one that uses ``oldSelf``) has no ``holds``: a single object cannot
    break it.
    """

    cel: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    holds: Callable[[Any], bool] | None = None

    def schema(self) -> dict[str, str]:
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


REQUIRED = "FieldValueRequired"
FORBIDDEN = "FieldValueForbidden"


def immutable(field: str) -> dict[str, Any]:
    """Schema extras for a field that may never change once set (a transition rule)."""
    return {
        "x-kubernetes-validations": [
            Rule("self == oldSelf", f"{field} is immutable", reason=FORBIDDEN).schema()
        ]
    }


# --- model bases -----------------------------------------------------------------------------


def _camel(name: str) -> str:
    return to_camel(name.rstrip("_"))


class ApiModel(BaseModel):
    """Base of every spec part: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    # Cross-field rules of this model; see Rule.
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = [r.message for r in self.RULES if r.holds is not None and not r.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if cls.RULES:
            target = handler.resolve_ref_schema(json_schema)
            target.setdefault("x-kubernetes-validations", []).extend(r.schema() for r in cls.RULES)
        return json_schema


class StatusModel(ApiModel):
    """Base of status parts.

    Unknown fields are ignored rather than refused: a status written by a newer operator
    must still be readable by an older CLI.
    """

    model_config = ConfigDict(extra="ignore")


# --- conditions ----------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


class Condition(StatusModel):
    """One aspect of the resource's current state, in the shape of metav1.Condition."""

    type: Annotated[
        str,
        StringConstraints(
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            max_length=316,
        ),
    ]
    """Type of the condition in CamelCase, such as Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation that the condition was set for."""
    last_transition_time: Time
    """When the condition last changed from one status to another."""
    reason: Annotated[
        str,
        StringConstraints(
            pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", min_length=1, max_length=1024
        ),
    ]
    """A CamelCase word for the last transition, for machines."""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    """Details of the last transition, for people."""


CONDITIONS_SCHEMA_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}

Conditions = Annotated[
    list[Condition], Field(max_length=16, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
]


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[Condition]:
    """The conditions with ``type_`` set; its transition time moves only if its status does."""
    previous = find_condition(conditions, type_)
    if previous is not None and previous.status == status:
        transition = previous.last_transition_time
    else:
        transition = now or datetime.now(UTC)
    updated = Condition(
        type=type_,
        status=status,
        observed_generation=observed_generation,
        last_transition_time=transition,
        reason=reason,
        message=message,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


# --- references ----------------------------------------------------------------------------


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: SecretKey
    """Key within the Secret's data."""


class DeletionPolicy(StrEnum):
    """What happens to data in object storage when the resource is deleted."""

    RETAIN = "Retain"
    DELETE = "Delete"


# --- resources -----------------------------------------------------------------------------


class OwnerReference(ApiModel):
    """An object that owns this one; deleting the owner deletes this object."""

    model_config = ConfigDict(extra="allow")

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(ApiModel):
    """The parts of metav1.ObjectMeta that Shardkeeper reads; other fields pass through."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Time | None = None
    deletion_timestamp: Time | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)


class PrinterColumn(BaseModel):
    """A column of ``kubectl get``."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0


AGE_COLUMN = PrinterColumn(
    name="Age",
    type="date",
    json_path=".metadata.creationTimestamp",
    description="Time since creation",
)


def ready_column(description: str) -> PrinterColumn:
    """The status of the Ready condition."""
    return PrinterColumn(
        name="Ready",
        type="string",
        json_path='.status.conditions[?(@.type=="Ready")].status',
        description=description,
    )


class Resource(ApiModel):
    """A Shardkeeper object: apiVersion, kind, metadata, spec and status.

    Subclasses declare ``spec`` and ``status`` and the class variables that the CRD
    generator reads.
    """

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]]
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]]
    # A tighter bound on metadata.name than Kubernetes' own, where the name is reused in
    # the names of derived objects.
    NAME_MAX_LENGTH: ClassVar[int] = 253
    NAME_PATTERN: ClassVar[str] = DNS1123_SUBDOMAIN_PATTERN

    api_version: str = API_VERSION
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="before")
    @classmethod
    def _check_type_meta(cls, data: Any) -> Any:
        # Before the fields: an object of another kind fails on its kind, not on its spec.
        if isinstance(data, dict):
            api_version = data.get("apiVersion", API_VERSION)
            kind = data.get("kind", cls.KIND)
            if (api_version, kind) != (API_VERSION, cls.KIND):
                raise ValueError(
                    f"expected apiVersion {API_VERSION} and kind {cls.KIND}, "
                    f"got {api_version} {kind}"
                )
        return data

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        if not self.kind:
            self.kind = self.KIND
        name = self.metadata.name
        if name is not None and (
            len(name) > self.NAME_MAX_LENGTH or not re.match(self.NAME_PATTERN, name)
        ):
            raise ValueError(
                f"metadata.name {name!r} must be a DNS-1123 name of at most "
                f"{self.NAME_MAX_LENGTH} characters"
            )
        return self

    @classmethod
    def from_k8s(cls, obj: dict[str, Any]) -> Self:
        """Parse an object as the API server or a manifest presents it."""
        return cls.model_validate(obj)

    def to_k8s(self, *, exclude_unset: bool = False) -> dict[str, Any]:
        """The object as JSON-ready data; ``exclude_unset`` leaves out what was never set."""
        data: dict[str, Any] = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude_unset=exclude_unset
        )
        if exclude_unset:
            data = {"apiVersion": self.api_version, "kind": self.kind, **data}
        return data
