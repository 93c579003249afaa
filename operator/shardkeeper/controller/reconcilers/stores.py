"""The operator's I/O against object stores: credentials from a store's Secret, opening and
checking a store, and deleting data under a prefix.

Everything goes through the storage layer's :class:`ObjectStore`, so a store answers with
the same typed errors the shard runtime sees, and those become condition reasons as they
are. Store calls block: they run in threads (``deps.kube.run``).

A place that cannot be reached for a deletion, because its StorageMapping is missing or not
ready, or its Secret is gone, or the store refuses, is reported rather than waited for: a
deletion that can never finish would hold its object (and its namespace) forever. A store
that answers with a transient fault raises, so the reconcile is tried again.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from shardkeeper.api.storagemapping import Store
from shardkeeper.controller.engine import events
from shardkeeper.controller.engine.kube import AsyncKube
from shardkeeper.controller.reconcilers.base import Deps
from shardkeeper.controller.specs.references import mapping_readiness
from shardkeeper.controller.specs.status import StoreCheck
from shardkeeper.redact import SECRETS
from shardkeeper.storage import errors, layout
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import PROBE_PREFIX, ObjectStore
from shardkeeper.storage.retry import RetryPolicy

log = logging.getLogger(__name__)

# A check answers within seconds: an unreachable store is reported, not waited for.
CHECK_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, deadline=8.0)
CHECK_CONNECT_TIMEOUT = 3.0
CHECK_READ_TIMEOUT = 10.0


# --- credentials --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


class CredentialsProblem(Exception):
    """The Secret or one of its keys is missing; ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def store_credentials(kube: AsyncKube, namespace: str, store: Store) -> Credentials | None:
    """The store's key pair, read from the Secret its StorageMapping names; None when it
    names no Secret (ambient credentials)."""
    ref = store.credentials_secret_ref
    if ref is None:
        return None
    secret = await kube.get("v1", "Secret", namespace, ref.name)
    if secret is None:
        raise CredentialsProblem(
            "SecretNotFound", f"Secret {ref.name} (credentialsSecretRef) does not exist"
        )
    data = secret.get("data") or {}
    values = {}
    for key in (ref.access_key_id_key, ref.secret_access_key_key):
        if key not in data:
            raise CredentialsProblem(
                "SecretKeyNotFound", f"Secret {ref.name} has no key {key} (credentialsSecretRef)"
            )
        values[key] = base64.b64decode(data[key]).decode().strip()
    # out of logs, Events and status messages; the key's ID is a name, not a secret
    SECRETS.add(values[ref.secret_access_key_key])
    return Credentials(values[ref.access_key_id_key], values[ref.secret_access_key_key])


# --- opening and checking a store ---------------------------------------------------------


def store_url(store: Store, name: str = "") -> str:
    """Where ``name`` (relative to the store's prefix) is, as a person would write it."""
    return f"s3://{store.bucket}/{layout.object_key(store.prefix, name)}"


def open_store(
    store: Store, credentials: Credentials | None, *, retry: RetryPolicy | None = None
) -> ObjectStore:
    """An ObjectStore for ``store``. Without credentials boto3's own chain applies (the
    operator's instance profile or workload identity)."""
    client = make_s3_client(
        endpoint=store.endpoint,
        # None makes boto3 fall back to its default credential chain
        access_key=credentials.access_key if credentials else None,
        secret_key=credentials.secret_key if credentials else None,
        region=store.region,
        connect_timeout=CHECK_CONNECT_TIMEOUT,
        read_timeout=CHECK_READ_TIMEOUT,
    )
    return ObjectStore(client, store.bucket, retry=retry)


def check_store(store: Store, objects: ObjectStore, now: datetime) -> StoreCheck:
    """List under the prefix, then create a probe object twice under it: the first create
    must succeed and the second be refused (``If-None-Match: *``), which is what journal
    fencing relies on. The probe is removed afterwards.

    The storage layer's ``ensure_conditional_writes`` probes the bucket's root and
    remembers a success for the life of the process; a check must work with credentials
    that only reach the prefix, and must notice a store that changed, so it probes here.
    """
    probe_dir = f"{store.prefix}{PROBE_PREFIX}/"
    key = f"{probe_dir}{uuid.uuid4().hex}"

    def result(
        reachable: bool | None, conditional: bool | None, reason: str, message: str
    ) -> StoreCheck:
        return StoreCheck(store.bucket, store.prefix, reachable, conditional, reason, message, now)

    try:
        objects.first_after(probe_dir, probe_dir)
        if not objects.create(key, b"first"):
            return result(True, False, "ConditionalWritesUnsupported", "a fresh probe key exists")
        second_refused = not objects.create(key, b"second")
        kept = objects.get(key)
        objects.delete([key])
    except errors.BucketNotFound as exc:
        return result(False, None, "BucketNotFound", str(exc))
    except errors.AccessDenied as exc:
        return result(False, None, "AccessDenied", str(exc))
    except errors.ConditionalWritesUnsupported as exc:
        return result(True, False, "ConditionalWritesUnsupported", str(exc))
    except errors.StorageUnavailable as exc:
        return result(False, None, "BucketUnreachable", str(exc))
    except errors.StorageError as exc:
        return result(False, None, "BucketError", str(exc))
    if not second_refused or kept != b"first":
        return result(
            True,
            False,
            "ConditionalWritesUnsupported",
            "a second create of the same key with If-None-Match: * was not refused; journal "
            "fencing depends on it: use a store that supports conditional writes",
        )
    return result(True, True, "BucketReady", "reachable; conditional writes are honoured")


