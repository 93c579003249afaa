"""Deleting data from the stores of StorageMappings, for a deletion policy of Delete.

A place that cannot be reached because its StorageMapping is missing or not ready, or its
Secret is gone, or the store refuses, is reported rather than waited for: a deletion that
can never finish would hold its object (and its namespace) forever. A store that answers
with a transient fault raises, so the reconcile is tried again.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

from shardkeeper.api.storagemapping import Store
from shardkeeper.controller.engine import events
from shardkeeper.controller.reconcilers import buckets
from shardkeeper.controller.reconcilers.base import Deps
from shardkeeper.controller.reconcilers.credentials import CredentialsProblem, store_credentials
from shardkeeper.controller.specs.datapaths import store_url
from shardkeeper.controller.specs.references import mapping_readiness
from shardkeeper.storage import errors


@dataclasses.dataclass(frozen=True)
class DataPlace:
    """Objects under one prefix of one store."""

    what: str
    mapping: str
    prefix: str
    """Relative to the store's own prefix."""
    where: Callable[[str, str], bool] | None = None
    """Selects objects by (full prefix, key); None means everything under the prefix."""


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
    prefix = store.prefix + place.prefix

    def run() -> int:
        objects = buckets.open_store(store, credentials)
        where = None if place.where is None else functools.partial(place.where, prefix)
        try:
            return buckets.delete_under(objects, prefix, where)
        except errors.BucketNotFound:
            return 0  # no bucket, so nothing in it

    return await deps.kube.run(run)
