"""The role machine in-process, with the real ShardStore on MinIO and the real Lease, and
a trivial processor: an unexpected processing error is FAILED, hands the Lease over and
starts over; a shutdown request ends the primary cleanly."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.runtime.shard_harness import counting_task, shard_object, storage_mapping
from tests.support.wait import wait_for

from shardkeeper.api.shard import ReplicaState, Shard
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import Task
from shardkeeper.kube.election import Elector, KubeLeaseApi
from shardkeeper.kube.transport import LightClient
from shardkeeper.runtime.shell.lease import LeaseKeeper
from shardkeeper.runtime.shell.logs import LogContext
from shardkeeper.runtime.shell.replica import Processing, Replica, ReportedProgress
from shardkeeper.runtime.shell.reporting import StatusReporter
from shardkeeper.runtime.shell.startup import ShardResources
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.prune import PrunePlan
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions
from shardkeeper_dev.environment import EnvInfo


class Ticker:
    """Commits one row per transaction until stopped; fails once after ``fail_after``."""

    def __init__(self, store: ShardStore, fail_after: int | None) -> None:
        self.store = store
        self.fail_after = fail_after
        self.commits = 0

    def run(self, stop: threading.Event) -> None:
        with self.store.transaction() as txn:
            txn.execute("CREATE TABLE IF NOT EXISTS ticks (epoch INTEGER)")
        while not stop.is_set():
            with self.store.transaction() as txn:
                txn.execute("INSERT INTO ticks VALUES (?)", (self.store.epoch,))
            self.commits += 1
            if self.fail_after is not None and self.commits >= self.fail_after:
                raise RuntimeError("the disk is on fire")
            stop.wait(0.05)

    def progress(self) -> ReportedProgress:
        return ReportedProgress(transactions=self.commits)


@dataclasses.dataclass
class Hooks:
    resources: ShardResources
    objects: ObjectStore
    data_dir: Path
    kube: LightClient
    fail_first: bool
    states: list[ReplicaState] = dataclasses.field(default_factory=list)
    processors: list[Ticker] = dataclasses.field(default_factory=list)

    def load(self) -> ShardResources:
        return self.resources

    def open_store(self, resources: ShardResources) -> ShardStore:
        log = RecoveryLog(self.objects, resources.recovery_log)
        return ShardStore.open(
            self.data_dir, log, 0, options=StoreOptions(background_snapshots=False)
        )

    def processor(
        self, resources: ShardResources, store: ShardStore, may_commit: Callable[[], bool]
    ) -> Processing:
        ticker = Ticker(store, 2 if self.fail_first and not self.processors else None)
        self.processors.append(ticker)
        return ticker

    def lease(self, resources: ShardResources, notify: Callable[[], None]) -> LeaseKeeper:
        api = KubeLeaseApi(self.kube, resources.namespace, resources.shard_name, timeout=2.0)
        return LeaseKeeper(Elector(api, "replica-0", 2), poll=0.2, notify=notify)

    def task_generation(self, resources: ShardResources) -> int | None:
        return 1

    def current_shard(self, resources: ShardResources) -> Shard:
        return resources.shard

    def observe_state(self, state: ReplicaState) -> None:
        self.states.append(state)

    def observe_recovery(self, seconds: float) -> None:
        pass

    def observe_prune(self, plan: PrunePlan | None) -> None:
        pass


def resources(namespace: str, dev_env: EnvInfo, bucket: str) -> ShardResources:
    return ShardResources(
        namespace=namespace,
        shard=Shard.from_k8s(shard_object(namespace)),
        task=Task.from_k8s(counting_task(0)),
        collections={},
        mapping=StorageMapping.from_k8s(storage_mapping(dev_env, bucket)),
        credentials={},
    )


def test_an_unexpected_error_hands_over_and_starts_over(
    runtime_kube: LightClient, dev_env: EnvInfo, namespace: str, bucket: str, tmp_path: Path
) -> None:
    objects = ObjectStore(
        make_s3_client(
            endpoint=dev_env.s3_endpoint,
            access_key=dev_env.s3_access_key,
            secret_key=dev_env.s3_secret_key,
            region=dev_env.s3_region,
        ),
        bucket,
    )
    shard = resources(namespace, dev_env, bucket)
    hooks = Hooks(shard, objects, tmp_path / "data", runtime_kube, fail_first=True)
    applied: list[tuple[str, dict[str, Any]]] = []
    reporter = StatusReporter(
        lambda manager, body: applied.append((manager, body)),
        namespace,
        shard.shard_name,
        "replica-0",
    )
    reporter.start()
    replica = Replica(
        "replica-0", hooks, reporter, LogContext(shard.shard_name, "replica-0", namespace)
    )
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(replica.run()))
    thread.start()
    try:
        wait_for(lambda: len(hooks.processors) == 2, timeout=60, what="a second primary term")
        wait_for(lambda: hooks.processors[1].commits >= 3, timeout=30, what="commits after it")
        assert replica.ready() == (True, "PRIMARY, epoch 2")
    finally:
        replica.request_stop()
        thread.join(60)
    assert codes == [0]
    assert hooks.states == [
        ReplicaState.IDLE,
        ReplicaState.BACKFILL,
        ReplicaState.STANDBY,
        ReplicaState.PRIMARY,
        ReplicaState.FAILED,  # the processor raised
        ReplicaState.IDLE,
        ReplicaState.BACKFILL,
        ReplicaState.STANDBY,
        ReplicaState.PRIMARY,
        ReplicaState.IDLE,  # shut down
    ]
    entries = [
        b["status"]["replicas"][0] for m, b in applied if m.startswith("shardkeeper-replica")
    ]
    failed = [e for e in entries if e["state"] == "FAILED"]
    assert failed
    assert failed[0]["message"] == "RuntimeError: the disk is on fire"
    assert (entries[-1]["state"], entries[-1]["message"]) == ("IDLE", "shut down")
    # the Lease was handed over after the failure (a new acquisition) and after the stop
    lease = KubeLeaseApi(runtime_kube, namespace, shard.shard_name, timeout=5.0).read()
    assert lease is not None
    assert lease["spec"].get("holderIdentity") is None
    assert lease["spec"]["leaseTransitions"] == 1
    # the second term fenced with a newer epoch, and committed on top of the first
    store = hooks.open_store(shard)
    try:
        assert store.last_commit is not None
        assert store.last_commit.epoch == 2
    finally:
        store.close()
