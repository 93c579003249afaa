"""StorageMapping: the buckets where recovery logs and collection journals live."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from shardkeeper.api.meta import (
    AGE_COLUMN,
    ApiModel,
    Conditions,
    ObjectName,
    PrinterColumn,
    Resource,
    Rule,
    SecretKey,
    StatusModel,
    Time,
    ready_column,
)
from shardkeeper.api.pod import QUALIFIED_NAME_PATTERN

# S3's bucket naming rules, less the legacy upper-case and underscore forms.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# '/'-terminated segments of S3-safe characters; a segment never starts with '.', so '.'
# and '..' cannot appear. Empty means the bucket's root.
PREFIX_PATTERN = r"^([A-Za-z0-9_=+-][A-Za-z0-9_.=+-]*/)*$"
REGION_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
ENDPOINT_PATTERN = r"^https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?(/\S*)?$"
DEFAULT_REGION = "us-east-1"
ROLE_ARN_PATTERN = r"^arn:[a-z0-9-]+:iam:[a-z0-9-]*:[0-9]*:role/\S+$"
AUDIENCE_PATTERN = r"^\S+$"


class StoreProvider(StrEnum):
    """The object-storage API a store speaks."""

    S3 = "s3"


class S3Credentials(ApiModel):
    """A Secret in the same namespace with an S3 access key."""

    name: ObjectName
    """Name of the Secret."""
    access_key_id_key: SecretKey = "accessKeyId"
    """Key of the Secret's data that holds the access key ID."""
    secret_access_key_key: SecretKey = "secretAccessKey"
    """Key of the Secret's data that holds the secret access key."""


class WebIdentity(ApiModel):
    """Temporary credentials from STS AssumeRoleWithWebIdentity, with a service-account token
    that Kubernetes projects into the shard pods, as IRSA does."""

    role_arn: Annotated[str, StringConstraints(pattern=ROLE_ARN_PATTERN, max_length=2048)]
    """ARN of the role the shard pods assume, like arn:aws:iam::123456789012:role/shards.
    Its trust policy must accept the cluster's service-account token issuer and the
    subjects system:serviceaccount:<namespace>:<shard>-runtime."""
    audience: Annotated[str, StringConstraints(pattern=AUDIENCE_PATTERN, max_length=253)] = (
        "sts.amazonaws.com"
    )
    """Audience of the projected token: the client ID the STS trusts for the issuer."""
    sts_endpoint: (
        Annotated[str, StringConstraints(pattern=ENDPOINT_PATTERN, max_length=2048)] | None
    ) = None
    """URL of the STS to call (AWS_ENDPOINT_URL_STS), for an S3-compatible service with
    its own STS such as MinIO. Unset means AWS STS in the first store's region."""


class Store(ApiModel):
    """A bucket and prefix in object storage."""

    provider: StoreProvider = StoreProvider.S3
    """API of the store. Only s3 for now, which covers S3-compatible services via endpoint."""
    bucket: Annotated[str, StringConstraints(pattern=BUCKET_PATTERN, min_length=3, max_length=63)]
    """Name of the bucket."""
    prefix: Annotated[str, StringConstraints(pattern=PREFIX_PATTERN, max_length=512)] = ""
    """Prefix of every object Shardkeeper writes, ending in '/', like shardkeeper/prod/.
    Empty means the root of the bucket."""
    region: Annotated[str, StringConstraints(pattern=REGION_PATTERN, max_length=64)] = (
        DEFAULT_REGION
    )
    """Region of the bucket."""
    endpoint: (
        Annotated[str, StringConstraints(pattern=ENDPOINT_PATTERN, max_length=2048)] | None
    ) = None
    """URL of an S3-compatible service (MinIO, R2, GCS interoperability and the like).
    Unset means AWS S3."""
    force_path_style: bool = False
    """Address the bucket in the URL path (http://host/bucket/key) instead of the host name,
    as most S3-compatible services on a single host need."""
    credentials_secret_ref: S3Credentials | None = None
    """Secret with the access key. Unset means ambient credentials: boto3's default chain
    in the shard pods (spec.webIdentity's role if it is set, otherwise environment,
    instance profile, EKS Pod Identity) and in the operator (its own chain, see
    docs/credentials.md)."""


