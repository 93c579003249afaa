"""Shard runtime benchmarks: failover with a hot standby, hand-over, and recovery time.

Real ``shardkeeper shard`` processes run a derivation that counts documents per key (the
set-up of ``tests/runtime``), against the environment's API server and MinIO:

* **failover**: kill -9 of the primary, then a batch of documents; the time until the hot
  standby has committed as the new primary, set against the Lease duration (target:
  at most the duration + 2 s), for two durations;
* **hand-over**: SIGTERM of the primary; the time from its exit to the standby's first
  commit (the Lease is released, so no expiry is waited for);
* **recovery**: the time a replica takes to restore the store from the recovery log alone
  (an empty volume) against restoring from a volume that matches the log (only the tail
  is replayed), for a log of many commits.

Run by hand against a running environment with
``python -m bench.bench_failover --env-dir DIR [--quick]``.
"""

from __future__ import annotations

import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.runtime.shard_harness import (
    Feeder,
    ReplicaProcess,
    ShardSetup,
    committed_after,
    counting_shard,
    output_documents,
    pod_network,
    roles,
)
from tests.support.wait import wait_for

from bench.harness import Context, Result, Run, by_hand
from shardkeeper_dev import tools

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
# what the issue allows beyond the Lease duration for a failover
FAILOVER_SLACK = 2.0


def apply_crds(ctx: Context) -> None:
    kubectl = [str(tools.binary_path("kubectl")), f"--kubeconfig={ctx.env.kubeconfig}"]
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(CRD_DIR)], check=True)
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
        check=True,
        capture_output=True,
    )


@contextmanager
def shard_setup(
    ctx: Context, kube_api: Any, hot_standbys: int, prefix: str = "bench-failover", **task: Any
) -> Iterator[ShardSetup]:
    """A fresh namespace and bucket with a counting derivation (``task``: the options of
    ``counting_task``); removed afterwards."""
    from kubernetes import client

    from shardkeeper_dev.environment import s3_client

    name = f"{prefix}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    s3 = s3_client(ctx.env)
    s3.create_bucket(Bucket=name)
    try:
        yield counting_shard(kube_api, ctx.env, name, name, hot_standbys=hot_standbys, **task)
    finally:
        core.delete_namespace(name)
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=name)


def start_replicas(ctx: Context, setup: ShardSetup, count: int, **env: str) -> list[ReplicaProcess]:
    """``count`` replicas of the setup's shard, started on addresses of their own."""
    base = ctx.workdir / setup.namespace
    network = pod_network()
    replicas = [
        ReplicaProcess(setup, f"replica-{i}", f"{network}.{i + 1}", base, **env)
        for i in range(count)
    ]
    for replica in replicas:
        replica.start()
    return replicas


def restart_exited(replicas: list[ReplicaProcess], restarts: list[str]) -> None:
    """What the pod's restart policy would do for a replica that exited on its own (exit 1:
    it lost the Lease); ``restarts`` keeps count, as a figure of the run."""
    for replica in replicas:
        if not replica.running():
            restarts.append(f"{replica.pod} exited with {replica.wait(0)}")
            replica.start()


def primary_and_standby(
    replicas: list[ReplicaProcess], restarts: list[str]
) -> tuple[ReplicaProcess, ReplicaProcess]:
    def probe() -> tuple[ReplicaProcess, ReplicaProcess] | None:
        restart_exited(replicas, restarts)
        return roles(*replicas)

    return wait_for(probe, timeout=120, what="a PRIMARY and a STANDBY")


def commit_after(
    standby: ReplicaProcess, moment: float, replicas: list[ReplicaProcess], restarts: list[str]
) -> float:
    def probe() -> float | None:
        restart_exited(replicas, restarts)
        return committed_after(standby, moment)

    return wait_for(probe, timeout=120, what=f"{standby.pod} to commit")


# -- failover and hand-over ------------------------------------------------------------------


