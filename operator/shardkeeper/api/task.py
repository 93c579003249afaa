"""Task: a capture, derivation or materialization, and the template of its shards."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints

from shardkeeper.api.collection import JsonPointer
from shardkeeper.api.meta import (
    AGE_COLUMN,
    DNS1123_LABEL_PATTERN,
    FORBIDDEN,
    REQUIRED,
    ApiModel,
    Conditions,
    DeletionPolicy,
    DistinctNames,
    Duration,
    ObjectName,
    PrinterColumn,
    Quantity,
    Resource,
    Rule,
    SecretKeyRef,
    StatusModel,
    Time,
    cel_quantity,
    immutable,
    quantity_value,
)
from shardkeeper.api.pod import (
    ADMIN_PORT,
    QUALIFIED_NAME_PATTERN,
    Affinity,
    ImagePullPolicy,
    LabelValue,
    ResourceRequirements,
    Toleration,
)

# A shard's name is "<task>-<keyBegin>-<rClockBegin>" (18 more characters) and names its
# StatefulSet, whose controller-revision-hash label adds 11 more: 34 keeps those within
# the 63 characters a label value may have.
TASK_NAME_MAX_LENGTH = 34
TaskName = Annotated[
    str, StringConstraints(pattern=DNS1123_LABEL_PATTERN, max_length=TASK_NAME_MAX_LENGTH)
]

MAX_TXN_DURATION_DEFAULT = Duration.parse("1s")
MAX_TXN_DURATION_DEFAULT_MATERIALIZATION = Duration.parse("5m")
TXN_DURATION_LIMIT = Duration.parse("1h")
READ_TIMEOUT_MIN = Duration.parse("100ms")
READ_TIMEOUT_MAX = Duration.parse("10m")
IDEMPOTENCY_WINDOW_MIN = Duration.parse("1s")
IDEMPOTENCY_WINDOW_MAX = Duration.parse("168h")
PRUNE_EVERY_MIN = Duration.parse("10s")
PRUNE_EVERY_MAX = Duration.parse("24h")
DEFAULT_PRUNE_EVERY = Duration.parse("10m")


def prune_every_allowed(every: Duration) -> bool:
    """0s (never), or from PRUNE_EVERY_MIN to PRUNE_EVERY_MAX."""
    return every == Duration(0) or PRUNE_EVERY_MIN <= every <= PRUNE_EVERY_MAX


SQL_IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SqlIdentifier = Annotated[str, StringConstraints(pattern=SQL_IDENTIFIER_PATTERN, max_length=63)]
PYTHON_CALLABLE_PATTERN = (
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)
HOST_PATTERN = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)$"
SqlText = Annotated[str, StringConstraints(min_length=1, max_length=65536)]
MAX_BINDINGS = 64


class TaskType(StrEnum):
    """What a task does."""

    CAPTURE = "capture"
    DERIVATION = "derivation"
    MATERIALIZATION = "materialization"


class LogLevel(StrEnum):
    """Least severe level of the log lines that shards print."""

    ERROR = "error"
    WARN = "warn"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"


# Fields that hold it are named "by", never "on": YAML 1.1 parsers (kubectl's among them)
# read an unquoted `on:` key as the boolean true.
class SplitBy(StrEnum):
    """Which range a split halves."""

    KEY = "key"
    R_CLOCK = "rClock"


# --- capture --------------------------------------------------------------------------------


class HttpIngest(ApiModel):
    """An HTTP endpoint on every shard pod: a POST of a JSON document (or a JSON array of
    them) to /<collection> adds it to that output collection, and is answered only once the
    transaction that holds it has committed."""

    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """TCP port the pods listen on; not 8081, the pods' admin port."""
    auth_token_secret_ref: SecretKeyRef | None = None
    """Secret key with a bearer token that requests must present. Unset accepts any request."""
    max_request_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest request body accepted, in bytes. A request that announces a larger
    Content-Length is answered 413 before its body is read."""
    max_connections: Annotated[int, Field(ge=1, le=10000)] = 256
    """Most connections served at once. A connection beyond them is answered 429 with
    Retry-After and closed, unread."""
    read_timeout: Duration = Duration.parse("30s")
    """Longest time a request may take to arrive, from the connection (or the previous
    answer on it) to the last byte of its body; a slower one is cut off. Slow clients can
    hold a connection no longer than this."""
    idempotency_keys: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    """Most Idempotency-Key values each shard remembers (the newest), to answer a retried
    request with its first outcome instead of writing it again."""
    idempotency_window: Duration = Duration.parse("24h")
    """How long each shard remembers an Idempotency-Key after its request committed."""

    RULES = (
        Rule(
            f"!has(self.readTimeout) || (duration(self.readTimeout) >= "
            f"duration('{READ_TIMEOUT_MIN}') && duration(self.readTimeout) <= "
            f"duration('{READ_TIMEOUT_MAX}'))",
            f"readTimeout must be at least {READ_TIMEOUT_MIN} and at most {READ_TIMEOUT_MAX}",
            field_path=".readTimeout",
            holds=lambda h: READ_TIMEOUT_MIN <= h.read_timeout <= READ_TIMEOUT_MAX,
        ),
        Rule(
            f"!has(self.idempotencyWindow) || (duration(self.idempotencyWindow) >= "
            f"duration('{IDEMPOTENCY_WINDOW_MIN}') && duration(self.idempotencyWindow) <= "
            f"duration('{IDEMPOTENCY_WINDOW_MAX}'))",
            f"idempotencyWindow must be at least {IDEMPOTENCY_WINDOW_MIN} and at most "
            f"{IDEMPOTENCY_WINDOW_MAX}",
            field_path=".idempotencyWindow",
            holds=lambda h: (
                IDEMPOTENCY_WINDOW_MIN <= h.idempotency_window <= IDEMPOTENCY_WINDOW_MAX
            ),
        ),
        Rule(
            f"self.port != {ADMIN_PORT}",
            f"port {ADMIN_PORT} is the shard pods' admin port: choose another",
            field_path=".port",
            holds=lambda h: h.port != ADMIN_PORT,
        ),
    )


class CaptureSource(ApiModel):
    """Where a capture's documents come from; exactly one source is set."""

    http: HttpIngest | None = None
    """Documents posted to an HTTP endpoint."""

    RULES = (
        Rule(
            "has(self.http)",
            "a capture needs a source: set http",
            field_path=".http",
            reason=REQUIRED,
            holds=lambda c: c.http is not None,
        ),
    )


