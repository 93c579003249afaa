"""The apply-memory of a shard's workload: the hash stamped on the StatefulSet, and
RecentWrites while the cache has not yet seen an apply. Unchanged objects cost no request;
a change costs exactly one round of applies."""

from __future__ import annotations

from tests.support.clock import Clock
from tests.support.fake_api import Request
from tests.unit.controller.seeded import NAMESPACE, SHARD, TASK, Cluster, run

from shardkeeper.controller.reconcilers.base import RecentWrites
from shardkeeper.controller.reconcilers.shard import ShardReconciler
from shardkeeper.controller.specs import names


def applies(cluster: Cluster) -> list[Request]:
    return [r for r in cluster.kube.writes() if r.verb == "apply"]


def edit_task(cluster: Cluster, **spec: object) -> None:
    task = cluster.find("Task", TASK)
    task["spec"]["shards"].update(spec)
    cluster.kube.put(task)
    cluster.sync()


def test_a_shard_whose_objects_are_as_applied_costs_no_request() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        assert await cluster.reconcile_shard() is None
        assert cluster.kube.writes() == []
        assert [r.verb for r in cluster.kube.requests] == [], "not even a read"

    run(body)


def test_a_reconcile_before_the_cache_saw_the_apply_waits_for_it_instead() -> None:
    async def body() -> None:
        cluster = Cluster()
        cluster.add_task()
        await cluster.reconcile_task()
        await cluster.shards.reconcile(NAMESPACE, SHARD)
        cluster.kube.clear_log()
        # the same pass again: the cache shows no StatefulSet yet
        wait = await cluster.shards.reconcile(NAMESPACE, SHARD)
        assert applies(cluster) == []
        assert wait is not None
        assert 0 < wait <= RecentWrites.HOLD_SECONDS

    run(body)


def test_a_record_whose_cache_never_moves_on_lapses_and_the_apply_is_made_again() -> None:
    async def body() -> None:
        cluster = Cluster()
        clock = Clock()
        cluster.shards.recent = RecentWrites(clock)
        cluster.add_task()
        await cluster.reconcile_task()
        await cluster.shards.reconcile(NAMESPACE, SHARD)
        clock.now += RecentWrites.HOLD_SECONDS
        cluster.kube.clear_log()
        await cluster.shards.reconcile(NAMESPACE, SHARD)
        assert [r.kind for r in applies(cluster)][-1] == "StatefulSet"

    run(body)


def test_a_changed_spec_is_applied_once() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        edit_task(cluster, hotStandbys=2)
        await cluster.shards.reconcile(NAMESPACE, SHARD)
        await cluster.shards.reconcile(NAMESPACE, SHARD)  # before the cache saw it
        await cluster.settle()
        await cluster.reconcile_shard()  # after
        assert [r.kind for r in applies(cluster)].count("StatefulSet") == 1
        assert cluster.find("StatefulSet", SHARD)["spec"]["replicas"] == 3

    run(body)


def test_a_restarted_operator_finds_the_hash_on_the_statefulset_and_applies_nothing() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        fresh = ShardReconciler(cluster.deps)  # no memory of what was applied
        await fresh.reconcile(NAMESPACE, SHARD)
        assert applies(cluster) == []

    run(body)


def test_a_statefulset_whose_hash_was_edited_away_is_applied_again() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        sts = cluster.find("StatefulSet", SHARD)
        digest = sts["metadata"]["annotations"].pop(names.APPLIED_HASH_ANNOTATION)
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = "elsewhere/image:1"
        cluster.kube.put(sts)
        cluster.sync()
        await cluster.reconcile_shard()
        assert [r.kind for r in applies(cluster)][-1] == "StatefulSet"
        sts = cluster.find("StatefulSet", SHARD)
        assert sts["metadata"]["annotations"][names.APPLIED_HASH_ANNOTATION] == digest
        image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == cluster.deps.defaults.shard_image, "the stray edit is put right"

    run(body)


def test_a_new_volume_size_keeps_the_existing_claims_and_says_so_once() -> None:
    async def body() -> None:
        cluster = Cluster()
        await cluster.running_task()
        claims = cluster.find("StatefulSet", SHARD)["spec"]["volumeClaimTemplates"]
        edit_task(cluster, volumeSize="5Gi", hotStandbys=2)
        # the fake, like the API server, refuses a StatefulSet apply that changes claims (422)
        await cluster.reconcile_shard()
        await cluster.reconcile_shard()
        sts = cluster.find("StatefulSet", SHARD)
        assert sts["spec"]["volumeClaimTemplates"] == claims
        assert sts["spec"]["replicas"] == 3, "the rest of the change is applied"
        warnings = [e for e in cluster.kube.events() if e[1] == "VolumeTemplateKept"]
        assert warnings == [("Warning", "VolumeTemplateKept", SHARD)]

    run(body)
