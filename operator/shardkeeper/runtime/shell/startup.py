"""Start-up: read the Shard, its Task, Collections and StorageMapping and the credentials
Secret through the Kubernetes API, and check them.

Every problem becomes a :class:`StartupError` whose message says which object is missing
or wrong and what to do about it; the replica shows it in its status entry and retries.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import API_VERSION, Resource, SecretKeyRef
from shardkeeper.api.shard import Shard
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import Task
from shardkeeper.kube.client import ApiError, Transport, request
from shardkeeper.kube.paths import resource_path
from shardkeeper.redact import SECRETS
from shardkeeper.runtime.shell.storagemap import ACCESS_KEY_ID, SECRET_ACCESS_KEY, store_prefix
from shardkeeper.storage.layout import object_key

R = TypeVar("R", bound=Resource)


class StartupError(Exception):
    """A resource the shard needs is missing, invalid or unreadable; the message says
    what to fix."""


@dataclasses.dataclass(frozen=True)
class ShardResources:
    """Everything a shard replica reads from the API before it touches storage."""

    namespace: str
    shard: Shard
    task: Task
    collections: dict[str, Collection]
    mapping: StorageMapping
    # {"accessKeyId", "secretAccessKey"} from the Secret; empty for ambient credentials
    credentials: dict[str, str]
    # while a split builds this shard: the key prefix of the parent's recovery log
    # (None when the parent is gone, or no split builds it)
    split_source_log: str | None = None
    # for a shard of a restored task: the key prefix of the log it forks, and the offset
    # (the end of the commit it starts from; spec.restoreSource)
    restore_source_log: str | None = None
    restore_offset: int | None = None

    @property
    def shard_name(self) -> str:
        return self.shard.metadata.name or ""

    @property
    def recovery_log(self) -> str:
        """The recovery log's key prefix in the first store: ``<prefix><spec.recoveryLog>``."""
        return object_key(store_prefix(self.mapping), self.shard.spec.recovery_log)

    def owner_reference(self) -> dict[str, Any]:
        """An owner reference to the Shard, for objects that should go with it."""
        return {
            "apiVersion": self.shard.api_version,
            "kind": Shard.KIND,
            "name": self.shard_name,
            "uid": self.shard.metadata.uid or "",
        }


# --- pure: parsing and messages -------------------------------------------------------------


