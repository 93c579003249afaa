"""Shard: its workload (applied only when it changed), its roll, its split (split.py), and
its status."""

from __future__ import annotations

import logging

from shardkeeper.api.meta import format_time
from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task
from shardkeeper.controller.engine import events
from shardkeeper.controller.reconcilers.base import Base, Deps
from shardkeeper.controller.reconcilers.split import SplitPass, Splits, dump_progress, with_split
from shardkeeper.controller.specs import conditions as cond
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import content_hash, namespaced_name, stamp
from shardkeeper.controller.specs.references import (
    mapping_names,
    runtime_secret_names,
    task_collections,
    task_problems,
)
from shardkeeper.controller.specs.refusals import Refusal
from shardkeeper.controller.specs.rollout import next_step
from shardkeeper.controller.specs.scaling import lag_above_since
from shardkeeper.controller.specs.splits import in_progress
from shardkeeper.controller.specs.status import shard_verdict
from shardkeeper.controller.specs.views import PodView, StatefulSetView
from shardkeeper.controller.specs.workload import (
    WorkloadInputs,
    keep_immutable_claims,
    replicas,
    workload,
)

log = logging.getLogger(__name__)

# Pods are not watched (the StatefulSet's status follows them); while a roll runs, it is
# looked at again at least this often.
ROLL_POLL_SECONDS = 10.0
# what RecentWrites keeps of the last apply of a shard's objects: their hash
WORKLOAD = "workload"


class ShardReconciler(Base):
    kind = Shard.KIND

    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        self.splits = Splits(deps, self.recent)

    async def reconcile(self, namespace: str, name: str) -> float | None:
        cache = self.deps.cache
        shard = cache.shard(namespace, name)
        if shard is None:
            return None
        if shard.metadata.deletion_timestamp is not None:
            self.forget(shard.metadata.uid)
            return None
        task = cache.task(namespace, shard.spec.task)
        sts = cache.statefulset(namespace, name)
        problems = task_problems(task, cache) if task is not None else []
        waits: list[float | None] = []
        live = task is not None and task.metadata.deletion_timestamp is None
        # a paused task's shards keep their workload as it is; one that has none yet (a
        # split's child) gets it, and a split under way carries on
        hold = task is not None and cond.is_paused(task.metadata.annotations)
        refusal = None
        if task is not None and live and self._resolved(task) and not (hold and sts):
            wait, refusal = await self.apply_workload(shard, task, sts)
            waits.append(wait)
        if task is not None and live and not hold:
            waits.append(await self.roll(shard, task, sts))
        split = SplitPass(self.splits.view(shard))
        if task is not None and live and (not hold or in_progress(shard)):
            split = await self.splits.advance(shard, task)
            waits.append(split.requeue)
        seen = with_split(shard, split.progress)
        verdict = shard_verdict(seen, task, sts, problems, refusal)
        since = lag_above_since(seen, task, self.splits.clock()) if task is not None else None
        fields = {
            "phase": str(verdict.phase),
            # the operator's fields are all in every apply: one left out would be removed
            "split": dump_progress(split.progress),
            "lagAboveSince": format_time(since) if since is not None else None,
        }
        verdicts = [*verdict.verdicts, *split.verdicts]
        if await self.write_status(shard, cond.paused(verdicts) if hold else verdicts, fields):
            await self.splits.announce(shard, split)
        return min((w for w in waits if w is not None), default=None)

    def _resolved(self, task: Task) -> bool:
        """Whether every StorageMapping and Collection the task names exists. Without them
        the runtime's Secrets are not all known, so the workload is left as it is."""
        cache = self.deps.cache
        namespace, _ = namespaced_name(task)
        return all(
            cache.collection(namespace, c) is not None for c in task_collections(task)
        ) and all(
            cache.storage_mapping(namespace, m) is not None for m in mapping_names(task, cache)
        )

    async def apply_workload(
        self, shard: Shard, task: Task, sts: StatefulSetView | None
    ) -> tuple[float | None, Refusal | None]:
        """Apply the shard's objects unless the StatefulSet carries their hash, or this
        operator applied them over what its cache still shows (its watch event is on the
        way), or the API server refused them and their back-off has not run out. Seconds
        until that is looked at again, and the API server's refusal, if it refused them."""
        mapping = self.deps.cache.storage_mapping(
            namespaced_name(task)[0], task.spec.storage_mapping
        )
        ctx = WorkloadInputs(
            shard,
            task,
            runtime_secret_names(task, self.deps.cache),
            self.deps.defaults,
            mapping.spec if mapping is not None else None,
        )
        objects = workload(ctx)
        stateful, claims_changed = keep_immutable_claims(
            objects[-1], sts.as_observed() if sts is not None else None
        )
        objects[-1] = stateful
        # One hash over all of them, kept on the StatefulSet (which is watched): a shard
        # whose objects are as they should be costs no request, even after a restart.
        digest = content_hash(objects)
        uid, seen = shard.metadata.uid or "", sts.resource_version if sts is not None else None
        if sts is not None and sts.applied_hash == digest:
            self.refusals.accepted(uid, WORKLOAD)
            return None, None
        if self.recent.current_at(uid, WORKLOAD, seen, None) == digest:
            return self.recent.held_for(uid, WORKLOAD), None
        standing = self.refusals.standing(uid, WORKLOAD, digest)
        if standing is not None:
            return standing[1], standing[0]
        # the pods' identity, rights, Service and PDB at once, and the StatefulSet only
        # after them, so no pod is refused for want of its ServiceAccount
        refusal = await self.apply_all(shard, objects[:-1]) or await self.apply_all(
            shard, [stamp(stateful, digest)]
        )
        if refusal is not None:
            return self.refusals.refused(uid, WORKLOAD, digest, refusal), refusal
        self.refusals.accepted(uid, WORKLOAD)
        self.recent.wrote_at(uid, WORKLOAD, seen, digest)
        if claims_changed:
            await self.deps.recorder.post(
                shard,
                events.Notice(
                    events.WARNING,
                    "VolumeTemplateKept",
                    "volumeSize and storageClassName apply to new shards only: a StatefulSet's "
                    "volume claim template cannot change, so existing volumes stay as they are",
                ),
            )
        return None, None

    async def roll(self, shard: Shard, task: Task, sts: StatefulSetView | None) -> float | None:
        """Replace one outdated pod, if it is time to (see rollout.py)."""
        if sts is None or task.spec.shards.disable or not sts.rolling or not sts.settled:
            return None
        namespace, name = namespaced_name(shard)
        listed = await self.deps.kube.list_objects(
            "v1", "Pod", namespace, labels=names.shard_selector(name)
        )
        pods = [PodView.from_k8s(p) for p in listed]
        step = next_step(pods, sts.update_revision, shard.status.primary, replicas(task))
        if step.done:
            return None
        if step.pod is not None:
            await self.deps.kube.delete("v1", "Pod", namespace, step.pod.name, uid=step.pod.uid)
            await self.deps.recorder.post(
                shard,
                events.Notice(
                    events.NORMAL,
                    "ReplacingPod",
                    f"deleting {step.role} pod {step.pod.name} so that it comes back with the "
                    f"current template ({sts.update_revision})",
                ),
            )
        else:
            log.debug("shard %s/%s: roll waits: %s", namespace, name, step.waiting)
        return ROLL_POLL_SECONDS
