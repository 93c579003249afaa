"""An in-memory API server behind the operator's client, and the watch cache over it, so
that reconcilers are tested without a cluster.

:class:`FakeKube` is an :class:`AsyncKube` (every public method overridden, none of the
real transport used), so it goes wherever the operator expects its client. :class:`Watch`
fills the operator's :class:`Cache` from the fake's objects with the product's own kopf
index functions, when the test says so: between two syncs the cache lags the store, as a
real watch does. :class:`FakeBuckets` stands in for the object stores behind
``stores.open_store``.
"""

from __future__ import annotations

import base64
import collections
import copy
import dataclasses
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

from shardkeeper.api.meta import format_time
from shardkeeper.api.storagemapping import Store
from shardkeeper.controller.engine import events
from shardkeeper.controller.engine.cache import Cache
from shardkeeper.controller.engine.handlers import build_registry
from shardkeeper.controller.engine.kube import PLURALS, AsyncKube
from shardkeeper.controller.engine.manager import Manager
from shardkeeper.controller.engine.queue import WorkQueue
from shardkeeper.controller.engine.secrets import SecretEvent
from shardkeeper.controller.engine.triggers import for_secret_event
from shardkeeper.controller.reconcilers.base import Deps
from shardkeeper.controller.specs.workload import WorkloadDefaults
from shardkeeper.kube.client import ApiError
from shardkeeper.storage.objectstore import ObjectInfo, ObjectStore

T = TypeVar("T")
Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name

# every kind the operator names has one apiVersion
API_VERSIONS: dict[str, str] = {kind: api_version for api_version, kind in PLURALS}


class Request(NamedTuple):
    """One request as the fake received it. ``verb`` is the client's: get, list, create,
    apply, apply/status, patch, update, delete; ``name`` is empty for a list."""

    verb: str
    kind: str
    name: str


READS = frozenset({"get", "list"})


@dataclasses.dataclass
class _Failure:
    verb: str
    kind: str
    status: int
    times: int
    message: str


