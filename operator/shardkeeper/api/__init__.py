"""The Shardkeeper API (group shardkeeper.io, version v1alpha1): the one definition of the
StorageMapping, Collection, Task and Shard resources, from which the CRDs and the API
reference are generated."""

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import API_VERSION, GROUP, VERSION, Duration, Resource
from shardkeeper.api.shard import Shard
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import Task

KINDS: tuple[type[Resource], ...] = (StorageMapping, Collection, Task, Shard)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Collection",
    "Duration",
    "Resource",
    "Shard",
    "StorageMapping",
    "Task",
]
