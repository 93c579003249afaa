"""Valid manifests (the examples, and a Shard as the operator would write it) and the table
of invalid ones, shared by the API-server tests and the model unit tests."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GROUP, VERSION = "shardkeeper.io", "v1alpha1"
PLURALS = {
    "StorageMapping": "storagemappings",
    "Collection": "collections",
    "Task": "tasks",
    "Shard": "shards",
}

Manifest = dict[str, Any]


def example_documents() -> list[tuple[str, Manifest]]:
    """(file name, document) for every document in examples/, in file order."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((path.name, doc))
    return docs


def example(kind: str, name: str) -> Manifest:
    """A deep copy of one example object."""
    for _, doc in example_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return copy.deepcopy(doc)
    raise KeyError(f"no {kind} {name} in {EXAMPLES}")


def shard() -> Manifest:
    """A Shard as the operator creates it: the lower half of the key space of a task."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Shard",
        "metadata": {"name": "customer-totals-00000000-00000000"},
        "spec": {
            "task": "customer-totals",
            "keyBegin": "00000000",
            "keyEnd": "7fffffff",
            "rClockBegin": "00000000",
            "rClockEnd": "ffffffff",
            "recoveryLog": "recovery/default/customer-totals/00000000-00000000",
        },
    }


DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def at(doc: Manifest, changes: dict[str, Any]) -> Manifest:
    """A copy of ``doc`` with values set (or removed, with DELETE) at paths such as
    ``spec.stores[0].bucket``."""
    out = copy.deepcopy(doc)
    for path, value in changes.items():
        steps: list[str | int] = [
            int(index) if index else key for key, index in _STEP.findall(path)
        ]
        parent: Any = out
        for step in steps[:-1]:
            if isinstance(step, str) and step not in parent:
                parent[step] = {}
            parent = parent[step]
        last = steps[-1]
        if value is DELETE:
            del parent[last]
        else:
            parent[last] = copy.deepcopy(value)
    return out


@dataclasses.dataclass(frozen=True)
class Invalid:
    """A manifest the API server must refuse, naming ``field`` with ``message``."""

    id: str
    manifest: Manifest
    field: str
    message: str


def _capture() -> Manifest:
    return example("Task", "ingest-orders")


def _derivation() -> Manifest:
    return example("Task", "customer-totals")


def _materialization() -> Manifest:
    return example("Task", "totals-to-postgres")


def _collection() -> Manifest:
    return example("Collection", "orders")


def _mapping() -> Manifest:
    return example("StorageMapping", "local")


_ROLE = "arn:aws:iam::123456789012:role/shards"
_PG = "spec.materialize.postgres"
_DERIVE_SQL = "spec.derive.sql"
_DSN = {"name": "postgres-dsn", "key": "dsn"}
_RESOURCES = {"requests": {"cpu": "1500m"}, "limits": {"cpu": 1, "memory": "1Gi"}}


def invalid_manifests() -> list[Invalid]:
    """At least one case per CEL rule, pattern and enum of the API."""
    store = _mapping()["spec"]["stores"][0]
    return [
        # --- CEL rules: StorageMapping, Collection ---------------------------------------
        Invalid(
            "storagemapping-same-store-twice",
            at(_mapping(), {"spec.stores": [store, store]}),
            "spec.stores",
            "each store must have a different bucket or prefix",
        ),
        Invalid(
            "storagemapping-web-identity-nothing-uses",
            at(_mapping(), {"spec.webIdentity": {"roleArn": _ROLE}}),
            "spec.webIdentity",
            "webIdentity is set, but every store has a credentialsSecretRef, so nothing would "
            "use it: remove webIdentity or a credentialsSecretRef",
        ),
        Invalid(
            "storagemapping-web-identity-role-not-an-arn",
            at(
                _mapping(),
                {
                    "spec.stores[0].credentialsSecretRef": DELETE,
                    "spec.webIdentity": {"roleArn": "shards"},
                },
            ),
            "spec.webIdentity.roleArn",
            "should match",
        ),
        Invalid(
            "storagemapping-annotation-key",
            at(_mapping(), {"spec.serviceAccountAnnotations": {"not a key": "x"}}),
            "spec.serviceAccountAnnotations",
            "each key of serviceAccountAnnotations is an annotation key, such as "
            "eks.amazonaws.com/role-arn",
        ),
        Invalid(
            "collection-key-repeats-pointer",
            at(_collection(), {"spec.key": ["/id", "/id"]}),
            "spec.key",
            "key must not repeat a JSON pointer",
        ),
        Invalid(
            "collection-retention-empty",
            at(_collection(), {"spec.retention": {}}),
            "spec.retention",
            "retention needs maxAge, maxBytes or both",
        ),
        Invalid(
            "collection-retention-max-age-too-short",
            at(_collection(), {"spec.retention": {"maxAge": "30s"}}),
            "spec.retention.maxAge",
            "maxAge must be at least 1m",
        ),
        Invalid(
            "collection-retention-max-bytes-zero",
            at(_collection(), {"spec.retention": {"maxAge": "1h", "maxBytes": 0}}),
            "spec.retention.maxBytes",
            "maxBytes must be more than 0",
        ),
        # --- CEL rules: a task's type and its blocks -------------------------------------
        Invalid(
            "capture-without-capture",
            at(_capture(), {"spec.capture": DELETE}),
            "spec.capture",
            "a capture needs spec.capture",
        ),
        Invalid(
            "derivation-without-derive",
            at(_derivation(), {"spec.derive": DELETE}),
            "spec.derive",
            "a derivation needs spec.derive",
        ),
        Invalid(
            "materialization-without-materialize",
            at(_materialization(), {"spec.materialize": DELETE}),
            "spec.materialize",
            "a materialization needs spec.materialize",
        ),
        Invalid(
            "derivation-with-capture",
            at(_derivation(), {"spec.capture": {"http": {}}}),
            "spec.capture",
            "capture is only for tasks of type capture",
        ),
        Invalid(
            "capture-with-derive",
            at(_capture(), {"spec.derive": {"python": {"module": "pkg.mod:fn"}}}),
            "spec.derive",
            "derive is only for tasks of type derivation",
        ),
        Invalid(
            "derivation-with-materialize",
            at(_derivation(), {"spec.materialize": _materialization()["spec"]["materialize"]}),
            "spec.materialize",
            "materialize is only for tasks of type materialization",
        ),
        Invalid(
            "materialization-without-sources",
            at(_materialization(), {"spec.sources": DELETE}),
            "spec.sources",
            "a derivation or materialization reads at least one collection",
        ),
        Invalid(
            "capture-with-sources",
            at(_capture(), {"spec.sources": ["orders"]}),
            "spec.sources",
            "a capture reads no collections",
        ),
        Invalid(
            "capture-without-outputs",
            at(_capture(), {"spec.outputs": []}),
            "spec.outputs",
            "a capture or derivation writes at least one collection",
        ),
        Invalid(
            "derivation-with-two-outputs",
            at(_derivation(), {"spec.outputs": ["customer-totals", "orders"]}),
            "spec.outputs",
            "a derivation writes exactly one collection",
        ),
        Invalid(
            "materialization-restored",
            at(_materialization(), {"spec.restoreFrom": {"task": "other"}}),
            "spec.restoreFrom",
            "restoreFrom is for captures and derivations",
        ),
        Invalid(
            "materialization-with-outputs",
            at(_materialization(), {"spec.outputs": ["orders"]}),
            "spec.outputs",
            "a materialization writes no collections",
        ),
        # --- CEL rules: what a task reads and how ---------------------------------------
        Invalid(
            "capture-source-without-http",
            at(_capture(), {"spec.capture": {}}),
            "spec.capture.http",
            "a capture needs a source: set http",
        ),
        Invalid(
            "derive-sql-and-python",
            at(_derivation(), {"spec.derive.python": {"module": "totals.derive:run"}}),
            "spec.derive",
            "set exactly one of sql or python",
        ),
        Invalid(
            "source-without-lambda",
            at(_derivation(), {"spec.sources": ["orders", "payments"]}),
            f"{_DERIVE_SQL}.lambdas",
            "every source needs a lambda in derive.sql.lambdas",
        ),
        Invalid(
            "lambda-for-no-source",
            at(_derivation(), {f"{_DERIVE_SQL}.lambdas.payments": "SELECT 1;"}),
            f"{_DERIVE_SQL}.lambdas",
            "every key of derive.sql.lambdas must be one of sources",
        ),
        Invalid(
            "shuffle-of-no-source",
            at(_derivation(), {"spec.derive.shuffle": {"payments": ["/customer"]}}),
            "spec.derive.shuffle",
            "every key of derive.shuffle must be one of sources",
        ),
        Invalid(
            "materialize-without-postgres",
            at(_materialization(), {"spec.materialize": {}}),
            _PG,
            "a materialization needs a target: set postgres",
        ),
        Invalid(
            "postgres-dsn-and-host",
            at(_materialization(), {f"{_PG}.dsnSecretRef": _DSN}),
            f"{_PG}.host",
            "set either dsnSecretRef or host",
        ),
        Invalid(
            "postgres-host-without-user",
            at(_materialization(), {f"{_PG}.user": DELETE}),
            f"{_PG}.host",
            "host needs database, user and passwordSecretRef",
        ),
        Invalid(
            "postgres-dsn-with-user",
            at(
                _materialization(),
                {
                    f"{_PG}.host": DELETE,
                    f"{_PG}.database": DELETE,
                    f"{_PG}.passwordSecretRef": DELETE,
                    f"{_PG}.dsnSecretRef": _DSN,
                },
            ),
            f"{_PG}.dsnSecretRef",
            "dsnSecretRef already names database, user and password",
        ),
        Invalid(
            "postgres-two-collections-one-table",
            at(
                _materialization(),
                {
                    "spec.sources": ["customer-totals", "orders"],
                    f"{_PG}.tables": {"customer-totals": "t", "orders": "t"},
                },
            ),
            f"{_PG}.tables",
            "each collection needs a table of its own",
        ),
        Invalid(
            "postgres-connect-timeout-below-libpq-least",
            at(_materialization(), {f"{_PG}.connectTimeout": "1s"}),
            f"{_PG}.connectTimeout",
            "connectTimeout must be from 2s to 5m",
        ),
        Invalid(
            "postgres-lock-timeout-zero-would-wait-for-ever",
            at(_materialization(), {f"{_PG}.lockTimeout": "0s"}),
            f"{_PG}.lockTimeout",
            "lockTimeout must be from 10ms to 1h",
        ),
        Invalid(
            "postgres-statement-timeout-too-long",
            at(_materialization(), {f"{_PG}.statementTimeout": "2h"}),
            f"{_PG}.statementTimeout",
            "statementTimeout must be from 100ms to 1h",
        ),
        Invalid(
            "source-without-table",
            at(_materialization(), {"spec.sources": ["customer-totals", "orders"]}),
            f"{_PG}.tables",
            "every source needs a table in materialize.postgres.tables",
        ),
        Invalid(
            "table-for-no-source",
            at(_materialization(), {f"{_PG}.tables.orders": "orders"}),
            f"{_PG}.tables",
            "every key of materialize.postgres.tables must be one of sources",
        ),
        # --- CEL rules: shard template, scaling, tolerations ----------------------------
        Invalid(
            "min-txn-above-max-txn",
            at(
                _capture(), {"spec.shards.minTxnDuration": "2s", "spec.shards.maxTxnDuration": "1s"}
            ),
            "spec.shards.minTxnDuration",
            "minTxnDuration must not exceed maxTxnDuration",
        ),
        Invalid(
            "min-txn-above-default-max-txn-of-a-derivation",
            at(_derivation(), {"spec.shards.minTxnDuration": "2s"}),
            "spec.shards.minTxnDuration",
            "minTxnDuration must not exceed maxTxnDuration (which defaults to 1s",
        ),
        Invalid(
            "min-txn-above-1h",
            at(
                _materialization(),
                {"spec.shards.minTxnDuration": "2h", "spec.shards.maxTxnDuration": "1h"},
            ),
            "spec.shards.minTxnDuration",
            "minTxnDuration must be at most 1h",
        ),
        Invalid(
            "max-txn-zero",
            at(_capture(), {"spec.shards.maxTxnDuration": "0s"}),
            "spec.shards.maxTxnDuration",
            "maxTxnDuration must be more than 0s and at most 1h",
        ),
        Invalid(
            "min-shards-above-max-shards",
            at(_derivation(), {"spec.shards.scaling.minShards": 8}),
            "spec.shards.scaling.minShards",
            "minShards must not exceed maxShards",
        ),
        Invalid(
            "auto-split-without-headroom",
            at(_derivation(), {"spec.shards.scaling.maxShards": 1}),
            "spec.shards.scaling.autoSplit",
            "autoSplit needs maxShards above minShards",
        ),
        Invalid(
            "toleration-exists-with-value",
            at(_capture(), {"spec.shards.tolerations": [{"operator": "Exists", "value": "x"}]}),
            "spec.shards.tolerations[0].value",
            "value must be empty when operator is Exists",
        ),
        Invalid(
            "toleration-seconds-without-no-execute",
            at(
                _capture(),
                {
                    "spec.shards.tolerations": [
                        {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 10}
                    ]
                },
            ),
            "spec.shards.tolerations[0].tolerationSeconds",
            "tolerationSeconds is only valid with effect NoExecute",
        ),
        # --- what the API server would refuse of the shards' pods and volumes --------------
        Invalid(
            "limit-negative",
            at(_capture(), {"spec.shards.resources": {"limits": {"memory": "-1Gi"}}}),
            "spec.shards.resources.limits",
            "limits must not be negative",
        ),
        Invalid(
            "request-negative",
            at(_capture(), {"spec.shards.resources": {"requests": {"cpu": -1}}}),
            "spec.shards.resources.requests",
            "requests must not be negative",
        ),
        Invalid(
            "request-above-limit",
            at(_capture(), {"spec.shards.resources": _RESOURCES}),
            "spec.shards.resources.requests",
            "each request must not exceed the limit of that resource",
        ),
        Invalid(
            "limit-of-an-unknown-resource",
            at(_capture(), {"spec.shards.resources": {"limits": {"gpu": 1}}}),
            "spec.shards.resources.limits",
            "each key of limits is cpu, memory, ephemeral-storage, hugepages-<size> or an",
        ),
        Invalid(
            "request-of-an-unknown-resource",
            at(_capture(), {"spec.shards.resources": {"requests": {"Memory": "1Gi"}}}),
            "spec.shards.resources.requests",
            "each key of requests is cpu, memory, ephemeral-storage, hugepages-<size> or an",
        ),
        Invalid(
            "extended-resource-in-part-units",
            at(_capture(), {"spec.shards.resources": {"limits": {"example.com/gpu": "500m"}}}),
            "spec.shards.resources.limits",
            "an extended resource (domain/name) is counted in whole units",
        ),
        Invalid(
            "extended-resource-requested-without-limit",
            at(_capture(), {"spec.shards.resources": {"requests": {"example.com/gpu": 1}}}),
            "spec.shards.resources.requests",
            "huge pages and extended resources are requested exactly as limited",
        ),
        Invalid(
            "volume-size-zero",
            at(_capture(), {"spec.shards.volumeSize": "0Gi"}),
            "spec.shards.volumeSize",
            "volumeSize must be more than 0",
        ),
        Invalid(
            "snapshot-every-too-small",
            at(_capture(), {"spec.shards.snapshotEvery": "64Ki"}),
            "spec.shards.snapshotEvery",
            "snapshotEvery must be at least 1Mi and at most 1Ti",
        ),
        Invalid(
            "snapshot-every-too-large",
            at(_capture(), {"spec.shards.snapshotEvery": "2Ti"}),
            "spec.shards.snapshotEvery",
            "snapshotEvery must be at least 1Mi and at most 1Ti",
        ),
        Invalid(
            "prune-every-too-often",
            at(_capture(), {"spec.shards.pruneEvery": "5s"}),
            "spec.shards.pruneEvery",
            "pruneEvery must be 0s (never) or from 10s to 24h",
        ),
        Invalid(
            "prune-every-too-seldom",
            at(_capture(), {"spec.shards.pruneEvery": "25h"}),
            "spec.shards.pruneEvery",
            "pruneEvery must be 0s (never) or from 10s to 24h",
        ),
        Invalid(
            "image-with-a-space",
            at(_capture(), {"spec.shards.image": "registry.example/shardkeeper: 1"}),
            "spec.shards.image",
            "should match",
        ),
        Invalid(
            "node-selector-key-with-a-space",
            at(_capture(), {"spec.shards.nodeSelector": {"disk type": "ssd"}}),
            "spec.shards.nodeSelector",
            "each key of nodeSelector is a label key",
        ),
        Invalid(
            "node-selector-value-not-a-label-value",
            at(_capture(), {"spec.shards.nodeSelector": {"disktype": "fast ssd"}}),
            "spec.shards.nodeSelector.disktype",
            "should match",
        ),
        Invalid(
            "toleration-value-not-a-label-value",
            at(_capture(), {"spec.shards.tolerations": [{"key": "k", "value": "a b"}]}),
            "spec.shards.tolerations[0].value",
            "should match",
        ),
        Invalid(
            "toleration-without-key-nor-exists",
            at(_capture(), {"spec.shards.tolerations": [{"effect": "NoSchedule"}]}),
            "spec.shards.tolerations[0].operator",
            "a toleration without a key matches every taint: it needs operator Exists",
        ),
        Invalid(
            "capture-on-the-admin-port",
            at(_capture(), {"spec.capture.http.port": 8081}),
            "spec.capture.http.port",
            "port 8081 is the shard pods' admin port",
        ),
        # --- CEL rules: Shard -------------------------------------------------------------
        Invalid(
            "shard-key-begin-above-end",
            at(shard(), {"spec.keyBegin": "80000000", "spec.keyEnd": "7fffffff"}),
            "spec.keyBegin",
            "keyBegin must not exceed keyEnd",
        ),
        Invalid(
            "shard-r-clock-begin-above-end",
            at(shard(), {"spec.rClockBegin": "00000002", "spec.rClockEnd": "00000001"}),
            "spec.rClockBegin",
            "rClockBegin must not exceed rClockEnd",
        ),
        Invalid(
            "shard-split-of-a-single-key",
            at(
                shard(),
                {"spec.keyEnd": "00000000", "spec.split": {"by": "key"}},
            ),
            "spec.split",
            "cannot be halved",
        ),
        Invalid(
            "shard-split-while-being-built",
            at(
                shard(),
                {"spec.splitSource": "customer-totals-00000000-00000000", "spec.split": {}},
            ),
            "spec.split",
            "a shard that a split is still building (splitSource is set) cannot be split",
        ),
        # --- patterns -------------------------------------------------------------------
        Invalid(
            "range-bound-upper-case",
            at(shard(), {"spec.keyEnd": "7FFFFFFF"}),
            "spec.keyEnd",
            "should match '^[0-9a-f]{8}$'",
        ),
        Invalid(
            "range-bound-seven-digits",
            at(shard(), {"spec.rClockEnd": "fffffff"}),
            "spec.rClockEnd",
            "should match '^[0-9a-f]{8}$'",
        ),
        Invalid(
            "duration-with-word-unit",
            at(_capture(), {"spec.shards.maxTxnDuration": "1sec"}),
            "spec.shards.maxTxnDuration",
            "should match '^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$'",
        ),
        Invalid(
            "duration-negative",
            at(_derivation(), {"spec.shards.scaling.autoSplit.cooldown": "-5m"}),
            "spec.shards.scaling.autoSplit.cooldown",
            "should match '^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$'",
        ),
        Invalid(
            "storage-mapping-not-dns-1123",
            at(_capture(), {"spec.storageMapping": "Local_Store"}),
            "spec.storageMapping",
            "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?",
        ),
        Invalid(
            "output-not-dns-1123",
            at(_capture(), {"spec.outputs": ["Orders"]}),
            "spec.outputs[0]",
            "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?",
        ),
        Invalid(
            "task-name-not-a-dns-label",
            at(_capture(), {"metadata.name": "ingest.orders"}),
            "metadata.name",
            "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        Invalid(
            "task-name-too-long",
            at(_capture(), {"metadata.name": "x" * 35}),
            "metadata.name",
            "may not be more than 34 bytes",
        ),
        Invalid(
            "collection-key-not-a-json-pointer",
            at(_collection(), {"spec.key": ["id"]}),
            "spec.key[0]",
            "should match '^(/([^/~]|~[01])+)+$'",
        ),
        Invalid(
            "bucket-name-with-underscore",
            at(_mapping(), {"spec.stores[0].bucket": "my_bucket"}),
            "spec.stores[0].bucket",
            "should match",
        ),
        Invalid(
            "prefix-without-trailing-slash",
            at(_mapping(), {"spec.stores[0].prefix": "examples"}),
            "spec.stores[0].prefix",
            "should match",
        ),
        Invalid(
            "endpoint-without-scheme",
            at(_mapping(), {"spec.stores[0].endpoint": "127.0.0.1:9000"}),
            "spec.stores[0].endpoint",
            "should match",
        ),
        Invalid(
            "python-module-without-callable",
            at(_derivation(), {"spec.derive": {"python": {"module": "totals.derive"}}}),
            "spec.derive.python.module",
            "should match",
        ),
        Invalid(
            "table-name-not-an-identifier",
            at(_materialization(), {f"{_PG}.tables.customer-totals": "customer-totals"}),
            f"{_PG}.tables.customer-totals",
            "should match '^[A-Za-z_][A-Za-z0-9_]*$'",
        ),
        Invalid(
            "region-with-underscores",
            at(_mapping(), {"spec.stores[0].region": "us_east_1"}),
            "spec.stores[0].region",
            "should match '^[a-z0-9]+(-[a-z0-9]+)*$'",
        ),
        Invalid(
            "secret-key-with-slash",
            at(_mapping(), {"spec.stores[0].credentialsSecretRef.accessKeyIdKey": "aws/id"}),
            "spec.stores[0].credentialsSecretRef.accessKeyIdKey",
            "should match '^[-._a-zA-Z0-9]+$'",
        ),
        Invalid(
            "postgres-host-as-url",
            at(_materialization(), {f"{_PG}.host": "postgres://db"}),
            f"{_PG}.host",
            "should match",
        ),
        Invalid(
            "toleration-key-not-a-qualified-name",
            at(_capture(), {"spec.shards.tolerations": [{"key": "-dedicated-"}]}),
            "spec.shards.tolerations[0].key",
            "should match",
        ),
        Invalid(
            "recovery-log-absolute",
            at(shard(), {"spec.recoveryLog": "/recovery/default/x"}),
            "spec.recoveryLog",
            "should match",
        ),
        Invalid(
            "volume-size-not-a-quantity",
            at(_capture(), {"spec.shards.volumeSize": "lots"}),
            "spec.shards.volumeSize",
            "should match",
        ),
        # --- enums ----------------------------------------------------------------------
        Invalid(
            "task-type-unknown",
            at(_capture(), {"spec.type": "sink"}),
            "spec.type",
            'Unsupported value: "sink"',
        ),
        Invalid(
            "log-level-unknown",
            at(_capture(), {"spec.shards.logLevel": "verbose"}),
            "spec.shards.logLevel",
            'Unsupported value: "verbose"',
        ),
        Invalid(
            "deletion-policy-unknown",
            at(_capture(), {"spec.deletionPolicy": "Orphan"}),
            "spec.deletionPolicy",
            'Unsupported value: "Orphan"',
        ),
        Invalid(
            "collection-deletion-policy-unknown",
            at(_collection(), {"spec.deletionPolicy": "Forget"}),
            "spec.deletionPolicy",
            'Unsupported value: "Forget"',
        ),
        Invalid(
            "store-provider-unknown",
            at(_mapping(), {"spec.stores[0].provider": "gcs"}),
            "spec.stores[0].provider",
            'Unsupported value: "gcs"',
        ),
        Invalid(
            "auto-split-by-unknown",
            at(_derivation(), {"spec.shards.scaling.autoSplit.by": "value"}),
            "spec.shards.scaling.autoSplit.by",
            'Unsupported value: "value"',
        ),
        Invalid(
            "shard-split-by-unknown",
            at(shard(), {"spec.split": {"by": "hash"}}),
            "spec.split.by",
            'Unsupported value: "hash"',
        ),
        Invalid(
            "toleration-effect-unknown",
            at(_capture(), {"spec.shards.tolerations": [{"key": "k", "effect": "Evict"}]}),
            "spec.shards.tolerations[0].effect",
            'Unsupported value: "Evict"',
        ),
        Invalid(
            "toleration-operator-unknown",
            at(_capture(), {"spec.shards.tolerations": [{"key": "k", "operator": "In"}]}),
            "spec.shards.tolerations[0].operator",
            'Unsupported value: "In"',
        ),
        Invalid(
            "image-pull-policy-unknown",
            at(_capture(), {"spec.shards.imagePullPolicy": "Sometimes"}),
            "spec.shards.imagePullPolicy",
            'Unsupported value: "Sometimes"',
        ),
        # --- bounds, required fields, duplicates, unknown fields ---------------------------
        Invalid(
            "hot-standbys-above-4",
            at(_capture(), {"spec.shards.hotStandbys": 5}),
            "spec.shards.hotStandbys",
            "should be less than or equal to 4",
        ),
        Invalid(
            "min-shards-zero",
            at(_capture(), {"spec.shards.scaling": {"minShards": 0}}),
            "spec.shards.scaling.minShards",
            "should be greater than or equal to 1",
        ),
        Invalid(
            "http-port-above-65535",
            at(_capture(), {"spec.capture.http.port": 70000}),
            "spec.capture.http.port",
            "should be less than or equal to 65535",
        ),
        Invalid(
            "http-read-timeout-below-100ms",
            at(_capture(), {"spec.capture.http.readTimeout": "50ms"}),
            "spec.capture.http.readTimeout",
            "readTimeout must be at least 100ms and at most 10m",
        ),
        Invalid(
            "http-read-timeout-above-10m",
            at(_capture(), {"spec.capture.http.readTimeout": "1h"}),
            "spec.capture.http.readTimeout",
            "readTimeout must be at least 100ms and at most 10m",
        ),
        Invalid(
            "http-max-connections-zero",
            at(_capture(), {"spec.capture.http.maxConnections": 0}),
            "spec.capture.http.maxConnections",
            "should be greater than or equal to 1",
        ),
        Invalid(
            "http-idempotency-keys-zero",
            at(_capture(), {"spec.capture.http.idempotencyKeys": 0}),
            "spec.capture.http.idempotencyKeys",
            "should be greater than or equal to 1",
        ),
        Invalid(
            "http-idempotency-window-above-168h",
            at(_capture(), {"spec.capture.http.idempotencyWindow": "200h"}),
            "spec.capture.http.idempotencyWindow",
            "idempotencyWindow must be at least 1s and at most 168h",
        ),
        Invalid(
            "no-stores",
            at(_mapping(), {"spec.stores": []}),
            "spec.stores",
            "should have at least 1 items",
        ),
        Invalid(
            "ring-buffer-size-zero",
            at(_capture(), {"spec.shards.ringBufferSize": 0}),
            "spec.shards.ringBufferSize",
            "should be greater than or equal to 1",
        ),
        Invalid(
            "task-without-type",
            at(_capture(), {"spec.type": DELETE}),
            "spec.type",
            "Required value",
        ),
        Invalid(
            "collection-without-key",
            at(_collection(), {"spec.key": DELETE}),
            "spec.key",
            "Required value",
        ),
        Invalid(
            "duplicate-source",
            at(_materialization(), {"spec.sources": ["customer-totals", "customer-totals"]}),
            "spec.sources[1]",
            'Duplicate value: "customer-totals"',
        ),
        Invalid(
            "misspelt-field",
            at(_capture(), {"spec.shards.maxTxnDuraton": "2s"}),
            "spec.shards.maxTxnDuraton",
            "unknown field",
        ),
    ]