def describe_validation(error: pydantic.ValidationError) -> str:
    """``spec.sources: ...; spec.shards.maxTxnDuration: ...`` from a model's errors."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    more = len(error.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse(kind: type[R], obj: dict[str, Any], why: str) -> R:
    """Parse ``obj`` as ``kind``; ``why`` says who refers to it, for the message."""
    name = (obj.get("metadata") or {}).get("name", "?")
    try:
        return kind.from_k8s(obj)
    except pydantic.ValidationError as exc:
        raise StartupError(
            f"{kind.KIND} {name!r} ({why}) is invalid: {describe_validation(exc)}. Fix it with "
            f"kubectl edit {kind.PLURAL}/{name}"
        ) from None


def secret_value(data: dict[str, str] | None, name: str, key: str, why: str) -> str:
    if data is None:
        raise StartupError(
            f"Secret {name!r} ({why}) does not exist: create it, or fix the reference"
        )
    if key not in data:
        have = ", ".join(sorted(data)) or "no keys"
        raise StartupError(
            f"Secret {name!r} ({why}) has no key {key!r} (it has {have}): add the key, or "
            "fix the key name in the reference"
        )
    return data[key]


def secret(data: dict[str, str] | None, name: str, key: str, why: str) -> str:
    """:func:`secret_value`, kept out of every log line and status message from now on (an
    access key's ID is a name, not a secret, and is read with secret_value)."""
    value = secret_value(data, name, key, why)
    SECRETS.add(value)
    return value


# --- I/O: the Kubernetes API ----------------------------------------------------------------


class KubeReader:
    """Reads objects of the pod's namespace; ``None`` for one that does not exist."""

    def __init__(self, transport: Transport, namespace: str, *, timeout: float = 10.0) -> None:
        self.transport = transport
        self.namespace = namespace
        self.timeout = timeout

    def custom_object(self, plural: str, name: str) -> dict[str, Any] | None:
        path = resource_path(API_VERSION, plural, self.namespace, name)
        obj: dict[str, Any] | None = self._maybe(path, f"{plural}/{name}")
        return obj

    def secret(self, name: str) -> dict[str, str] | None:
        path = resource_path("v1", "secrets", self.namespace, name)
        secret = self._maybe(path, f"secrets/{name}")
        if secret is None:
            return None
        data = secret.get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _maybe(self, path: str, what: str) -> Any:
        try:
            return request(self.transport, "GET", path, timeout=self.timeout)
        except ApiError as exc:
            if exc.status == 404:
                return None
            hint = (
                ": check that the pod's service account may read it (Role <shard>-runtime, "
                "see docs/shard-pod.md)"
                if exc.status in (401, 403)
                else ""
            )
            raise StartupError(
                f"reading {what} in namespace {self.namespace!r} failed: HTTP {exc.status} "
                f"{exc.reason} ({exc.message}){hint}"
            ) from None
        except Exception as exc:
            raise StartupError(
                f"reading {what} in namespace {self.namespace!r} failed: {exc}: check that "
                "the Kubernetes API server is reachable from the pod"
            ) from None


def load_object(reader: KubeReader, kind: type[R], name: str, why: str) -> R:
    """The object ``name`` of ``kind``, parsed; ``why`` says who refers to it."""
    obj = reader.custom_object(kind.PLURAL, name)
    if obj is None:
        raise StartupError(
            f"{kind.KIND} {name!r} ({why}) does not exist in namespace {reader.namespace!r}: "
            "create it, or fix the reference"
        )
    return parse(kind, obj, why)


def load_resources(reader: KubeReader, shard_name: str) -> ShardResources:
    shard = load_shard(reader, shard_name)
    task_name = shard.spec.task
    task = load_object(reader, Task, task_name, f"spec.task of Shard {shard_name!r}")
    collections: dict[str, Collection] = {}
    for field, names in (("sources", task.spec.sources), ("outputs", task.spec.outputs)):
        for name in names:
            if name not in collections:
                why = f"in spec.{field} of Task {task_name!r}"
                collections[name] = load_object(reader, Collection, name, why)
    mapping_name = task.spec.storage_mapping
    mapping = load_object(
        reader, StorageMapping, mapping_name, f"spec.storageMapping of Task {task_name!r}"
    )
    for name, collection in collections.items():
        other = collection.spec.storage_mapping
        if other != mapping_name and reader.custom_object(StorageMapping.PLURAL, other) is None:
            raise StartupError(
                f"StorageMapping {other!r} (spec.storageMapping of Collection {name!r}) does "
                f"not exist in namespace {reader.namespace!r}: create it, or fix the reference"
            )
    source_log = None
    if shard.spec.split_source is not None:
        why = f"spec.splitSource of Shard {shard_name!r}"
        parent = reader.custom_object(Shard.PLURAL, shard.spec.split_source)
        if parent is not None:
            parent_log = parse(Shard, parent, why).spec.recovery_log
            source_log = object_key(store_prefix(mapping), parent_log)
    restore = shard.spec.restore_source
    return ShardResources(
        namespace=reader.namespace,
        shard=shard,
        task=task,
        collections=collections,
        mapping=mapping,
        credentials=mapping_credentials(reader, mapping),
        split_source_log=source_log,
        restore_source_log=(
            object_key(store_prefix(mapping), restore.recovery_log) if restore else None
        ),
        restore_offset=restore.offset if restore else None,
    )


def load_shard(reader: KubeReader, shard_name: str) -> Shard:
    """The Shard as it is now (a split narrows a running shard's ranges)."""
    return load_object(reader, Shard, shard_name, "named by SHARDKEEPER_SHARD")


def mapping_credentials(reader: KubeReader, mapping: StorageMapping) -> dict[str, str]:
    """The first store's key pair from the mapping's Secret (``{}`` without a reference)."""
    ref = mapping.spec.stores[0].credentials_secret_ref
    if ref is None:
        return {}  # the pod's ambient credentials (instance profile, workload identity)
    why = f"credentialsSecretRef of StorageMapping {mapping.metadata.name!r}"
    data = reader.secret(ref.name)
    return {
        ACCESS_KEY_ID: secret_value(data, ref.name, ref.access_key_id_key, why),
        SECRET_ACCESS_KEY: secret(data, ref.name, ref.secret_access_key_key, why),
    }


def secret_resolver(reader: KubeReader, task: str) -> Callable[[SecretKeyRef], str]:
    """What the processing core calls to read the Secrets a Task refers to."""

    def resolve(ref: SecretKeyRef) -> str:
        why = f"referenced by Task {task!r}"
        return secret(reader.secret(ref.name), ref.name, ref.key, why)

    return resolve
