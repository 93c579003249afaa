"""``shardkeeper shard``: runs one replica of a shard (see docs/shard-pod.md).

This module only wires the parts together: the pod's settings, logs, the light Kubernetes
client (:mod:`shardkeeper.kube.transport`), the status reporter, the admin endpoints and the
replica's state machine (:mod:`.replica`), with the processing core behind
:class:`CoreProcessing`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from shardkeeper.api.meta import quantity_value
from shardkeeper.api.shard import CommitPoint, ReplicaState, Shard
from shardkeeper.api.task import Task
from shardkeeper.kube.client import Transport
from shardkeeper.kube.config import locate
from shardkeeper.kube.election import Elector, KubeLeaseApi
from shardkeeper.kube.lease import process_identity
from shardkeeper.kube.transport import LightClient
from shardkeeper.runtime.core.faults import NO_RUNTIME_FAULTS, RuntimeFaults
from shardkeeper.runtime.core.hints import HintBoard, HintService, WriterAddress
from shardkeeper.runtime.core.metrics import RuntimeMetrics
from shardkeeper.runtime.core.timer import StopSignal
from shardkeeper.runtime.shell import logs
from shardkeeper.runtime.shell.admin_http import AdminServer
from shardkeeper.runtime.shell.handoff import open_shard_store
from shardkeeper.runtime.shell.lease import LeaseKeeper
from shardkeeper.runtime.shell.pause import pause_from_env
from shardkeeper.runtime.shell.podrole import RoleLabel, pod_patcher
from shardkeeper.runtime.shell.replica import (
    Processing,
    ProcessingFailed,
    Replica,
    ReportedProgress,
)
from shardkeeper.runtime.shell.reporting import ShardStatusApi, StatusReporter
from shardkeeper.runtime.shell.settings import PodSettings, SettingsError, settings_from_env
from shardkeeper.runtime.shell.startup import (
    KubeReader,
    ShardResources,
    StartupError,
    load_resources,
    load_shard,
    secret_resolver,
)
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.prune import PrunePlan
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions

log = logging.getLogger("shardkeeper.runtime")

# exit code for a pod whose environment or kubeconfig is unusable: the operator's bug
EXIT_BAD_SETUP = 2


class CoreProcessing:
    """The processing core's Processor, in the terms the replica reports."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def run(self, stop: StopSignal) -> None:
        from shardkeeper.runtime.core.errors import TaskError

        try:
            self.processor.run(stop)
        except TaskError as exc:
            raise ProcessingFailed(f"{type(exc).__name__}: {exc}") from exc

    def progress(self) -> ReportedProgress:
        progress = self.processor.progress()
        last = progress.last_commit
        return ReportedProgress(
            transactions=progress.transactions,
            last_commit=None if last is None else CommitPoint(time=last.time, offset=last.offset),
            sources=dict(progress.checkpoint),
            lag=progress.lag_bytes,
        )


class RuntimeHooks:
    """The real world behind :class:`.replica.Hooks`."""

    def __init__(
        self,
        settings: PodSettings,
        kube: Transport,
        metrics: RuntimeMetrics,
        timeout: float,
        *,
        faults: RuntimeFaults = NO_RUNTIME_FAULTS,
        role: RoleLabel | None = None,
        hints: HintBoard | None = None,
    ) -> None:
        self.faults = faults
        # learns the heads of the journals this pod writes from its appends
        self.hints = hints
        self.settings = settings
        # one identity per process, not the pod name: see kube.lease.process_identity
        self.identity = process_identity(settings.pod)
        self.kube = kube
        self.metrics = metrics
        self.timeout = timeout
        self.role = role
        self.reader = KubeReader(kube, settings.namespace, timeout=timeout)

    def load(self) -> ShardResources:
        return load_resources(self.reader, self.settings.shard)

    def objects(self, resources: ShardResources) -> ObjectStore:
        from shardkeeper.runtime.shell.storagemap import object_store

        try:
            return object_store(
                resources.mapping,
                resources.credentials,
                self.metrics.object_store_error,
                on_created=None if self.hints is None else self.hints.created,
            )
        except ValueError as exc:
            raise StartupError(str(exc)) from None

    def open_store(self, resources: ShardResources) -> ShardStore:
        own = RecoveryLog(self.objects(resources), resources.recovery_log)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        every = int(quantity_value(resources.task.spec.shards.snapshot_every))
        options = StoreOptions(snapshot_every_bytes=every)
        return open_shard_store(own, self.settings.data_dir, resources, options)

    def current_shard(self, resources: ShardResources) -> Shard:
        return load_shard(self.reader, resources.shard_name)

    def processor(
        self, resources: ShardResources, store: ShardStore, may_commit: Callable[[], bool]
    ) -> Processing:
        from shardkeeper.runtime.core.processor import Processor, ProcessorOptions, ShardContext
        from shardkeeper.runtime.shell.storagemap import store_prefix

        context = ShardContext(
            namespace=resources.namespace,
            task=resources.task,
            shard=resources.shard,
            collections=resources.collections,
            objects=store.log.store,
            prefix=store_prefix(resources.mapping),
            resolve_secret=secret_resolver(self.reader, resources.task.metadata.name or ""),
            bind_host=self.settings.pod_ip,
        )
        options = ProcessorOptions(faults=self.faults, may_commit=may_commit)
        return CoreProcessing(Processor(context, store, self.metrics, options))

    def lease(self, resources: ShardResources, notify: Callable[[], None]) -> LeaseKeeper:
        duration = max(1, round(self.settings.lease_duration))
        api = KubeLeaseApi(
            self.kube,
            self.settings.namespace,
            self.settings.shard,
            # a renewal that takes longer than a third of the duration has failed
            timeout=max(1.0, duration / 3),
            owner=resources.owner_reference(),
        )
        # waiting replicas look often, so a takeover follows an expiry closely
        return LeaseKeeper(
            Elector(api, self.identity, duration), poll=min(0.5, duration / 6), notify=notify
        )

    def task_generation(self, resources: ShardResources) -> int | None:
        obj = self.reader.custom_object(Task.PLURAL, resources.shard.spec.task)
        return None if obj is None else (obj.get("metadata") or {}).get("generation")

    def observe_state(self, state: ReplicaState) -> None:
        self.metrics.set_replica_state(state)
        if self.role is not None:
            self.role.set(state is ReplicaState.PRIMARY)

    def observe_recovery(self, seconds: float) -> None:
        self.metrics.recovery_duration_seconds.set(seconds)

    def observe_prune(self, plan: PrunePlan | None) -> None:
        if plan is None:
            self.metrics.recovery_log_prune_failures_total.inc()
            return
        self.metrics.recovery_log_prunes_total.inc()
        self.metrics.recovery_log_pruned_bytes_total.inc(plan.removed_bytes)
        self.metrics.recovery_log_pruned_objects_total.inc(len(plan.keys))


