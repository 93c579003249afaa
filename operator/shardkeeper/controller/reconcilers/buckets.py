"""The operator's I/O against object storage: checking a store, and deleting a task's data.

Both go through the storage layer's :class:`ObjectStore`, so a store answers with the same
typed errors the shard runtime sees, and those become condition reasons as they are.
Calls block: the reconcilers run them in threads.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import cast

from shardkeeper.api.storagemapping import Store
from shardkeeper.controller.specs.status import StoreCheck
from shardkeeper.storage import errors
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import PROBE_PREFIX, ObjectStore
from shardkeeper.storage.retry import RetryPolicy

log = logging.getLogger(__name__)

# A check answers within seconds: an unreachable store is reported, not waited for.
CHECK_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, deadline=8.0)
CHECK_CONNECT_TIMEOUT = 3.0
CHECK_READ_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def open_store(
    store: Store, credentials: Credentials | None, *, retry: RetryPolicy | None = None
) -> ObjectStore:
    """An ObjectStore for ``store``. Without credentials boto3's own chain applies (the
    operator's instance profile or workload identity)."""
    client = make_s3_client(
        endpoint=store.endpoint,
        # None makes boto3 fall back to its default credential chain
        access_key=cast(str, credentials.access_key if credentials else None),
        secret_key=cast(str, credentials.secret_key if credentials else None),
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


def delete_under(
    objects: ObjectStore, prefix: str, where: Callable[[str], bool] | None = None
) -> int:
    """Delete the objects under ``prefix`` (only those ``where`` selects); how many."""
    keys = [o.key for o in objects.list(prefix) if where is None or where(o.key)]
    if keys:
        objects.delete(keys)
        log.info("deleted %d objects under s3://%s/%s", len(keys), objects.bucket, prefix)
    return len(keys)
