"""Task: its finalizer, its Shards, a capture's Service, the splits its scaling asks for,
and its status; its deletion is in task_deletion.py."""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime

from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task
from shardkeeper.controller.engine import events
from shardkeeper.controller.engine.kube import ApiError
from shardkeeper.controller.engine.secrets import read_secrets
from shardkeeper.controller.reconcilers import stores
from shardkeeper.controller.reconcilers.base import Base, Deps
from shardkeeper.controller.reconcilers.split import request_split
from shardkeeper.controller.reconcilers.task_deletion import TaskDeletion
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs.ingest import ingest_service
from shardkeeper.controller.specs.objects import content_hash, namespaced_name
from shardkeeper.controller.specs.references import Problem, task_problems, task_secret_refs
from shardkeeper.controller.specs.refusals import Refusal
from shardkeeper.controller.specs.restore import (
    ChosenPoint,
    PlannedRestore,
    missing_restored,
    restore_problems,
    restore_status,
    restored_shard,
)
from shardkeeper.controller.specs.scaling import recheck_after, scaling_requests
from shardkeeper.controller.specs.shards import shard_manifest, shards_to_create
from shardkeeper.controller.specs.status import task_verdict
from shardkeeper.storage import errors, layout
from shardkeeper.storage.pointintime import NoRestorePoint, reserve_restore_point
from shardkeeper.storage.recoverylog import RecoveryLog

log = logging.getLogger(__name__)


def _dump_restore(task: Task, shards: list[Shard]) -> dict[str, object] | None:
    status = restore_status(task, shards)
    return (
        None if status is None else status.model_dump(mode="json", by_alias=True, exclude_none=True)
    )


SCALING = "scaling"  # what RecentWrites keeps of a split the task's scaling asked for
SERVICE = "service"  # what RefusedApplies keeps of the capture's Service
RESTORE_RETRY = 10.0  # seconds until a restore that could not be planned is tried again


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
        restore_wait = None
        to_create: list[Shard] = []
        if problems or hold:
            to_create = []
        elif task.spec.restore_from is not None:
            to_create, restore_problem = await self.restoring(task, shards)
            if restore_problem:
                problems = [*problems, *restore_problem]
                restore_wait = RESTORE_RETRY
        else:
            to_create = shards_to_create(task, shards)
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
                "restore": _dump_restore(task, [*shards, *to_create]),
            },
        )
        waits = (recheck, refused, restore_wait)
        return min((w for w in waits if w is not None), default=None)

    async def restoring(self, task: Task, shards: list[Shard]) -> tuple[list[Shard], list[Problem]]:
        """For a task with spec.restoreFrom: the shards still to create, each with its
        restore point chosen and its fork registered in the source's log; or why they
        cannot be planned now."""
        namespace, _ = namespaced_name(task)
        spec = task.spec.restore_from
        assert spec is not None
        cache = self.deps.cache
        source = cache.task(namespace, spec.task)
        source_shards = cache.shards_of(namespace, spec.task) if source is not None else []
        problems = restore_problems(task, source, source_shards)
        if problems:
            # a restored task that has its shards runs without its source (deleted since)
            return [], [] if shards else problems
        missing = missing_restored(task, source_shards, shards)
        if not missing:
            return [], []
        mapping = cache.storage_mapping(namespace, task.spec.storage_mapping)
        assert mapping is not None  # task_problems found it ready
        store = mapping.spec.stores[0]
        before = spec.before.timestamp() if spec.before is not None else None
        try:
            credentials = await stores.store_credentials(self.deps.kube, namespace, store)
        except stores.CredentialsProblem as exc:
            return [], [Problem(exc.reason, exc.message)]

        def reserve(planned: PlannedRestore) -> Shard:
            objects = stores.open_store(store, credentials)
            source_log = RecoveryLog(
                objects, layout.object_key(store.prefix, planned.source.spec.recovery_log)
            )
            child = layout.object_key(store.prefix, planned.shard.spec.recovery_log)
            point = reserve_restore_point(source_log, child, before)
            relative = point.log.removeprefix(store.prefix)
            at = (
                datetime.fromtimestamp(point.committed_at, UTC)
                if point.committed_at is not None
                else None
            )
            # the commit's seq and time go on the Shard, created once, so that a status
            # written from a stale cache cannot lose them
            return restored_shard(planned, ChosenPoint(relative, point.offset, point.seq, at))

        created: list[Shard] = []
        for planned in missing:
            try:
                shard = await self.deps.kube.run(functools.partial(reserve, planned))
            except NoRestorePoint as exc:
                reason = "RestorePointNotFound"
                message = f"no restore point in {planned.source.metadata.name}'s log: {exc}"
                return [], [Problem(reason, message)]
            except errors.StorageError as exc:
                message = f"reading {planned.source.metadata.name}'s recovery log failed: {exc}"
                return [], [Problem("RestoreFailed", message)]
            created.append(shard)
            chosen = shard.spec.restore_source
            assert chosen is not None
            log.info(
                "restoring shard %s from %s at %#x (seq %d, %s)",
                shard.metadata.name,
                chosen.recovery_log,
                chosen.offset,
                chosen.seq,
                chosen.committed_at,
            )
        return created, []

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