def kube_client(settings: PodSettings) -> LightClient:
    """The pod's service account in a cluster; the kubeconfig when run by hand. The light
    client, not the official one, whose import alone would double the process's memory."""
    return LightClient.connect(locate(settings.kubeconfig, os.environ), os.environ)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="shardkeeper shard",
        description="Run one replica of a shard. Configured by the environment the operator "
        "sets (docs/shard-pod.md): SHARDKEEPER_SHARD, POD_NAME, POD_NAMESPACE, POD_IP, "
        "SHARDKEEPER_DATA_DIR, SHARDKEEPER_ADMIN_PORT, SHARDKEEPER_LEASE_DURATION, "
        "SHARDKEEPER_LOG_LEVEL, and KUBECONFIG when run outside a pod.",
    )
    parser.parse_args(argv)
    try:
        settings = settings_from_env(os.environ)
        level = logs.level_of(settings.log_level)
        faults = pause_from_env(os.environ)
    except (SettingsError, ValueError) as exc:
        print(f"shardkeeper shard: {exc}", file=sys.stderr)
        return EXIT_BAD_SETUP
    context = logs.LogContext(settings.shard, settings.pod, settings.namespace)
    logs.configure(context, level)
    try:
        kube = kube_client(settings)
    except Exception as exc:
        log.error("cannot build a Kubernetes client: %s", exc)
        return EXIT_BAD_SETUP
    return run(settings, kube, context, faults)


def run(
    settings: PodSettings,
    kube: Transport,
    context: logs.LogContext,
    faults: RuntimeFaults = NO_RUNTIME_FAULTS,
) -> int:
    timeout = 10.0
    registry = CollectorRegistry()
    metrics = RuntimeMetrics(registry, settings.shard)
    status = ShardStatusApi(kube, settings.namespace, settings.shard, timeout=timeout)
    reporter = StatusReporter(
        status.apply,
        settings.namespace,
        settings.shard,
        settings.pod,
        min_interval=settings.status_interval,
    )
    role = RoleLabel(pod_patcher(kube, settings.namespace, settings.pod, timeout=timeout))
    board = HintBoard(on_hint=metrics.hints_given_total.inc)
    hints = HintService(board, WriterAddress(settings.pod_ip, settings.admin_port, settings.pod))
    hooks = RuntimeHooks(settings, kube, metrics, timeout, faults=faults, role=role, hints=board)
    replica = Replica(
        settings.pod,
        hooks,
        reporter,
        context,
        faults=faults,
        prune_every=settings.prune_every,
        hints=hints,
    )
    try:
        admin = AdminServer(
            settings.pod_ip,
            settings.admin_port,
            healthy=replica.healthy,
            ready=replica.ready,
            registry=registry,
            hints=board,
        )
    except OSError as exc:
        log.error(
            "cannot serve the admin endpoints on %s:%d: %s",
            settings.pod_ip,
            settings.admin_port,
            exc,
        )
        return EXIT_BAD_SETUP

    def on_signal(number: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the current transaction", signal.Signals(number).name)
        replica.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    admin.start()
    reporter.start()
    role.start()
    log.info(
        "starting",
        extra={
            "admin": f"{settings.pod_ip}:{settings.admin_port}",
            "data_dir": str(settings.data_dir),
        },
    )
    # the processing core's imports (psycopg, jsonschema, the kinds) take a second or two
    # on a busy machine: a replica pays them before it restores, not between the fence and
    # its first commit, which is the failover's or a split hand-off's pause
    import shardkeeper.runtime.core.processor  # noqa: F401

    code = replica.run()
    role.stop()
    admin.stop()
    log.info("exiting with %d", code)
    _exit_now_if_stuck(code)
    return code


def _exit_now_if_stuck(code: int) -> None:
    """Threads of the processor or of an S3 transfer still running (a replica that lost
    its Lease does not wait for them) would hold the interpreter's exit: leave at once.
    Everything that must be durable already is; the rest is what a kill -9 leaves."""
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