# --- derivation -----------------------------------------------------------------------------


class SqlDerivation(ApiModel):
    """A derivation in SQLite, as Flow's SQLite derivations: tables in the shard store, and
    one SQL lambda per source collection. Document fields are bound as parameters ($id,
    $customer, ...), and every row the lambda returns is published to the output."""

    migrations: Annotated[list[SqlText], Field(max_length=256)] = Field(default_factory=list)
    """SQL statements run once each, in order, to create and evolve the tables. Append new
    migrations; never edit one that has run."""
    lambdas: Annotated[dict[ObjectName, SqlText], Field(min_length=1, max_length=MAX_BINDINGS)]
    """SQL to run for each document, keyed by the source collection it reads."""


class PythonDerivation(ApiModel):
    """A derivation written in Python, loaded into the shard runtime."""

    module: Annotated[str, StringConstraints(pattern=PYTHON_CALLABLE_PATTERN, max_length=512)]
    """The callable that processes documents, as package.module:callable."""


class Derivation(ApiModel):
    """How a derivation computes its output; exactly one of sql or python is set."""

    sql: SqlDerivation | None = None
    """SQL lambdas over SQLite tables."""
    python: PythonDerivation | None = None
    """A Python plug-in."""
    shuffle: Annotated[
        dict[ObjectName, Annotated[list[JsonPointer], Field(min_length=1, max_length=16)]],
        Field(max_length=MAX_BINDINGS),
    ] = Field(default_factory=dict)
    """Per source: the JSON pointers whose values route a document to a shard, in place of
    the source collection's key. A derivation whose state is keyed by something else than
    its source's key needs it to be split: the example keeps totals per customer of orders
    keyed by id, so it shuffles orders by /customer (docs/splits.md)."""

    RULES = (
        Rule(
            "has(self.sql) != has(self.python)",
            "set exactly one of sql or python",
            holds=lambda d: (d.sql is None) != (d.python is None),
        ),
    )


