"""Which store of its StorageMapping a shard writes to, and the client for it.

New data goes to the mapping's first store. The names under its prefix are
:mod:`shardkeeper.storage.layout`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shardkeeper.api.storagemapping import StorageMapping, Store
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import ObjectStore

ACCESS_KEY_ID = "accessKeyId"
SECRET_ACCESS_KEY = "secretAccessKey"


def write_store(mapping: StorageMapping) -> Store:
    """The store new data goes to: the first one."""
    return mapping.spec.stores[0]


def object_store(
    mapping: StorageMapping,
    credentials: Mapping[str, str],
    on_error: Callable[[str], None] = lambda _operation: None,
    on_created: Callable[[str, int], None] | None = None,
) -> ObjectStore:
    """The mapping's first store, with ``credentials`` = ``{"accessKeyId": ...,
    "secretAccessKey": ...}`` (resolved from the mapping's Secret by the caller), or ``{}``
    for the pod's ambient credentials; ``on_error`` is told the operation of each failed
    request; ``on_created`` of each object a conditional create made."""
    store = write_store(mapping)
    missing = [k for k in (ACCESS_KEY_ID, SECRET_ACCESS_KEY) if not credentials.get(k)]
    if credentials and missing:
        raise ValueError(
            f"credentials for bucket {store.bucket!r} lack {', '.join(missing)}: set the "
            "StorageMapping's credentialsSecretRef to a Secret that holds both keys"
        )
    client = make_s3_client(
        endpoint=store.endpoint,
        # None: boto3's default chain (the web identity's role, Pod Identity, instance
        # profile), whose temporary credentials boto3 refreshes itself
        access_key=credentials.get(ACCESS_KEY_ID),
        secret_key=credentials.get(SECRET_ACCESS_KEY),
        region=store.region,
    )
    return ObjectStore(client, store.bucket, on_error=on_error, on_created=on_created)


def store_prefix(mapping: StorageMapping) -> str:
    """The first store's prefix: ``''`` or a path ending in ``/``."""
    return write_store(mapping).prefix
