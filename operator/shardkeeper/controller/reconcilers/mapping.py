"""StorageMapping: check each store's bucket, and say what was found in status and Events.

A check runs when the spec or a credentials Secret changed, and otherwise every
``CHECK_INTERVAL`` (sooner while a store is failing). What was checked when is kept in
memory only to avoid checking again on every event; after a restart, the status says when
the last check was, so a restarted operator does not hit every bucket at once either.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime

from shardkeeper.api.meta import format_time
from shardkeeper.api.storagemapping import StorageMapping, Store
from shardkeeper.controller.engine import metrics
from shardkeeper.controller.engine.secrets import read_secrets
from shardkeeper.controller.reconcilers.base import Base, Deps
from shardkeeper.controller.reconcilers.stores import checked_store
from shardkeeper.controller.specs.objects import namespaced_name
from shardkeeper.controller.specs.status import StoreCheck, mapping_verdicts

log = logging.getLogger(__name__)

CHECK_INTERVAL = 60.0
RETRY_INTERVAL = 15.0


@dataclasses.dataclass(frozen=True)
class LastCheck:
    inputs: tuple[object, ...]
    at: float  # monotonic
    ok: bool


class MappingReconciler(Base):
    kind = StorageMapping.KIND

    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self._last: dict[str, LastCheck] = {}

    def inputs(self, mapping: StorageMapping) -> tuple[object, ...]:
        """What a check depends on: the spec, and the version of each Secret it reads."""
        namespace, _ = namespaced_name(mapping)
        versions = []
        for store in mapping.spec.stores:
            ref = store.credentials_secret_ref
            secret = self.deps.cache.secret(namespace, ref.name) if ref is not None else None
            versions.append(secret.resource_version if secret is not None else None)
        return (mapping.metadata.generation, tuple(versions))

    def due_in(self, mapping: StorageMapping, inputs: tuple[object, ...]) -> float:
        """Seconds until the next check: 0 when one is due now."""
        uid = mapping.metadata.uid or ""
        last = self._last.get(uid)
        if last is None:
            last = self._from_status(mapping, inputs)
            if last is not None:
                self._last[uid] = last
        if last is None or last.inputs != inputs:
            return 0.0
        interval = CHECK_INTERVAL if last.ok else RETRY_INTERVAL
        return max(0.0, last.at + interval - time.monotonic())

    def _from_status(self, mapping: StorageMapping, inputs: tuple[object, ...]) -> LastCheck | None:
        status = mapping.status
        if status.observed_generation != mapping.metadata.generation or not status.stores:
            return None
        times = [s.checked_at for s in status.stores if s.checked_at is not None]
        if len(times) != len(status.stores):
            return None
        age = (datetime.now(UTC) - min(times)).total_seconds()
        ok = bool(status.bucket_reachable and status.conditional_writes)
        # the Secrets may have changed while no operator watched: trust the status only
        # while it is fresh
        return LastCheck(inputs, time.monotonic() - max(0.0, age), ok)

    async def reconcile(self, namespace: str, name: str) -> float | None:
        mapping = self.deps.cache.storage_mapping(namespace, name)
        if mapping is None:
            return None
        if mapping.metadata.deletion_timestamp is not None:
            self._last.pop(mapping.metadata.uid or "", None)
            self.forget(mapping.metadata.uid)
            return None
        refs = [s.credentials_secret_ref for s in mapping.spec.stores]
        secrets = [ref.name for ref in refs if ref is not None]
        await read_secrets(self.deps.kube, self.deps.cache.secrets, namespace, secrets)
        inputs = self.inputs(mapping)
        wait = self.due_in(mapping, inputs)
        if wait > 0:
            return wait
        now = datetime.now(UTC)
        checks = [await self.check(namespace, store, now) for store in mapping.spec.stores]
        first = checks[0]
        await self.write_status(
            mapping,
            mapping_verdicts(checks),
            {
                "bucketReachable": first.reachable,
                "conditionalWrites": first.conditional_writes,
                "stores": [_store_status(c) for c in checks],
            },
        )
        ok = all(c.ok for c in checks)
        self._last[mapping.metadata.uid or ""] = LastCheck(inputs, time.monotonic(), ok)
        return CHECK_INTERVAL if ok else RETRY_INTERVAL

    async def check(self, namespace: str, store: Store, now: datetime) -> StoreCheck:
        result = await checked_store(self.deps.kube, namespace, store, now)
        metrics.BUCKET_CHECKS.labels(reason=result.reason).inc()
        return result


def _store_status(check: StoreCheck) -> dict[str, object]:
    out: dict[str, object] = {
        "bucket": check.bucket,
        "prefix": check.prefix,
        "message": check.message[:4096],
        "checkedAt": format_time(check.checked_at.replace(microsecond=0)),
    }
    if check.reachable is not None:
        out["reachable"] = check.reachable
    if check.conditional_writes is not None:
        out["conditionalWrites"] = check.conditional_writes
    return out