def _merge(target: Obj, applied: Mapping[str, Any]) -> None:
    for key, value in applied.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _drop(target: Obj, before: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Remove from ``target`` what ``before`` set and ``now`` no longer does."""
    for key, value in before.items():
        if key not in now:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(now[key], Mapping):
            inner = target.get(key)
            if isinstance(inner, dict):
                _drop(inner, value, now[key])


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"not a JSON pointer: {path}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


# what the API server refuses to change in a StatefulSet's spec (422)
STATEFULSET_IMMUTABLE = ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy")


def _check_immutable(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    if new["kind"] != "StatefulSet":
        return
    before, after = old.get("spec", {}), new.get("spec", {})
    changed = [f for f in STATEFULSET_IMMUTABLE if before.get(f) != after.get(f)]
    if changed:
        raise ApiError(
            422,
            "Unprocessable Entity",
            {"message": f"StatefulSet spec: Forbidden: updates to {', '.join(changed)}"},
        )


def _spec_part(obj: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class FakeKube(AsyncKube):
    """AsyncKube's interface over a dict of objects.

    Faithful where the operator depends on it: ``uid``, ``creationTimestamp`` and
    ``generation`` are set at creation; every write moves ``resourceVersion`` on (one
    counter for all objects, like etcd's); ``generation`` moves only when something
    outside ``metadata`` and ``status`` changes. Refusals are :class:`ApiError` with the
    API server's status: 404 for a missing object, 409 for a taken name, a stale
    ``resourceVersion`` on update or a wrong ``uid`` precondition on delete, 422 for a
    failed ``test`` op of a JSON patch or a change to an immutable field of a StatefulSet
    (``STATEFULSET_IMMUTABLE``).

    Simplifications, each enough for the operator's one field manager:

    - Server-side apply merges the applied fields into the object recursively (maps merge,
      lists and scalars are replaced whole, not merged by key), and removes what the last
      apply of the same object and subresource set and this one no longer does (what field
      ownership does for a single manager). It never conflicts (the operator forces).
    - An apply to the ``status`` subresource touches only ``status`` (404 if there is no
      object); any other apply, create or update leaves ``status`` alone, as the
      subresource makes the API server do.
    - A delete of an object with finalizers only sets ``deletionTimestamp``; an object
      whose last finalizer is removed while it is being deleted is gone. The garbage
      collector runs at once: objects whose ``ownerReferences`` name a deleted object's
      uid are deleted with it, whatever the propagation policy.
    - Label selectors are equality only; a JSON patch knows ``test``, ``add``, ``replace``
      and ``remove`` of object members (no list indexes, ``-``, ``move`` or ``copy``).

    ``requests`` logs every request (:class:`Request`), ``sent`` the body of every write;
    :meth:`fail` makes the next matching ones raise (``delete`` and ``get`` read an injected
    404 or 409 as AsyncKube does: False, None). :meth:`put`, :meth:`set_status` and
    :meth:`remove` change objects as other parties would (a user, the StatefulSet
    controller, the shard runtime), unlogged.
    """

    def __init__(self) -> None:  # no client, no pool: nothing of the real one is used
        self.objects: dict[Key, Obj] = {}
        self.requests: list[Request] = []
        self.sent: list[tuple[Request, Any]] = []
        """Every write request with (a copy of) its body."""
        self._failures: list[_Failure] = []
        self._applied: dict[tuple[Key, str], Obj] = {}
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # --- what tests use ----------------------------------------------------------------

    def fail(
        self, verb: str, kind: str, *, status: int = 500, times: int = 1, message: str = ""
    ) -> None:
        """Make the next ``times`` requests ``verb`` of ``kind`` raise ApiError(status),
        with ``message`` as the API's words (else one that names the request)."""
        self._failures.append(_Failure(verb, kind, status, times, message))

    def clear_failures(self) -> None:
        self._failures.clear()

    def put(self, obj: Mapping[str, Any]) -> Obj:
        """Create or overwrite ``obj`` (status included) as someone other than the operator."""
        new = copy.deepcopy(dict(obj))
        new.setdefault("apiVersion", API_VERSIONS[new["kind"]])
        key = self._key(new)
        old = self.objects.get(key)
        if old is None:
            self._born(new)
        else:
            meta = new["metadata"]
            meta["uid"] = old["metadata"]["uid"]
            meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"])
            self._generation(old, new)
        return self._store(key, new)

    def set_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> Obj:
        """Merge ``status`` into the object's, as its controller or runtime would."""
        obj = self._existing(kind, namespace, name)
        _merge(obj.setdefault("status", {}), status)
        return self._store(self._key(obj), obj)

    def remove(self, kind: str, namespace: str, name: str, *, orphan: bool = False) -> None:
        """Delete the object as someone else would (finalizers hold it); with ``orphan``,
        at once and without its dependents (``propagationPolicy: Orphan``)."""
        found = self._existing(kind, namespace, name)
        if orphan:
            self.objects.pop(self._key(found))
        else:
            self._delete(found)

    def find(self, kind: str, namespace: str, name: str) -> Obj | None:
        found = self.objects.get((API_VERSIONS[kind], kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def of_kind(self, kind: str) -> list[Obj]:
        return [copy.deepcopy(o) for k, o in sorted(self.objects.items()) if k[1] == kind]

    def writes(self, *, events: bool = True) -> list[Request]:
        """Every request that was not a read (Events too, unless ``events`` is False)."""
        return [r for r in self.requests if r.verb not in READS and (events or r.kind != "Event")]

    def writes_of(self, kind: str) -> list[Request]:
        return [r for r in self.writes() if r.kind == kind]

    def events(self) -> list[tuple[str, str, str]]:
        """(type, reason, involved object's name) of every Event, in creation order."""
        found = sorted(self.of_kind("Event"), key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [(e["type"], e["reason"], e["involvedObject"]["name"]) for e in found]

    def bodies(self, verb: str, kind: str) -> list[Any]:
        """The bodies of the ``verb`` requests of ``kind``, in order."""
        return [body for request, body in self.sent if (request.verb, request.kind) == (verb, kind)]

    def clear_log(self) -> None:
        self.requests.clear()
        self.sent.clear()

    # --- AsyncKube ---------------------------------------------------------------------

    def close(self) -> None:
        pass

    async def run(self, fn: Callable[[], T]) -> T:
        """At once, in the calling thread (the fakes it reaches do not block)."""
        return fn()

    async def _request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("FakeKube lacks an AsyncKube method the operator called")

    async def apply(self, obj: Mapping[str, Any], *, subresource: str = "") -> Any:
        meta = obj["metadata"]
        kind, name = obj["kind"], meta["name"]
        self._log("apply/status" if subresource == "status" else "apply", kind, name, obj)
        if obj["apiVersion"] != API_VERSIONS[kind]:
            raise ApiError(404, "Not Found", {"message": f"no {obj['apiVersion']} {kind}"})
        key = self._key(obj)
        applied = copy.deepcopy(dict(obj))
        current = self.objects.get(key)
        if subresource:
            if subresource != "status":
                raise ApiError(404, "Not Found", {"message": f"no subresource {subresource}"})
            if current is None:
                raise self._not_found(kind, name)
            new = copy.deepcopy(current)
            new.setdefault("status", {})
            part = {"status": applied.get("status", {})}
            _drop(new, self._applied.get((key, "status"), {}), part)
            _merge(new, part)
            self._applied[(key, "status")] = part
            return self._store(key, new)
        applied.pop("status", None)
        for field in ("resourceVersion", "uid", "generation", "creationTimestamp"):
            applied["metadata"].pop(field, None)
        if current is None:
            new = copy.deepcopy(applied)
            self._born(new)
        else:
            new = copy.deepcopy(current)
            _drop(new, self._applied.get((key, ""), {}), applied)
            _merge(new, applied)
            _check_immutable(current, new)
            self._generation(current, new)
        self._applied[(key, "")] = applied
        return self._store(key, new)

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        try:
            self._log("delete", kind, name, {"uid": uid, "propagation": propagation})
        except ApiError as err:  # an injected refusal, read as AsyncKube.delete reads it
            if err.status in (404, 409):
                return False
            raise
        found = self.objects.get((api_version, kind, namespace, name))
        if found is None:
            return False
        if uid and found["metadata"]["uid"] != uid:
            return False  # the API server's 409: a precondition failed
        self._delete(found)
        return True

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, *, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        self._log("list", kind, "")
        return [
            copy.deepcopy(o)
            for (v, k, ns, _), o in sorted(self.objects.items())
            if (v, k, ns) == (api_version, kind, namespace)
            and all(o["metadata"].get("labels", {}).get(lk) == lv for lk, lv in labels.items())
        ]

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        try:
            self._log("get", kind, name)
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def json_patch(
        self, api_version: str, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> Any:
        self._log("patch", kind, name, ops)
        key = (api_version, kind, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise self._not_found(kind, name)
        new = copy.deepcopy(current)
        for op in ops:
            *parents, last = _pointer(op["path"])
            parent: Any = new
            for step in parents:
                parent = parent[int(step)] if isinstance(parent, list) else parent[step]
            if op["op"] == "test":
                if parent.get(last) != op["value"]:
                    raise ApiError(
                        422, "Unprocessable Entity", {"message": f"test of {op['path']} failed"}
                    )
            elif op["op"] in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            elif op["op"] == "remove":
                del parent[last]
            else:
                raise NotImplementedError(f"op {op['op']}")
        self._generation(current, new)
        return self._store(key, new)

    async def replace(self, obj: Mapping[str, Any]) -> Any:
        meta = obj["metadata"]
        self._log("update", obj["kind"], meta["name"], obj)
        key = self._key(obj)
        current = self.objects.get(key)
        if current is None:
            raise self._not_found(obj["kind"], meta["name"])
        version = meta.get("resourceVersion")
        if version is not None and version != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", {"message": "the object has been modified"})
        new = copy.deepcopy(dict(obj))
        for field in ("uid", "creationTimestamp", "deletionTimestamp"):
            if field in current["metadata"]:
                new["metadata"][field] = current["metadata"][field]
        new.pop("status", None)
        if "status" in current:
            new["status"] = copy.deepcopy(current["status"])
        _check_immutable(current, new)
        self._generation(current, new)
        return self._store(key, new)

    async def create(self, obj: Mapping[str, Any]) -> Any:
        meta = obj["metadata"]
        self._log("create", obj["kind"], meta["name"], obj)
        key = self._key(obj)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", {"message": f"{meta['name']} already exists"})
        new = copy.deepcopy(dict(obj))
        new.pop("status", None)
        for field in ("resourceVersion", "uid", "generation"):
            new["metadata"].pop(field, None)
        self._born(new)
        return self._store(key, new)

    # --- the store ---------------------------------------------------------------------

    def _log(self, verb: str, kind: str, name: str, body: Any = None) -> None:
        request = Request(verb, kind, name)
        self.requests.append(request)
        if verb not in READS:
            self.sent.append((request, copy.deepcopy(body)))
        for failure in self._failures:
            if (failure.verb, failure.kind) == (verb, kind) and failure.times > 0:
                failure.times -= 1
                message = failure.message or f"injected {verb} {kind}"
                raise ApiError(failure.status, "Injected", {"message": message})

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> Key:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])

    @staticmethod
    def _not_found(kind: str, name: str) -> ApiError:
        return ApiError(404, "Not Found", {"message": f'{kind} "{name}" not found'})

    def _existing(self, kind: str, namespace: str, name: str) -> Obj:
        found = self.objects.get((API_VERSIONS[kind], kind, namespace, name))
        if found is None:
            raise KeyError(f"no {kind} {namespace}/{name}")
        return copy.deepcopy(found)

    def _born(self, obj: Obj) -> None:
        if obj["kind"] == "Secret" and "stringData" in obj:  # the API server encodes it
            data = obj.setdefault("data", {})
            for name, value in obj.pop("stringData").items():
                data[name] = base64.b64encode(str(value).encode()).decode()
        meta = obj["metadata"]
        meta["uid"] = meta.get("uid") or f"uid-{next(self._uids)}"
        meta["generation"] = 1
        meta.setdefault("creationTimestamp", format_time(datetime.now(UTC)))

    @staticmethod
    def _generation(old: Mapping[str, Any], new: Obj) -> None:
        generation = int(old["metadata"].get("generation", 1))
        changed = _spec_part(old) != _spec_part(new)
        new["metadata"]["generation"] = generation + 1 if changed else generation

    def _store(self, key: Key, obj: Obj) -> Obj:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._gone(key)
            return copy.deepcopy(obj)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def _delete(self, obj: Obj) -> None:
        key = self._key(obj)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = format_time(datetime.now(UTC))
                self._store(key, new)
            return
        self._gone(key)

    def _gone(self, key: Key) -> None:
        obj = self.objects.pop(key, None)
        for applied in [k for k in self._applied if k[0] == key]:
            del self._applied[applied]
        if obj is None:
            return
        uid = obj["metadata"]["uid"]
        for dependent in list(self.objects.values()):
            owners = dependent["metadata"].get("ownerReferences", [])
            if any(o.get("uid") == uid for o in owners):
                self._delete(dependent)


# --- the watch cache ------------------------------------------------------------------


def finished(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (the index handlers only parse), run
    without an event loop so that :meth:`Watch.sync` works inside and outside one."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise AssertionError("an index handler awaited something; it must only compute")


class Watch:
    """The operator's :class:`Cache`, filled from ``kube``'s objects by the index functions
    that handlers.py registers with kopf, each time :meth:`sync` is called; each Secret
    that changed since is reported as the Secret metadata watch reports it."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        # build_registry only hands the manager to its event handlers, never called here
        registry = build_registry(cast(Manager, None))
        self._handlers = list(registry._indexing.get_all_handlers())
        self._indexes: dict[str, dict[Any, list[Any]]] = {h.id: {} for h in self._handlers}
        self.cache = Cache()
        self.cache.bind(self._indexes)
        self._secrets: dict[tuple[str, str], str] = {}
        self.sync()

    def sync(self) -> Cache:
        """Let the cache see every object as the store has it now."""
        for index in self._indexes.values():
            index.clear()
        for (api_version, kind, namespace, name), obj in sorted(self.kube.objects.items()):
            group, _, version = api_version.rpartition("/")
            plural = PLURALS[(api_version, kind)]
            body = copy.deepcopy(obj)
            meta = body["metadata"]
            labels = meta.get("labels", {})
            for handler in self._handlers:
                selector = handler.selector
                assert selector is not None
                if (selector.group, selector.version, selector.any_name) != (
                    group,
                    version,
                    plural,
                ):
                    continue
                if any(labels.get(k) != v for k, v in (handler.labels or {}).items()):
                    continue
                # kopf passes many more keyword arguments; the functions take **_ for them
                index_fn = cast(Callable[..., Coroutine[Any, Any, Mapping[Any, Any]]], handler.fn)
                found = finished(
                    index_fn(
                        namespace=namespace,
                        name=name,
                        body=body,
                        spec=body.get("spec", {}),
                        meta=meta,
                        labels=labels,
                    )
                )
                for index_key, value in found.items():
                    self._indexes[handler.id].setdefault(index_key, []).append(value)
        self._report_secrets()
        return self.cache

    def _report_secrets(self) -> None:
        now = {
            (namespace, name): obj["metadata"]["resourceVersion"]
            for (_, kind, namespace, name), obj in self.kube.objects.items()
            if kind == "Secret"
        }
        gone = {key: None for key in self._secrets if key not in now}
        for (namespace, name), version in {**now, **gone}.items():
            if self._secrets.get((namespace, name)) != version:
                for_secret_event(self.cache, SecretEvent(namespace, name, version))
        self._secrets = now


# --- object stores --------------------------------------------------------------------


class FakeObjects:
    """The parts of :class:`ObjectStore` the operator and the readers call, over one
    bucket's dict; ``requests`` counts the S3 requests they stand for, by API."""

    def __init__(
        self, bucket: str, data: dict[str, bytes], failure: Exception | None = None
    ) -> None:
        self.bucket = bucket
        self.data = data
        self.failure = failure
        self.requests: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def _count(self, api: str) -> None:
        with self._lock:
            self.requests[api] += 1

    def _listing(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        if self.failure is not None:
            raise self.failure
        for key in sorted(self.data):
            if key.startswith(prefix) and (start_after is None or key > start_after):
                yield ObjectInfo(key, len(self.data[key]), datetime.now(UTC))

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        self._count("ListObjectsV2")
        return self._listing(prefix, start_after)

    def first_after(self, prefix: str, start_after: str) -> ObjectInfo | None:
        self._count("ListObjectsV2")
        return next(self._listing(prefix, start_after), None)

    def directories(self, prefix: str) -> tuple[str, ...]:
        self._count("ListObjectsV2")
        found = {
            prefix + o.key[len(prefix) :].split("/", 1)[0] + "/"
            for o in self._listing(prefix, None)
            if "/" in o.key[len(prefix) :]
        }
        return tuple(sorted(found))

    def create(self, key: str, body: bytes) -> bool:
        self._count("PutObject")
        if key in self.data:
            return False
        self.data[key] = body
        return True

    def put(self, key: str, body: bytes) -> None:
        self._count("PutObject")
        self.data[key] = body

    def get(self, key: str) -> bytes | None:
        self._count("GetObject")
        return self.data.get(key)

    def get_split(self, key: str, head: int) -> tuple[bytes, bytes] | None:
        data = self.get(key)
        return None if data is None else (data[:head], data[head:])

    def delete(self, keys: Any) -> int:
        self._count("DeleteObjects")
        keys = list(keys)
        for key in keys:
            self.data.pop(key, None)
        return len(keys)


class FakeBuckets:
    """Buckets by name; :meth:`open_store` replaces ``stores.open_store`` and records the
    credentials each store was opened with. While ``failure`` is set, every list raises it
    (a storage error of :mod:`shardkeeper.storage.errors`, as ObjectStore would)."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.opened: list[tuple[str, Any]] = []
        self.failure: Exception | None = None

    def open_store(self, store: Store, credentials: Any, *, retry: Any = None) -> ObjectStore:
        self.opened.append((store.bucket, credentials))
        data = self.buckets.setdefault(store.bucket, {})
        return cast(ObjectStore, FakeObjects(store.bucket, data, self.failure))


# --- all of it together ---------------------------------------------------------------


class World:
    """A fake API server, the cache over it, and the reconcilers' dependencies."""

    def __init__(self, shard_image: str = "registry.example/shardkeeper:test") -> None:
        self.kube = FakeKube()
        self.watch = Watch(self.kube)
        self.recorder = events.Recorder(self.kube, "test-operator")
        self.deps = Deps(
            cache=self.watch.cache,
            kube=self.kube,
            recorder=self.recorder,
            queue=WorkQueue(),
            defaults=WorkloadDefaults(shard_image=shard_image),
        )

    def sync(self) -> None:
        self.watch.sync()

    async def settle(self) -> None:
        """Wait for the Events being posted, then let the cache see everything."""
        await self.recorder.flush()
        self.sync()
