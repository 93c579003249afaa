"""Where a task's data lives in a bucket: the names are :mod:`shardkeeper.storage.layout`'s."""

from __future__ import annotations

from shardkeeper.api.storagemapping import Store
from shardkeeper.storage import layout


def recovery_prefix(namespace: str, task: str) -> str:
    """The prefix of every recovery log of ``task``'s shards, initial and split alike."""
    return layout.task_recovery_dir(namespace, task)


def collection_prefix(namespace: str, collection: str) -> str:
    return layout.collection_dir(namespace, collection)


def journal_name(namespace: str, collection: str, shard: str) -> str:
    """The journal that ``shard`` writes ``collection``'s documents to."""
    return layout.collection_journal(namespace, collection, shard)


def written_by(task: str, key: str, prefix: str) -> bool:
    """Whether ``key``, under a collection's ``prefix``, is in a journal of ``task``."""
    return layout.written_by(task, key, prefix)


def store_url(store: Store, key: str = "") -> str:
    return f"s3://{store.bucket}/{layout.object_key(store.prefix, key)}"