# --- materialization ------------------------------------------------------------------------


def _duration_within(field: str, attribute: str, low: str, high: str) -> Rule:
    """The rule that ``field`` (``attribute`` in the model) lies from ``low`` to ``high``."""
    least, most = Duration.parse(low), Duration.parse(high)
    return Rule(
        f"!has(self.{field}) || (duration(self.{field}) >= duration('{low}') && "
        f"duration(self.{field}) <= duration('{high}'))",
        f"{field} must be from {low} to {high}",
        field_path=f".{field}",
        holds=lambda p: least <= getattr(p, attribute) <= most,
    )


class PostgresMaterialization(ApiModel):
    """Upserts documents into PostgreSQL tables, one row per key, with the task's checkpoint
    stored in the same database transaction.

    Connect either with dsnSecretRef, or with host, database, user and passwordSecretRef."""

    dsn_secret_ref: SecretKeyRef | None = None
    """Secret key holding a libpq connection URI (postgresql://user:password@host/db)."""
    host: Annotated[str, StringConstraints(pattern=HOST_PATTERN, max_length=253)] | None = None
    """Host name or address of the server."""
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    """TCP port of the server (used with host)."""
    database: Annotated[str, StringConstraints(min_length=1, max_length=63)] | None = None
    """Database to connect to."""
    user: Annotated[str, StringConstraints(min_length=1, max_length=63)] | None = None
    """Role to connect as."""
    password_secret_ref: SecretKeyRef | None = None
    """Secret key holding the role's password."""
    db_schema: SqlIdentifier = Field(default="public", alias="schema")
    """Schema that holds the tables."""
    tables: Annotated[dict[ObjectName, SqlIdentifier], Field(min_length=1, max_length=MAX_BINDINGS)]
    """Target table for each source collection, keyed by collection name."""
    connect_timeout: Duration = Duration.parse("10s")
    """Most time to wait for a connection to the server (libpq's connect_timeout, in whole
    seconds rounded up; it overrides one in the DSN). From 2s to 5m."""
    lock_timeout: Duration = Duration.parse("30s")
    """Most time a statement waits for a lock on a table or row (the session's lock_timeout).
    A commit that waits longer is rolled back and retried. From 10ms to 1h."""
    statement_timeout: Duration = Duration.parse("5m")
    """Most time one statement may run (the session's statement_timeout). A commit whose
    statement runs longer is rolled back and retried. From 100ms to 1h."""

    RULES = (
        Rule(
            "has(self.dsnSecretRef) != has(self.host)",
            "set either dsnSecretRef or host (with database, user and passwordSecretRef)",
            field_path=".host",
            holds=lambda p: (p.dsn_secret_ref is None) != (p.host is None),
        ),
        Rule(
            "!has(self.host) || "
            "(has(self.database) && has(self.user) && has(self.passwordSecretRef))",
            "host needs database, user and passwordSecretRef",
            field_path=".host",
            reason=REQUIRED,
            holds=lambda p: (
                p.host is None or None not in (p.database, p.user, p.password_secret_ref)
            ),
        ),
        Rule(
            "!has(self.dsnSecretRef) || "
            "!(has(self.database) || has(self.user) || has(self.passwordSecretRef))",
            "dsnSecretRef already names database, user and password: leave those unset",
            field_path=".dsnSecretRef",
            reason=FORBIDDEN,
            holds=lambda p: (
                p.dsn_secret_ref is None
                or (p.database, p.user, p.password_secret_ref) == (None, None, None)
            ),
        ),
        Rule(
            "self.tables.all(k, self.tables.all(j, j == k || self.tables[j] != self.tables[k]))",
            "each collection needs a table of its own",
            field_path=".tables",
            holds=lambda p: len(set(p.tables.values())) == len(p.tables),
        ),
        *(
            _duration_within(name, attribute, low, high)
            for name, attribute, low, high in (
                ("connectTimeout", "connect_timeout", "2s", "5m"),
                ("lockTimeout", "lock_timeout", "10ms", "1h"),
                ("statementTimeout", "statement_timeout", "100ms", "1h"),
            )
        ),
    )