def unusable_store(store: Store, reason: str, message: str, now: datetime) -> StoreCheck:
    """The result for a store that could not even be tried (no Secret, no key)."""
    return StoreCheck(store.bucket, store.prefix, None, None, reason, message, now)


async def checked_store(kube: AsyncKube, namespace: str, store: Store, now: datetime) -> StoreCheck:
    """Whether ``store`` can hold journals: its credentials, then :func:`check_store`."""
    try:
        credentials = await store_credentials(kube, namespace, store)
    except CredentialsProblem as problem:
        return unusable_store(store, problem.reason, problem.message, now)
    return await kube.run(
        lambda: check_store(store, open_store(store, credentials, retry=CHECK_RETRY), now)
    )


# --- deleting data ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataPlace:
    """Objects under one prefix of the stores of one StorageMapping."""

    what: str
    mapping: str
    prefix: str
    """Relative to the store's own prefix, ending in '/'."""
    writer_task: str | None = None
    """Only the journals this task's shards write; None means everything under the prefix."""

    def holds(self, store_prefix: str, key: str) -> bool:
        """Whether the object ``key`` of a store whose prefix is ``store_prefix`` is here."""
        prefix = layout.object_key(store_prefix, self.prefix)
        if self.writer_task is None:
            return key.startswith(prefix)
        return layout.written_by(self.writer_task, key, prefix)


def delete_under(
    objects: ObjectStore, prefix: str, where: Callable[[str], bool] | None = None
) -> int:
    """Delete the objects under ``prefix`` (only those ``where`` selects); how many."""
    keys = [o.key for o in objects.list(prefix) if where is None or where(o.key)]
    if keys:
        objects.delete(keys)
        log.info("deleted %d objects under s3://%s/%s", len(keys), objects.bucket, prefix)
    return len(keys)


async def delete_places(
    deps: Deps, namespace: str, places: Sequence[DataPlace], unknown: Sequence[str] = ()
) -> list[events.Notice]:
    """Delete what ``places`` hold in every store of their StorageMappings; the Events
    that say what was deleted and what could not be (``unknown`` places, too)."""
    deleted: list[str] = []
    skipped = list(unknown)
    for place in places:
        mapping = deps.cache.storage_mapping(namespace, place.mapping)
        problem = mapping_readiness(mapping, place.mapping)
        if mapping is None or problem is not None:
            skipped.append(f"{place.what}: {problem.message if problem else ''}")
            continue
        for store in mapping.spec.stores:
            url = store_url(store, place.prefix)
            try:
                count = await _delete_from(deps, namespace, store, place)
            except (CredentialsProblem, errors.AccessDenied, errors.UnexpectedStorageError) as exc:
                skipped.append(f"{place.what} at {url}: {exc}")
                continue
            deleted.append(f"{count} objects of {place.what} at {url}")
    notices = [events.Notice(events.NORMAL, "DataDeleted", "deleted " + "; ".join(deleted))]
    if skipped:
        notices.append(
            events.Notice(
                events.WARNING,
                "DataNotDeleted",
                "deletionPolicy is Delete, but these were not deleted (delete them by hand): "
                + "; ".join(skipped),
            )
        )
    return notices


async def _delete_from(deps: Deps, namespace: str, store: Store, place: DataPlace) -> int:
    credentials = await store_credentials(deps.kube, namespace, store)
    prefix = layout.object_key(store.prefix, place.prefix)

    def run() -> int:
        objects = open_store(store, credentials)
        try:
            return delete_under(objects, prefix, lambda key: place.holds(store.prefix, key))
        except errors.BucketNotFound:
            return 0  # no bucket, so nothing in it

    return await deps.kube.run(run)
