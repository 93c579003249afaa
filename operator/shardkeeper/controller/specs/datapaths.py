"""Where a task's data lives in a bucket (docs/shard-pod.md, "Data in the bucket").

Keys are the store's ``prefix`` (empty, or ending in '/') followed by:

- ``recovery/<namespace>/<task>/<keyBegin>-<rClockBegin>/...``: the shards' recovery logs
  (``shardkeeper.api.shard.recovery_log_name``);
- ``collections/<namespace>/<collection>/<writer shard>/...``: one journal per shard that
  writes the collection.

Both are found from names alone, without the Shard objects, so that a deletion that
resumes after the Shards are gone still finds everything.
"""

from __future__ import annotations

import re

from shardkeeper.api.storagemapping import Store


def recovery_prefix(namespace: str, task: str) -> str:
    """The prefix of every recovery log of ``task``'s shards, initial and split alike."""
    return f"recovery/{namespace}/{task}/"


def collection_prefix(namespace: str, collection: str) -> str:
    return f"collections/{namespace}/{collection}/"


def journal_name(namespace: str, collection: str, shard: str) -> str:
    """The journal that ``shard`` writes ``collection``'s documents to."""
    return f"{collection_prefix(namespace, collection)}{shard}"


def writer_pattern(task: str) -> re.Pattern[str]:
    """Matches the first path segment of the journals that ``task``'s shards write.

    Shard names are ``<task>-<8 hex>-<8 hex>``; anchoring both ends keeps task ``a`` from
    matching the journals of a task named ``a-00000000``.
    """
    return re.compile(rf"^{re.escape(task)}-[0-9a-f]{{8}}-[0-9a-f]{{8}}$")


def written_by(task: str, key: str, prefix: str) -> bool:
    """Whether ``key``, under a collection's ``prefix``, is in a journal of ``task``."""
    if not key.startswith(prefix):
        return False
    writer = key[len(prefix) :].split("/", 1)[0]
    return bool(writer_pattern(task).match(writer))


def store_url(store: Store, key: str = "") -> str:
    return f"s3://{store.bucket}/{store.prefix}{key}"
