"""The kopf side: what is watched, what is kept of it (indexes), and what each watch event
queues for reconciling.

Only indexes and ``on.event`` handlers are registered. They store nothing on the objects
(no ``last-handled-configuration``, no progress annotations), so the operator writes
nothing into a Task's metadata but its own finalizer, and a GitOps tool never sees a
change it did not make. Reconciling is the manager's job (manager.py): kopf's
change-detecting handlers run on spec changes, while a shard must also follow its pods,
its StatefulSet and its storage, which is what a level-based loop does.

Secrets are not watched here: kopf would bring their values in (see secrets.py).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import GROUP, VERSION, Resource
from shardkeeper.api.shard import Shard
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import Task
from shardkeeper.controller.engine import cache as cache_names
from shardkeeper.controller.engine import kube, triggers
from shardkeeper.controller.engine.manager import Manager
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.references import task_collections, task_secret_refs
from shardkeeper.controller.specs.views import StatefulSetView

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)
OWN_STATEFULSETS = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.NAME_LABEL: names.SHARD_APP}


def parse(model: type[R], body: kopf.Body) -> R | None:
    """The object as a model, without managedFields (the bulk of it, and never read)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in raw.get("metadata", {}).items() if k != "managedFields"}
    try:
        return model.from_k8s(raw)
    except ValidationError as exc:
        meta = raw["metadata"]
        log.error(
            "%s %s/%s is not valid: %s", model.KIND, meta.get("namespace"), meta.get("name"), exc
        )
        return None


def connection_info(configuration: Any, *, trust_env: bool = False) -> kopf.ConnectionInfo:
    """kopf's credentials from the official client's configuration, read as kopf's
    ``login_via_client`` reads them (a token goes through the refresh hook, if any)."""
    header = configuration.get_api_key_with_prefix("BearerToken")
    header = header or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, header or None)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        trust_env=trust_env,
    )


def build_registry(manager: Manager) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(*, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        # the same kubeconfig or in-cluster account as the reconcilers' client: kopf's own
        # login_via_client would try the service account first, even with a KUBECONFIG
        return connection_info(kube.configuration(), trust_env=settings.networking.trust_env)

    # --- indexes (their ids are the names cache.py reads them by) ---------------------
    # async: kopf runs a sync handler in a thread per call, and these only parse a body

    @kopf.index(GROUP, VERSION, "tasks", id=cache_names.TASKS, registry=registry)
    async def task_index(
        *, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        task = parse(Task, body)
        return {(namespace, name): task} if task is not None else {}

    @kopf.index(GROUP, VERSION, "tasks", id=cache_names.TASK_REFS, registry=registry)
    async def task_refs_index(
        *, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        task = parse(Task, body)
        if task is None:
            return {}
        refs: dict[Any, Any] = {(namespace, "StorageMapping", task.spec.storage_mapping): name}
        for collection in task_collections(task):
            refs[(namespace, "Collection", collection)] = name
        for _path, ref in task_secret_refs(task):
            refs[(namespace, "Secret", ref.name)] = name
        return refs

    @kopf.index(GROUP, VERSION, "shards", id=cache_names.SHARDS, registry=registry)
    async def shard_index(
        *, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        shard = parse(Shard, body)
        return {(namespace, name): shard} if shard is not None else {}

    @kopf.index(GROUP, VERSION, "shards", id=cache_names.SHARDS_BY_TASK, registry=registry)
    async def shards_by_task_index(
        *, namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, spec.get("task", "")): name}

    @kopf.index(
        "apps",
        "v1",
        "statefulsets",
        labels=OWN_STATEFULSETS,
        id=cache_names.STATEFUL_SETS,
        registry=registry,
    )
    async def statefulset_index(
        *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        shard = labels.get(names.SHARD_LABEL)
        return {(namespace, shard): StatefulSetView.from_k8s(body)} if shard else {}

    @kopf.index(GROUP, VERSION, "storagemappings", id=cache_names.MAPPINGS, registry=registry)
    async def mapping_index(
        *, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        mapping = parse(StorageMapping, body)
        return {(namespace, name): mapping} if mapping is not None else {}

    @kopf.index(GROUP, VERSION, "storagemappings", id=cache_names.MAPPING_REFS, registry=registry)
    async def mapping_refs_index(
        *, namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[Any, Any]:
        refs: dict[Any, Any] = {}
        for store in spec.get("stores", []):
            secret = (store.get("credentialsSecretRef") or {}).get("name")
            if secret:
                refs[(namespace, secret)] = name
        return refs

    @kopf.index(GROUP, VERSION, "collections", id=cache_names.COLLECTIONS, registry=registry)
    async def collection_index(
        *, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        collection = parse(Collection, body)
        return {(namespace, name): collection} if collection is not None else {}

    @kopf.index(GROUP, VERSION, "collections", id=cache_names.COLLECTION_REFS, registry=registry)
    async def collection_refs_index(
        *, namespace: str | None, name: str, spec: kopf.Spec, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, spec.get("storageMapping", "")): name}

    # --- events: queue what depends on the object -------------------------------------------

    def watch(kind: str, *resource: str, **filters: Any) -> None:
        @kopf.on.event(*resource, id=f"{kind.lower()}_event", registry=registry, **filters)
        async def on_event(
            *,
            type: str | None,
            namespace: str | None,
            name: str,
            body: kopf.Body,
            **kwargs: Any,
        ) -> None:
            event = triggers.WatchEvent(kind, type, namespace or "", name, body)
            manager.on_event(event, kwargs)

    watch("Task", GROUP, VERSION, "tasks")
    watch("Shard", GROUP, VERSION, "shards")
    watch("StatefulSet", "apps", "v1", "statefulsets", labels=OWN_STATEFULSETS)
    watch("StorageMapping", GROUP, VERSION, "storagemappings")
    watch("Collection", GROUP, VERSION, "collections")
    return registry
