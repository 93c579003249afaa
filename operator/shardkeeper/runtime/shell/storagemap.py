"""Where a shard's data lives in its StorageMapping: the object store and the key names.

New data goes to the mapping's first store. Every name below is relative to that store's
prefix (``''`` or a ``/``-terminated path); :func:`key_prefix` joins the two. Journal names
in checkpoints, statuses and errors are the relative ones, so they read the same whatever
the bucket layout.
"""

from __future__ import annotations

from collections.abc import Mapping

from shardkeeper.api.storagemapping import StorageMapping, Store
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import ObjectStore

ACCESS_KEY_ID = "accessKeyId"
SECRET_ACCESS_KEY = "secretAccessKey"
COLLECTIONS_DIR = "collections"


def write_store(mapping: StorageMapping) -> Store:
    """The store new data goes to: the first one."""
    return mapping.spec.stores[0]


def object_store(mapping: StorageMapping, credentials: Mapping[str, str]) -> ObjectStore:
    """The mapping's first store, with ``credentials`` = ``{"accessKeyId": ...,
    "secretAccessKey": ...}`` (resolved from the mapping's Secret by the caller)."""
    store = write_store(mapping)
    missing = [k for k in (ACCESS_KEY_ID, SECRET_ACCESS_KEY) if not credentials.get(k)]
    if missing:
        # ambient credentials (no credentialsSecretRef) are not wired up yet: the storage
        # client takes an explicit key pair
        raise ValueError(
            f"credentials for bucket {store.bucket!r} lack {', '.join(missing)}: set the "
            "StorageMapping's credentialsSecretRef to a Secret that holds both keys"
        )
    client = make_s3_client(
        endpoint=store.endpoint,
        access_key=credentials[ACCESS_KEY_ID],
        secret_key=credentials[SECRET_ACCESS_KEY],
        region=store.region,
    )
    return ObjectStore(client, store.bucket)


def store_prefix(mapping: StorageMapping) -> str:
    """The first store's prefix: ``''`` or a path ending in ``/``."""
    return write_store(mapping).prefix


def key_prefix(prefix: str, name: str) -> str:
    """The object key prefix of ``name`` (a journal or recovery log) under ``prefix``."""
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"a store prefix is empty or ends in '/': {prefix!r}")
    return prefix + name


def collection_dir(namespace: str, collection: str) -> str:
    """The relative name under which every journal of a collection sits."""
    return f"{COLLECTIONS_DIR}/{namespace}/{collection}"


def collection_journal(namespace: str, collection: str, writer: str) -> str:
    """The relative name of the journal that shard ``writer`` appends to a collection."""
    return f"{collection_dir(namespace, collection)}/{writer}"


def recovery_log_key(prefix: str, recovery_log: str) -> str:
    """The key prefix of a shard's recovery log (``shard.spec.recoveryLog``)."""
    return key_prefix(prefix, recovery_log)