class StorageMappingSpec(ApiModel):
    """Where a task's recovery logs and a collection's journals are stored."""

    stores: Annotated[
        list[Store],
        Field(
            min_length=1,
            max_length=8,
            # merged item by item, so that appliers that leave the defaulted fields out
            # (two GitOps tools applying the same manifest) do not conflict over the list
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["bucket", "prefix"],
            },
        ),
    ]
    """Stores, in order. New data is written to the first, and only the first is read for
    now: the operator checks the stores after it and deletes from them with a Task, but
    shards do not read them yet, so data cannot be moved to a new bucket this way."""
    web_identity: WebIdentity | None = None
    """For stores without credentialsSecretRef: the shard pods of Tasks that use this
    mapping get a projected service-account token and AWS_ROLE_ARN,
    AWS_WEB_IDENTITY_TOKEN_FILE (and AWS_ENDPOINT_URL_STS) in their environment, so boto3
    assumes the role and refreshes its temporary credentials itself. Unset means plain
    ambient credentials."""
    service_account_annotations: Annotated[
        dict[str, Annotated[str, StringConstraints(max_length=4096)]],
        Field(max_length=16),
    ] = Field(default_factory=dict)
    """Annotations on the ServiceAccount of every shard of Tasks that use this mapping, for
    an identity webhook, like eks.amazonaws.com/role-arn or iam.gke.io/gcp-service-account."""

    RULES = (
        Rule(
            "!has(self.webIdentity) || self.stores.exists(s, !has(s.credentialsSecretRef))",
            "webIdentity is set, but every store has a credentialsSecretRef, so nothing "
            "would use it: remove webIdentity or a credentialsSecretRef",
            field_path=".webIdentity",
            holds=lambda s: (
                s.web_identity is None or any(x.credentials_secret_ref is None for x in s.stores)
            ),
        ),
        Rule(
            "!has(self.serviceAccountAnnotations) || self.serviceAccountAnnotations.all(k, "
            f"k.matches(r'{QUALIFIED_NAME_PATTERN}'))",
            "each key of serviceAccountAnnotations is an annotation key, such as "
            "eks.amazonaws.com/role-arn",
            field_path=".serviceAccountAnnotations",
            holds=lambda s: all(
                re.match(QUALIFIED_NAME_PATTERN, k) for k in s.service_account_annotations
            ),
        ),
        Rule(
            "self.stores.all(a, self.stores.exists_one(b, "
            "b.bucket == a.bucket && b.prefix == a.prefix))",
            "each store must have a different bucket or prefix",
            field_path=".stores",
            holds=lambda s: len({(x.bucket, x.prefix) for x in s.stores}) == len(s.stores),
        ),
    )


class StoreStatus(StatusModel):
    """What the operator last found out about one store."""

    bucket: str
    """Bucket of the store."""
    prefix: str = ""
    """Prefix of the store."""
    reachable: bool | None = None
    """Whether the bucket answered a read and a write under the prefix."""
    conditional_writes: bool | None = None
    """Whether the bucket refuses a second create of an object with If-None-Match: *, which
    journal fencing depends on."""
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    """Why the store is unreachable or unfit, if it is."""
    checked_at: Time | None = None
    """When the store was last checked."""


class StorageMappingStatus(StatusModel):
    """Observed state of a StorageMapping."""

    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Ready is True when the first store is reachable and honours conditional writes."""
    bucket_reachable: bool | None = None
    """Whether the first store (where new data goes) is reachable."""
    conditional_writes: bool | None = None
    """Whether the first store honours conditional writes (If-None-Match: *)."""
    stores: Annotated[list[StoreStatus], Field(max_length=8)] = Field(default_factory=list)
    """One entry per store, in the order of spec.stores."""


class StorageMapping(Resource):
    """Buckets in object storage for recovery logs and collection journals.

    New data goes to the first store, and only the first is read for now. The status says
    whether the first bucket is reachable and honours conditional writes, which fencing
    depends on.
    """

    KIND: ClassVar[str] = "StorageMapping"
    PLURAL: ClassVar[str] = "storagemappings"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("skm",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(
            name="Bucket",
            type="string",
            json_path=".spec.stores[0].bucket",
            description="Bucket that new data goes to",
        ),
        PrinterColumn(
            name="Prefix",
            type="string",
            json_path=".spec.stores[0].prefix",
            description="Prefix in that bucket",
            priority=1,
        ),
        PrinterColumn(
            name="Reachable",
            type="boolean",
            json_path=".status.bucketReachable",
            description="Whether the first bucket is reachable",
        ),
        PrinterColumn(
            name="Conditional Writes",
            type="boolean",
            json_path=".status.conditionalWrites",
            description="Whether the first bucket honours If-None-Match: *",
        ),
        ready_column("Whether the mapping is usable"),
        AGE_COLUMN,
    )

    spec: StorageMappingSpec
    status: StorageMappingStatus = Field(default_factory=StorageMappingStatus)
