"""The reconcile loop: workers take keys from the queue and run the reconciler of their kind.

kopf watches and fills the cache (handlers.py); its event handlers only queue keys, and
so does the Secret metadata watch (secrets.py). The workers start once kopf has listed
every watched kind, so no reconcile ever decides from a partial view. Failures come back
with a per-key back-off; a reconcile that asks to be looked at again after a while (a
periodic bucket check, a roll in progress) is queued then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from shardkeeper.controller.engine import metrics, triggers
from shardkeeper.controller.engine.kube import ApiError
from shardkeeper.controller.engine.secrets import SecretEvent
from shardkeeper.controller.reconcilers.base import Deps, Reconciler
from shardkeeper.controller.reconcilers.collection import CollectionReconciler
from shardkeeper.controller.reconcilers.mapping import MappingReconciler
from shardkeeper.controller.reconcilers.shard import ShardReconciler
from shardkeeper.controller.reconcilers.task import TaskReconciler

log = logging.getLogger(__name__)


class Manager:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        reconcilers: list[Reconciler] = [
            TaskReconciler(deps),
            ShardReconciler(deps),
            MappingReconciler(deps),
            CollectionReconciler(deps),
        ]
        self.reconcilers = {r.kind: r for r in reconcilers}
        self.started = asyncio.Event()
        self.seen = triggers.Seen()

    def observed(self, kind: str, indexes: Mapping[str, Any]) -> None:
        """Called by every watch event handler, with the handler's keyword arguments."""
        now = time.time()
        metrics.WATCH_EVENTS.labels(kind=kind).inc()
        metrics.WATCH_LAST_EVENT.labels(kind=kind).set(now)
        if not self.started.is_set():
            self.deps.cache.bind(indexes)
            metrics.SHARD_PHASES.source = self.deps.cache.shard_phases
            metrics.WATCHING.set(1)
            self.started.set()
            log.info("every watched kind is listed: reconciling")

    def on_event(self, event: triggers.WatchEvent, indexes: Mapping[str, Any]) -> None:
        """A watch event: queue what it concerns. A new Task or Shard is urgent: creating
        its workload goes before status updates of the ones that already run."""
        self.observed(event.kind, indexes)
        urgent = event.type == "ADDED" and event.kind in ("Task", "Shard")
        for key in triggers.keys_for(self.deps.cache, self.seen, event):
            if key.name:
                self.deps.queue.add(key, urgent=urgent and key.kind == event.kind)

    def on_secret(self, event: SecretEvent) -> None:
        """An event of the Secret metadata watch (secrets.py), once reconciling started."""
        now = time.time()
        metrics.WATCH_EVENTS.labels(kind="Secret").inc()
        metrics.WATCH_LAST_EVENT.labels(kind="Secret").set(now)
        for key in triggers.for_secret_event(self.deps.cache, event):
            if key.name:
                self.deps.queue.add(key)

    async def run(self, workers: int) -> None:
        await self.started.wait()
        await asyncio.gather(*(self._work() for _ in range(workers)))

    async def _work(self) -> None:
        queue = self.deps.queue
        while True:
            key = await queue.get()
            started = time.monotonic()
            try:
                again = await self.reconcilers[key.kind].reconcile(key.namespace, key.name)
            except asyncio.CancelledError:
                queue.done(key)
                raise
            except Exception as exc:
                delay = queue.failed(key)
                if isinstance(exc, ApiError) and exc.status in (409, 429, 500, 503, 504):
                    log.info("%s: %s; again in %.1fs", key, exc, delay)
                else:
                    log.exception("%s: reconcile failed; again in %.1fs", key, delay)
                metrics.RECONCILES.labels(kind=key.kind, result="error").inc()
                queue.add_after(key, delay)
            else:
                queue.forget(key)
                result = "requeue" if again else "success"
                metrics.RECONCILES.labels(kind=key.kind, result=result).inc()
                if again:
                    queue.add_after(key, again)
            finally:
                metrics.RECONCILE_SECONDS.labels(kind=key.kind).observe(time.monotonic() - started)
            queue.done(key)