class MaterializationTarget(ApiModel):
    """Where a materialization writes; exactly one target is set."""

    postgres: PostgresMaterialization | None = None
    """A PostgreSQL database."""

    RULES = (
        Rule(
            "has(self.postgres)",
            "a materialization needs a target: set postgres",
            field_path=".postgres",
            reason=REQUIRED,
            holds=lambda m: m.postgres is not None,
        ),
    )


# --- shards ---------------------------------------------------------------------------------


class AutoSplit(ApiModel):
    """Splits a shard that keeps falling behind, up to scaling.maxShards."""

    by: SplitBy = SplitBy.KEY
    """Which range to halve: key spreads keys over more shards; rClock spreads the documents
    of a few hot keys."""
    lag_bytes: Annotated[int, Field(ge=1)] = 64 * 1024 * 1024
    """Source lag, in bytes not yet read, above which a shard counts as falling behind."""
    sustained_for: Duration = Duration.parse("5m")
    """How long a shard must stay behind before it is split."""
    cooldown: Duration = Duration.parse("10m")
    """Least time between two automatic splits of the task."""


class Scaling(ApiModel):
    """How many shards a task runs."""

    min_shards: Annotated[int, Field(ge=1, le=1024)] = 1
    """Fewest shards the task runs."""
    max_shards: Annotated[int, Field(ge=1, le=1024)] | None = None
    """Most shards the task may run. Defaults to minShards."""
    auto_split: AutoSplit | None = None
    """Policy for splitting shards that fall behind. Unset means no automatic splits."""

    RULES = (
        Rule(
            "!has(self.maxShards) || self.minShards <= self.maxShards",
            "minShards must not exceed maxShards",
            field_path=".minShards",
            holds=lambda s: s.max_shards is None or s.min_shards <= s.max_shards,
        ),
        Rule(
            "!has(self.autoSplit) || (has(self.maxShards) && self.maxShards > self.minShards)",
            "autoSplit needs maxShards above minShards, or it could never split",
            field_path=".autoSplit",
            holds=lambda s: (
                s.auto_split is None or (s.max_shards is not None and s.max_shards > s.min_shards)
            ),
        ),
    )

    def effective_max_shards(self) -> int:
        return self.max_shards if self.max_shards is not None else self.min_shards