def bench_failover(ctx: Context, kube_api: Any, out: Run, lease: int, trials: int) -> None:
    failovers: list[float] = []
    handovers: list[float] = []
    restarts: list[str] = []
    with shard_setup(ctx, kube_api, hot_standbys=1) as setup:
        replicas = start_replicas(ctx, setup, 2, SHARDKEEPER_LEASE_DURATION=str(lease))
        feeder = Feeder(setup)
        try:
            for trial in range(trials):
                primary, standby = primary_and_standby(replicas, restarts)
                # kill at a different point of the primary's renewal period each time
                time.sleep(lease / 3 * (trial + 0.5) / trials)
                killed_at = time.time()
                primary.kill()
                feeder.send([f"k{i % 10}" for i in range(20)])
                took = commit_after(standby, killed_at, [standby], restarts)
                failovers.append(took - killed_at)
                primary.start()
            primary, standby = primary_and_standby(replicas, restarts)
            stopped_at = time.time()
            primary.signal(signal.SIGTERM)
            primary.wait(60)
            exited_at = time.time()
            feeder.send([f"k{i % 10}" for i in range(20)])
            took = commit_after(standby, exited_at, [standby], restarts)
            handovers.append(took - exited_at)
            shutdown = exited_at - stopped_at
        finally:
            for replica in replicas:
                replica.stop()
    params = {
        "lease_duration_s": lease,
        "trials": trials,
        "failovers_s": [round(f, 3) for f in failovers],
        # replicas that exited on their own (lost the Lease) and were restarted
        "unexpected_restarts": restarts,
    }
    out.add(
        Result(
            f"shard.failover.max.lease_{lease}s",
            max(failovers),
            "s",
            float(lease),
            "lower",
            params,
            target=f"<= lease duration + {FAILOVER_SLACK:g}s",
        )
    )
    out.add(
        Result(
            f"shard.failover.median.lease_{lease}s",
            statistics.median(failovers),
            "s",
            float(lease),
            "lower",
            params,
            target="informational",
        )
    )
    out.add(
        Result(
            f"shard.handover.lease_{lease}s",
            handovers[0],
            "s",
            float(lease),
            "lower",
            {"lease_duration_s": lease, "shutdown_s": round(shutdown, 3)},
            target="well under the lease duration (the Lease is released)",
        )
    )


# -- recovery -----------------------------------------------------------------------------------

_RESTORED = re.compile(r"restored from (\w+) .*: (\d+) commits, (\d+) bytes replayed in ([\d.]+)s")


def restored(replica: ReplicaProcess, after: int) -> tuple[str, int, int, float] | None:
    """The restore report logged by the replica's start number ``after`` or later."""
    found = [m for line in replica.log_lines() if (m := _RESTORED.search(line["msg"]))]
    if len(found) < after:
        return None
    source, commits, size, seconds = found[after - 1].groups()
    return source, int(commits), int(size), float(seconds)


def bench_recovery(ctx: Context, kube_api: Any, out: Run, documents: int) -> None:
    with shard_setup(ctx, kube_api, hot_standbys=0) as setup:
        base = ctx.workdir / setup.namespace
        network = pod_network()
        builder = ReplicaProcess(setup, "replica-0", f"{network}.1", base)
        builder.start()
        try:
            builder.wait_state("PRIMARY", timeout=120)
            feeder = Feeder(setup)
            # a key per document, fed in small batches while the shard processes: a log of
            # many commits, each of many pages, as a busy shard writes it
            batch = documents // 100
            keys = [f"key-{i:08d}" for i in range(documents)]
            for start in range(0, documents, batch):
                feeder.send(keys[start : start + batch])
                time.sleep(0.1)
            wait_for(
                lambda: len(output_documents(setup)) >= documents,
                timeout=600,
                what=f"{documents} documents processed",
                interval=1.0,
            )
            builder.signal(signal.SIGTERM)
            builder.wait(60)
            # the same volume, which matches the log: only what follows it is replayed
            builder.start()
            volume = wait_for(lambda: restored(builder, 2), timeout=120, what="restore")
            builder.signal(signal.SIGTERM)
            builder.wait(60)
            # an empty volume: everything comes from the recovery log
            fresh = ReplicaProcess(setup, "replica-1", f"{network}.2", base)
            fresh.start()
            try:
                log_only = wait_for(lambda: restored(fresh, 1), timeout=600, what="restore")
            finally:
                fresh.stop()
        finally:
            builder.stop()
    assert volume[0] == "volume", volume
    assert log_only[0] == "empty", log_only
    params = {
        "documents": documents,
        "commits_replayed": log_only[1],
        "bytes_replayed": log_only[2],
        "volume_commits_replayed": volume[1],
    }
    out.add(
        Result(
            "shard.recovery.log_only",
            log_only[3],
            "s",
            volume[3],
            "lower",
            params,
            target="informational",
        )
    )
    out.add(
        Result(
            "shard.recovery.matching_volume",
            volume[3],
            "s",
            log_only[3],
            "lower",
            params,
            target="informational (a fraction of the log-only time)",
        )
    )


def run(ctx: Context, out: Run) -> None:
    from kubernetes import config

    apply_crds(ctx)
    kube_api = config.new_client_from_config(config_file=str(ctx.env.kubeconfig))
    leases = (3,) if ctx.quick else (5, 15)
    for lease in leases:
        bench_failover(ctx, kube_api, out, lease, trials=2 if ctx.quick else 4)
    bench_recovery(ctx, kube_api, out, documents=5_000 if ctx.quick else 100_000)


def main(argv: list[str] | None = None) -> int:
    return by_hand("bench_failover", argv, lambda ctx, out, _: run(ctx, out))


if __name__ == "__main__":
    sys.exit(main())
