"""Where a task's data lives in a store: the one definition of the bucket layout.

Keys are a store's ``prefix`` (``''`` or a path ending in ``/``) followed by a name:

- ``recovery/<namespace>/<task>/<keyBegin>-<rClockBegin>``: a shard's recovery log
  (``shard.spec.recoveryLog``; what sits under it is :mod:`.recoverylog`'s);
- ``collections/<namespace>/<collection>/<writer shard>``: the journal one shard writes a
  collection's documents to (fragments under it are :mod:`.journal`'s).

Names are relative to the prefix; checkpoints, statuses and errors use these relative
names, so they read the same whatever the store. The shard runtime writes under these names
and the operator deletes under them (``deletionPolicy: Delete``), so both take them from
here. Everything of a task is found from names alone, without its Shard objects, so a
deletion that resumes after the Shards are gone still finds it.

Pure: strings in, strings out.
"""

from __future__ import annotations

import re

RECOVERY_DIR = "recovery"
COLLECTIONS_DIR = "collections"


def object_key(prefix: str, name: str) -> str:
    """The object key (or key prefix) of ``name`` in a store whose prefix is ``prefix``."""
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"a store prefix is empty or ends in '/': {prefix!r}")
    return prefix + name


def recovery_log_name(namespace: str, task: str, key_begin: int, r_clock_begin: int) -> str:
    """The recovery log of the shard of ``task`` whose ranges begin at these points.

    A task's shards never share both begins, so the name is unique within the task.
    """
    return f"{task_recovery_dir(namespace, task)}{key_begin:08x}-{r_clock_begin:08x}"


def task_recovery_dir(namespace: str, task: str) -> str:
    """What every recovery log of ``task``'s shards, initial and split alike, starts with
    (``/``-terminated, so task ``a`` never covers the logs of task ``a-b``)."""
    return f"{RECOVERY_DIR}/{namespace}/{task}/"


def collection_dir(namespace: str, collection: str) -> str:
    """What every journal of ``collection`` starts with (``/``-terminated)."""
    return f"{COLLECTIONS_DIR}/{namespace}/{collection}/"


def collection_journal(namespace: str, collection: str, writer: str) -> str:
    """The journal that shard ``writer`` appends ``collection``'s documents to."""
    return f"{collection_dir(namespace, collection)}{writer}"


def writer_pattern(task: str) -> re.Pattern[str]:
    """Matches the writer segment of the journals that ``task``'s shards write.

    Shard names are ``<task>-<8 hex>-<8 hex>`` (``shardkeeper.api.shard.shard_name``);
    anchoring both ends keeps task ``a`` from matching the journals of a task named
    ``a-00000000``.
    """
    return re.compile(rf"^{re.escape(task)}-[0-9a-f]{{8}}-[0-9a-f]{{8}}$")


def written_by(task: str, key: str, directory: str) -> bool:
    """Whether ``key``, under a collection's ``directory`` (an object key prefix ending in
    ``/``), is in a journal that one of ``task``'s shards writes."""
    if not key.startswith(directory):
        return False
    writer = key[len(directory) :].split("/", 1)[0]
    return bool(writer_pattern(task).match(writer))
