"""Collection: a named, keyed set of JSON documents stored as journals."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints

from shardkeeper.api.meta import (
    AGE_COLUMN,
    ApiModel,
    Conditions,
    DeletionPolicy,
    ObjectName,
    PrinterColumn,
    Resource,
    Rule,
    StatusModel,
    immutable,
    ready_column,
)

# RFC 6901 with non-empty reference tokens: '/id', '/customer/name', '/a~1b' for key "a/b".
JSON_POINTER_PATTERN = r"^(/([^/~]|~[01])+)+$"
JsonPointer = Annotated[str, StringConstraints(pattern=JSON_POINTER_PATTERN, max_length=256)]


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

    RULES = (
        Rule(
            "self.key.all(p, self.key.exists_one(q, q == p))",
            "key must not repeat a JSON pointer",
            field_path=".key",
            holds=lambda c: len(set(c.key)) == len(c.key),
        ),
    )


class CollectionStatus(StatusModel):
    """Observed state of a Collection."""

    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Ready is True when the storage mapping is usable."""
    journals: Annotated[list[str], Field(max_length=4096)] = Field(default_factory=list)
    """Names of the collection's journals, one per writing shard."""


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