class ShardTemplate(ApiModel):
    """How each shard of the task runs: Flow's shard settings, scaling, and the Kubernetes
    side of its pods."""

    disable: bool = False
    """Stop processing: the task's shards keep their state but run no pods."""
    min_txn_duration: Duration = Duration(0)
    """Least time a transaction keeps processing documents before it commits, even if no
    more are ready. Longer transactions mean fewer, larger commits."""
    max_txn_duration: Duration | None = None
    """Most time a transaction processes documents before it starts to commit. Unset means
    1s for captures and derivations and 5m for materializations."""
    hot_standbys: Annotated[int, Field(ge=0, le=4)] = 0
    """Replicas per shard that tail the recovery log, ready to take over from the primary."""
    ring_buffer_size: Annotated[int, Field(ge=1, le=16 * 1024 * 1024)] = 65536
    """Documents kept in memory to sequence reads for exactly-once processing. Only a
    performance setting: a document that is no longer there is read again."""
    read_channel_size: Annotated[int, Field(ge=1, le=1024 * 1024)] = 4096
    """Documents read ahead of processing."""
    log_level: LogLevel = LogLevel.INFO
    """Least severe level of the log lines the shards print."""
    scaling: Scaling = Field(default_factory=Scaling, json_schema_extra={"default": {}})
    """How many shards the task runs: the operator splits shards until there are at least
    minShards, and automatic splits may add more up to maxShards."""
    image: Annotated[str, StringConstraints(pattern=r"^\S+$", max_length=1024)] | None = None
    """Container image of the shard pods. Unset means the operator's own image."""
    image_pull_policy: ImagePullPolicy | None = None
    """When the image is pulled; unset follows Kubernetes' default."""
    resources: ResourceRequirements | None = None
    """CPU and memory of each shard pod."""
    volume_size: Quantity = "1Gi"
    """Size of each replica's volume, which holds the shard store."""
    snapshot_every: Quantity = "256Mi"
    """Bytes of recovery log after which the primary uploads a snapshot of its store, from
    1Mi up to 1Ti. A restore reads the newest snapshot and the log after it, so a smaller
    value restores faster and uploads the store more often."""
    prune_every: Duration | None = None
    """Least time between two automatic prunes of the recovery log by the primary, which
    prunes after a snapshot lands: from 10s to 24h, or 0s for never (prune by hand with
    `shardkeeper shards prune-logs`). Unset means the operator's `--prune-every` (chart
    value `operator.shardPruneEvery`, 10m by default)."""
    storage_class_name: ObjectName | None = None
    """StorageClass of the volumes. Unset means the cluster's default class."""
    node_selector: Annotated[dict[str, LabelValue], Field(max_length=32)] = Field(
        default_factory=dict
    )
    """Labels a node must have to run shard pods."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list)
    """Taints of nodes that shard pods may run on."""
    affinity: Affinity | None = None
    """Affinity of shard pods, in the shape of a pod's spec.affinity."""

    RULES = (
        Rule(
            "!has(self.volumeSize) || "
            f"{cel_quantity('self.volumeSize')}.isGreaterThan(quantity('0'))",
            "volumeSize must be more than 0",
            field_path=".volumeSize",
            holds=lambda t: quantity_value(t.volume_size) > 0,
        ),
        Rule(
            "!has(self.snapshotEvery) || "
            f"({cel_quantity('self.snapshotEvery')}.compareTo(quantity('1Mi')) >= 0 && "
            f"{cel_quantity('self.snapshotEvery')}.compareTo(quantity('1Ti')) <= 0)",
            "snapshotEvery must be at least 1Mi and at most 1Ti",
            field_path=".snapshotEvery",
            holds=lambda t: 1 << 20 <= quantity_value(t.snapshot_every) <= 1 << 40,
        ),
        Rule(
            "!has(self.pruneEvery) || duration(self.pruneEvery) == duration('0s') || "
            f"(duration(self.pruneEvery) >= duration('{PRUNE_EVERY_MIN}') && "
            f"duration(self.pruneEvery) <= duration('{PRUNE_EVERY_MAX}'))",
            f"pruneEvery must be 0s (never) or from {PRUNE_EVERY_MIN} to {PRUNE_EVERY_MAX}",
            field_path=".pruneEvery",
            holds=lambda t: t.prune_every is None or prune_every_allowed(t.prune_every),
        ),
        Rule(
            "!has(self.nodeSelector) || self.nodeSelector.all(k, "
            f"k.matches(r'{QUALIFIED_NAME_PATTERN}'))",
            "each key of nodeSelector is a label key, such as kubernetes.io/arch",
            field_path=".nodeSelector",
            holds=lambda t: all(re.match(QUALIFIED_NAME_PATTERN, k) for k in t.node_selector),
        ),
        Rule(
            "!has(self.minTxnDuration) || "
            f"duration(self.minTxnDuration) <= duration('{TXN_DURATION_LIMIT}')",
            f"minTxnDuration must be at most {TXN_DURATION_LIMIT}",
            field_path=".minTxnDuration",
            holds=lambda t: t.min_txn_duration <= TXN_DURATION_LIMIT,
        ),
        Rule(
            "!has(self.maxTxnDuration) || (duration(self.maxTxnDuration) > duration('0s') && "
            f"duration(self.maxTxnDuration) <= duration('{TXN_DURATION_LIMIT}'))",
            f"maxTxnDuration must be more than 0s and at most {TXN_DURATION_LIMIT}",
            field_path=".maxTxnDuration",
            holds=lambda t: (
                t.max_txn_duration is None or Duration(0) < t.max_txn_duration <= TXN_DURATION_LIMIT
            ),
        ),
    )


# --- restore --------------------------------------------------------------------------------


