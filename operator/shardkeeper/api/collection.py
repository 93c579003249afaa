"""Collection: a named, keyed set of JSON documents stored as journals."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints

from shardkeeper.api.meta import (
    AGE_COLUMN,
    ApiModel,
    Conditions,
    DeletionPolicy,
    Duration,
    ObjectName,
    PrinterColumn,
    Quantity,
    Resource,
    Rule,
    StatusModel,
    Time,
    cel_quantity,
    immutable,
    quantity_value,
    ready_column,
)

# RFC 6901 with non-empty reference tokens: '/id', '/customer/name', '/a~1b' for key "a/b".
JSON_POINTER_PATTERN = r"^(/([^/~]|~[01])+)+$"
JsonPointer = Annotated[str, StringConstraints(pattern=JSON_POINTER_PATTERN, max_length=256)]

RETENTION_MAX_AGE_MIN = Duration.parse("1m")


class Retention(ApiModel):
    """How long a collection's journals keep documents that every reader has read."""

    max_age: Duration | None = None
    """Documents older than this (by the time their fragment was written), at least 1m,
    may be deleted once every reading shard has checkpointed past them."""
    max_bytes: Quantity | None = None
    """Bytes of newer data each journal keeps: a fragment followed in its journal by at
    least this much may be deleted once every reading shard has checkpointed past it. More
    than 0."""

    RULES = (
        Rule(
            "has(self.maxAge) || has(self.maxBytes)",
            "retention needs maxAge, maxBytes or both",
            holds=lambda r: r.max_age is not None or r.max_bytes is not None,
        ),
        Rule(
            f"!has(self.maxAge) || duration(self.maxAge) >= duration('{RETENTION_MAX_AGE_MIN}')",
            f"maxAge must be at least {RETENTION_MAX_AGE_MIN}",
            field_path=".maxAge",
            holds=lambda r: r.max_age is None or r.max_age >= RETENTION_MAX_AGE_MIN,
        ),
        Rule(
            f"!has(self.maxBytes) || {cel_quantity('self.maxBytes')}.isGreaterThan(quantity('0'))",
            "maxBytes must be more than 0",
            field_path=".maxBytes",
            holds=lambda r: r.max_bytes is None or quantity_value(r.max_bytes) > 0,
        ),
    )


class CollectionSpec(ApiModel):
    """The key, schema and storage of a collection."""

    key: Annotated[
        list[JsonPointer], Field(min_length=1, max_length=16, json_schema_extra=immutable("key"))
    ]
    """JSON pointers to the fields that make up a document's key, like [/id]. Documents with
    the same key are reduced together and routed to the same shard. Immutable."""
    document_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    """JSON schema that every document must match. Unset accepts any JSON object."""
    storage_mapping: ObjectName
    """Name of the StorageMapping, in the same namespace, where the journals are stored."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """What happens to the collection's journals when it is deleted: Retain keeps them,
    Delete removes them from object storage."""
    retention: Retention | None = None
    """Delete documents every reading shard has read once they are older than maxAge or
    beyond maxBytes of a journal (docs/data-plane.md, Collection retention). Unset keeps
    everything."""

    RULES = (
        Rule(
            "self.key.all(p, self.key.exists_one(q, q == p))",
            "key must not repeat a JSON pointer",
            field_path=".key",
            holds=lambda c: len(set(c.key)) == len(c.key),
        ),
    )


class RetentionStatus(StatusModel):
    """What the last run of a collection's retention found and did."""

    last_run: Time
    """When it ran."""
    retained_bytes: Annotated[int, Field(ge=0)] = 0
    """Bytes of the journals' fragments left after it."""
    oldest_retained: Time | None = None
    """When the oldest fragment left was written."""
    removed_bytes: Annotated[int, Field(ge=0)] = 0
    """Bytes of the fragments it deleted."""
    removed_fragments: Annotated[int, Field(ge=0)] = 0
    """Fragments it deleted."""
    held_back: Annotated[str, StringConstraints(max_length=4096)] = ""
    """Why it deleted nothing it otherwise would have: a reader whose position is unknown."""


class CollectionStatus(StatusModel):
    """Observed state of a Collection."""

    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Ready is True when the storage mapping is usable."""
    journals: Annotated[list[str], Field(max_length=4096)] = Field(default_factory=list)
    """Names of the collection's journals, one per writing shard."""
    retention: RetentionStatus | None = None
    """The operator's last run of spec.retention."""


class Collection(Resource):
    """A named, keyed set of JSON documents.

    Documents are stored as journals in the buckets of a StorageMapping, one journal per
    shard that writes to the collection.
    """

    KIND: ClassVar[str] = "Collection"
    PLURAL: ClassVar[str] = "collections"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("skc",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(
            name="Key", type="string", json_path=".spec.key", description="Key of the documents"
        ),
        PrinterColumn(
            name="Storage Mapping",
            type="string",
            json_path=".spec.storageMapping",
            description="Where the journals are stored",
        ),
        ready_column("Whether the collection is usable"),
        AGE_COLUMN,
    )

    spec: CollectionSpec
    status: CollectionStatus = Field(default_factory=CollectionStatus)
