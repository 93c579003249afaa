"""Task: its finalizer, its Shards, a capture's Service, the splits its scaling asks for,
and its status; its deletion is in task_deletion.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task
from shardkeeper.controller.engine import events
from shardkeeper.controller.engine.kube import ApiError
from shardkeeper.controller.engine.secrets import read_secrets
from shardkeeper.controller.reconcilers.base import Base, Deps
from shardkeeper.controller.reconcilers.split import request_split
from shardkeeper.controller.reconcilers.task_deletion import TaskDeletion
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.ingest import ingest_service
from shardkeeper.controller.specs.objects import content_hash
from shardkeeper.controller.specs.references import task_problems, task_secret_refs
from shardkeeper.controller.specs.refusals import Refusal
from shardkeeper.controller.specs.scaling import recheck_after, scaling_requests
from shardkeeper.controller.specs.shards import shard_manifest, shards_to_create
from shardkeeper.controller.specs.status import task_verdict

log = logging.getLogger(__name__)
SCALING = "scaling"  # what RecentWrites keeps of a split the task's scaling asked for
SERVICE = "service"  # what RefusedApplies keeps of the capture's Service


class TaskReconciler(Base):
    kind = Task.KIND

    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self.deletion = TaskDeletion(deps, self)
        # uid -> hash of the Service last applied for that task (Services are not watched)
        self._services: dict[str, str] = {}

    async def reconcile(self, namespace: str, name: str) -> float | None:
        task = self.deps.cache.task(namespace, name)
        if task is None:
            return None
        if task.metadata.deletion_timestamp is not None:
            self._services.pop(task.metadata.uid or "", None)
            self.refusals.forget(task.metadata.uid)
            return await self.deletion.finalize(task)
        await self.set_finalizer(task, present=True)
        hold = cond.is_paused(task.metadata.annotations)
        # a refused Service is no reason to hold back the shards: they run without it
        refused, refusal = (None, None) if hold else await self.apply_service(task)

        cache = self.deps.cache
        secrets = [ref.name for _, ref in task_secret_refs(task)]
        await read_secrets(self.deps.kube, cache.secrets, namespace, secrets)
        problems = task_problems(task, cache)
        shards = cache.shards_of(namespace, name)
        # A task that cannot run gets no shards, rather than shards that crash-loop; one
        # that already has shards keeps them running and says what is wrong.
        to_create = [] if problems or hold else shards_to_create(task, shards)
        for shard in to_create:
            # a create, not an apply: a pass whose cache has not yet seen the Shard an
            # earlier pass made (or a dead leader made) is refused, and announces nothing
            try:
                await self.deps.kube.create(shard_manifest(shard))
            except ApiError as err:
                if err.status != 409:
                    raise
                log.debug("shard %s exists already", shard.metadata.name)
                continue
            await self.deps.recorder.post(
                task,
                events.Notice(
                    events.NORMAL,
                    "ShardCreated",
                    f"created shard {shard.metadata.name} for keys "
                    f"{shard.spec.key_begin:08x}-{shard.spec.key_end:08x}, r-clocks "
                    f"{shard.spec.r_clock_begin:08x}-{shard.spec.r_clock_end:08x}",
                ),
            )
        # splits only for a task that can run: a split's child would need what it lacks
        recheck = None if problems or hold else await self.scale(task, shards)
        verdict = task_verdict(task, shards, problems, creating=len(to_create), refusal=refusal)
        await self.write_status(
            task,
            cond.paused(verdict.verdicts) if hold else verdict.verdicts,
            {
                "shards": verdict.shards,
                "readyShards": verdict.ready_shards,
                "shardsByPhase": verdict.by_phase,
            },
        )
        return min((w for w in (recheck, refused) if w is not None), default=None)

    async def apply_service(self, task: Task) -> tuple[float | None, Refusal | None]:
        """Apply a capture's Service (ingest.py) once per operator, and again when it
        changes; if the API server refused it, its refusal and the seconds until it is
        tried again."""
        service = ingest_service(task)
        if service is None:
            return None, None
        uid, digest = task.metadata.uid or "", content_hash([service])
        if self._services.get(uid) == digest:
            return None, None
        standing = self.refusals.standing(uid, SERVICE, digest)
        if standing is not None:
            return standing[1], standing[0]
        refusal = await self.apply_all(task, [service])
        if refusal is not None:
            return self.refusals.refused(uid, SERVICE, digest, refusal), refusal
        self.refusals.accepted(uid, SERVICE)
        self._services[uid] = digest
        return None, None

    async def scale(self, task: Task, shards: list[Shard]) -> float | None:
        """Ask for the splits that minShards and autoSplit call for (see scaling.py), by
        setting spec.split as a person would; seconds until an automatic split may be due."""
        now = datetime.now(UTC)
        by_name = {s.metadata.name: s for s in shards}
        for request in scaling_requests(task, shards, now):
            shard = by_name[request.shard]
            version = shard.metadata.resource_version
            if self.recent.current_at(shard.metadata.uid or "", SCALING, version, None):
                continue  # asked already; the cache does not show it yet
            if not await request_split(self.deps, shard, request.by):
                continue  # its spec moved on: the next pass decides again
            self.recent.wrote_at(shard.metadata.uid or "", SCALING, version, True)
            await self.deps.recorder.post(
                task,
                events.Notice(
                    events.NORMAL,
                    "SplitRequested",
                    f"asked {request.shard} to split by {request.by}: {request.reason}",
                ),
            )
        return recheck_after(task, shards, now)