class RestoreFrom(ApiModel):
    """Start the task from another task's recovery logs, as they were at their last commit
    or at the last commit no later than before (docs/backup-and-restore.md). The source
    task keeps running."""

    task: TaskName
    """Name of the task, in the same namespace, whose recovery logs this task starts from:
    a capture or derivation like this one, of the same StorageMapping."""
    before: Time | None = None
    """Restore the state of the last commit no later than this time (RFC 3339). Unset means
    the source's last commit when this task's shards are planned."""


class RestoredShard(StatusModel):
    """Where one shard of a restored task started."""

    shard: str
    """The shard of this task."""
    source_shard: str
    """The shard of the source task whose range it took."""
    recovery_log: str
    """The recovery log it forked: the source shard's, or the one that shard was split
    from when the restore point lies before the split."""
    offset: Annotated[int, Field(ge=0)]
    """Offset in that log just past the commit restored."""
    seq: Annotated[int, Field(ge=0)] = 0
    """Commit sequence number of that commit."""
    committed_at: Time | None = None
    """When that commit was made (unset for a commit of an older writer)."""


class RestoreStatus(StatusModel):
    """Where a task started from, when spec.restoreFrom is set."""

    task: str
    """The source task."""
    before: Time | None = None
    """spec.restoreFrom.before, when set."""
    shards: list[RestoredShard] = Field(default_factory=list)
    """One entry per shard started from the source's logs."""


# --- task -----------------------------------------------------------------------------------


def _size(items: object) -> int:
    return len(items) if isinstance(items, list | dict) else 0


# Each type of task has a block of its own, named as on the wire.
_BLOCKS = (
    (TaskType.CAPTURE, "capture", "a capture"),
    (TaskType.DERIVATION, "derive", "a derivation"),
    (TaskType.MATERIALIZATION, "materialize", "a materialization"),
)


def _has_block_if(task_type: TaskType, block: str) -> Callable[[Any], bool]:
    return lambda spec: spec.type != task_type or getattr(spec, block) is not None


def _block_only_if(task_type: TaskType, block: str) -> Callable[[Any], bool]:
    return lambda spec: spec.type == task_type or getattr(spec, block) is None


def _block_rules() -> Iterator[Rule]:
    """Each type of task requires its block, and forbids it to the other types."""
    for task_type, block, noun in _BLOCKS:
        yield Rule(
            f"self.type != '{task_type}' || has(self.{block})",
            f"{noun} needs spec.{block}",
            field_path=f".{block}",
            reason=REQUIRED,
            holds=_has_block_if(task_type, block),
        )
    for task_type, block, _ in _BLOCKS:
        yield Rule(
            f"self.type == '{task_type}' || !has(self.{block})",
            f"{block} is only for tasks of type {task_type}",
            field_path=f".{block}",
            reason=FORBIDDEN,
            holds=_block_only_if(task_type, block),
        )


# Maps keyed by source collection: (block, variant, map, what each entry is).
_BINDINGS = (
    ("derive", "sql", "lambdas", "a lambda"),
    ("materialize", "postgres", "tables", "a table"),
)


def _binding(spec: Any, block: str, variant: str, field: str) -> dict[str, str] | None:
    outer = getattr(spec, block)
    inner = getattr(outer, variant) if outer is not None else None
    return getattr(inner, field) if inner is not None else None


def _every_source_bound(block: str, variant: str, field: str) -> Callable[[Any], bool]:
    def holds(spec: Any) -> bool:
        bound = _binding(spec, block, variant, field)
        return bound is None or all(s in bound for s in spec.sources)

    return holds


def _only_sources_bound(block: str, variant: str, field: str) -> Callable[[Any], bool]:
    def holds(spec: Any) -> bool:
        bound = _binding(spec, block, variant, field)
        return bound is None or all(k in spec.sources for k in bound)

    return holds


def _binding_rules() -> Iterator[Rule]:
    """Each source has exactly one entry in the map that says how it is processed."""
    for block, variant, field, noun in _BINDINGS:
        path = f"{block}.{variant}.{field}"
        present = f"!has(self.{block}) || !has(self.{block}.{variant})"
        yield Rule(
            f"{present} || !has(self.sources) || self.sources.all(s, s in self.{path})",
            f"every source needs {noun} in {path}",
            field_path=f".{path}",
            reason=REQUIRED,
            holds=_every_source_bound(block, variant, field),
        )
        yield Rule(
            f"{present} || self.{path}.all(k, has(self.sources) && k in self.sources)",
            f"every key of {path} must be one of sources",
            field_path=f".{path}",
            holds=_only_sources_bound(block, variant, field),
        )


class TaskSpec(ApiModel):
    """What a task reads, how it processes, what it writes, and how its shards run."""

    type: Annotated[TaskType, Field(json_schema_extra=immutable("type"))]
    """capture, derivation or materialization. Immutable."""
    storage_mapping: Annotated[ObjectName, Field(json_schema_extra=immutable("storageMapping"))]
    """Name of the StorageMapping, in the same namespace, that holds the shards' recovery
    logs. Immutable: to move the logs, add a store to that StorageMapping."""
    sources: Annotated[DistinctNames, Field(max_length=MAX_BINDINGS)] = Field(default_factory=list)
    """Collections the task reads (derivations and materializations)."""
    outputs: Annotated[DistinctNames, Field(max_length=MAX_BINDINGS)] = Field(default_factory=list)
    """Collections the task writes: one or more for a capture, exactly one for a derivation."""
    capture: CaptureSource | None = None
    """Where a capture's documents come from. Required for, and only for, a capture."""
    derive: Derivation | None = None
    """How a derivation computes its output. Required for, and only for, a derivation."""
    materialize: MaterializationTarget | None = None
    """Where a materialization writes. Required for, and only for, a materialization."""
    shards: ShardTemplate = Field(default_factory=ShardTemplate, json_schema_extra={"default": {}})
    """How the task's shards run: Flow's shard settings (transaction durations, hot
    standbys, buffers, log level), scaling, and the Kubernetes side of their pods."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """What happens to the shards' recovery logs when the task is deleted: Retain keeps
    them, Delete removes them from object storage."""
    restore_from: Annotated[
        RestoreFrom | None, Field(json_schema_extra=immutable("restoreFrom"))
    ] = None
    """Start the shards from another task's recovery logs (a point-in-time restore) instead
    of an empty store; captures and derivations only. Set when the task is created;
    immutable."""

    RULES = (
        *_block_rules(),
        Rule(
            "!has(self.restoreFrom) || self.type != 'materialization'",
            "restoreFrom is for captures and derivations: a materialization's state is its "
            "database, restore that with the database's own backups",
            field_path=".restoreFrom",
            reason=FORBIDDEN,
            holds=lambda t: t.restore_from is None or t.type != TaskType.MATERIALIZATION,
        ),
        Rule(
            "has(self.restoreFrom) == has(oldSelf.restoreFrom)",
            "restoreFrom is set when a Task is created, never added or removed later",
            field_path=".restoreFrom",
            reason=FORBIDDEN,
        ),
        Rule(
            "self.type == 'capture' || (has(self.sources) && size(self.sources) > 0)",
            "a derivation or materialization reads at least one collection: set sources",
            field_path=".sources",
            reason=REQUIRED,
            holds=lambda t: t.type == TaskType.CAPTURE or _size(t.sources) > 0,
        ),
        Rule(
            "self.type != 'capture' || !has(self.sources) || size(self.sources) == 0",
            "a capture reads no collections: leave sources empty",
            field_path=".sources",
            reason=FORBIDDEN,
            holds=lambda t: t.type != TaskType.CAPTURE or _size(t.sources) == 0,
        ),
        Rule(
            "self.type == 'materialization' || (has(self.outputs) && size(self.outputs) > 0)",
            "a capture or derivation writes at least one collection: set outputs",
            field_path=".outputs",
            reason=REQUIRED,
            holds=lambda t: t.type == TaskType.MATERIALIZATION or _size(t.outputs) > 0,
        ),
        Rule(
            "self.type != 'derivation' || !has(self.outputs) || size(self.outputs) <= 1",
            "a derivation writes exactly one collection",
            field_path=".outputs",
            holds=lambda t: t.type != TaskType.DERIVATION or _size(t.outputs) <= 1,
        ),
        Rule(
            "self.type != 'materialization' || !has(self.outputs) || size(self.outputs) == 0",
            "a materialization writes no collections: leave outputs empty",
            field_path=".outputs",
            reason=FORBIDDEN,
            holds=lambda t: t.type != TaskType.MATERIALIZATION or _size(t.outputs) == 0,
        ),
        *_binding_rules(),
        Rule(
            "!has(self.derive) || !has(self.derive.shuffle) || "
            "self.derive.shuffle.all(k, has(self.sources) && k in self.sources)",
            "every key of derive.shuffle must be one of sources",
            field_path=".derive.shuffle",
            holds=lambda t: t.derive is None or all(k in t.sources for k in t.derive.shuffle),
        ),
        Rule(
            "!has(self.shards) || !has(self.shards.minTxnDuration) || "
            "duration(self.shards.minTxnDuration) <= (has(self.shards.maxTxnDuration) ? "
            "duration(self.shards.maxTxnDuration) : "
            f"duration(self.type == 'materialization' ? "
            f"'{MAX_TXN_DURATION_DEFAULT_MATERIALIZATION}' : '{MAX_TXN_DURATION_DEFAULT}'))",
            "minTxnDuration must not exceed maxTxnDuration (which defaults to "
            f"{MAX_TXN_DURATION_DEFAULT}, or {MAX_TXN_DURATION_DEFAULT_MATERIALIZATION} "
            "for a materialization)",
            field_path=".shards.minTxnDuration",
            holds=lambda t: t.shards.min_txn_duration <= t.effective_max_txn_duration(),
        ),
    )

    def effective_max_txn_duration(self) -> Duration:
        """maxTxnDuration, or its default for this type of task when unset."""
        if self.shards.max_txn_duration is not None:
            return self.shards.max_txn_duration
        if self.type == TaskType.MATERIALIZATION:
            return MAX_TXN_DURATION_DEFAULT_MATERIALIZATION
        return MAX_TXN_DURATION_DEFAULT


class TaskStatus(StatusModel):
    """Observed state of a Task."""

    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Ready (every shard has a primary that processes), Progressing (shards are being
    created, split or rolled) and Degraded (a shard has failed or lost its standbys)."""
    shards: Annotated[int, Field(ge=0)] = 0
    """Number of shards the task has."""
    ready_shards: Annotated[int, Field(ge=0)] = 0
    """Number of shards whose primary is processing."""
    shards_by_phase: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Number of shards in each phase, such as Running: 2."""
    restore: RestoreStatus | None = None
    """Where the shards started from, for a task with spec.restoreFrom."""


class Task(Resource):
    """A capture, derivation or materialization, run by one or more shards.

    Each shard owns a key range and an r-clock range of the task's work, keeps its state in
    a store replicated to a recovery log, and processes documents in transactions.
    """

    KIND: ClassVar[str] = "Task"
    PLURAL: ClassVar[str] = "tasks"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("skt",)
    NAME_MAX_LENGTH: ClassVar[int] = TASK_NAME_MAX_LENGTH
    NAME_PATTERN: ClassVar[str] = DNS1123_LABEL_PATTERN
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(
            name="Type", type="string", json_path=".spec.type", description="Type of task"
        ),
        PrinterColumn(
            name="Shards", type="integer", json_path=".status.shards", description="Shards"
        ),
        PrinterColumn(
            name="Ready",
            type="integer",
            json_path=".status.readyShards",
            description="Shards whose primary is processing",
        ),
        PrinterColumn(
            name="Status",
            type="string",
            json_path='.status.conditions[?(@.type=="Ready")].reason',
            description="Reason of the Ready condition",
            priority=1,
        ),
        PrinterColumn(
            name="Storage Mapping",
            type="string",
            json_path=".spec.storageMapping",
            description="Where the recovery logs are stored",
            priority=1,
        ),
        AGE_COLUMN,
    )

    spec: TaskSpec
    status: TaskStatus = Field(default_factory=TaskStatus)
