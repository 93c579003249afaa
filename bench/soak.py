"""A long soak: continuous ingest into a derivation with a hot standby that prunes its own
recovery log, with a failover and a restore on the way; what the log holds over time.

Real ``shardkeeper shard`` processes (the set-up of ``tests/runtime``) count documents per
key while a feeder appends to the source collection without pause. Every ``--sample-every``
seconds the soak lists the shard's recovery-log directory in the bucket (fragments,
snapshots and the rest, as ``shardkeeper storage usage`` sums them) and reads how far the
log's head has gone (all the bytes ever written to it). A third of the way through, the
primary is killed and the standby takes over; two thirds through, the new standby's volume
is wiped so that it restores from what pruning left, and then the primary is killed again,
so the restored replica carries on. At the end the outputs are checked: each key counted
1, 2, ... up to the documents sent for it, each once.

The figure is the most the log held in the second half of the run, against the bytes the
log's head advanced over the whole run: bounded storage is a ratio that falls as the run
gets longer. It is not part of ``make bench`` (it takes ``--minutes``); run it with
``make soak`` (``MINUTES=30`` by default; it starts an environment of its own) or by hand
against a running environment:
``python -m bench.soak --env-dir DIR --minutes 30``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.runtime.shard_harness import (
    PREFIX,
    Feeder,
    ShardSetup,
    check_counts_exact,
    wait_outputs,
)
from tests.support.wait import wait_for

from bench.bench_failover import (
    apply_crds,
    primary_and_standby,
    restart_exited,
    shard_setup,
    start_replicas,
)
from bench.harness import Context, Result, Run, by_hand
from shardkeeper.storage.layout import object_key
from shardkeeper.storage.usage import FRAGMENTS_DIR

KEYS = [f"k{i:03d}-{'x' * 100}" for i in range(200)]


def log_usage(setup: ShardSetup) -> dict[str, int]:
    """Objects and bytes under the shard's recovery-log directory, fragments apart."""
    spec = setup.get_shard()["spec"]
    root = object_key(PREFIX, spec["recoveryLog"]).rstrip("/") + "/"
    held = {"objects": 0, "bytes": 0, "fragment_bytes": 0}
    for info in setup.objects.list(root):
        held["objects"] += 1
        held["bytes"] += info.size
        if info.key[len(root) :].startswith(FRAGMENTS_DIR + "/"):
            held["fragment_bytes"] += info.size
    return held


def sample(setup: ShardSetup, started: float, feeder: Feeder) -> dict[str, Any]:
    status = setup.get_shard().get("status") or {}
    return {
        "t_s": round(time.monotonic() - started, 1),
        **log_usage(setup),
        "log_head": int(status.get("recoveryLogHead") or 0),
        "documents_sent": sum(feeder.sent.values()),
        "last_prune": (status.get("lastPrune") or {}).get("at"),
    }


def soak(
    ctx: Context, kube_api: Any, out: Run, minutes: float, *, sample_every: float, logs: Path
) -> None:
    """``logs``: where the replicas' logs are copied at the end, however it ends."""
    prune_every = "10s" if ctx.quick else "1m"
    with shard_setup(
        ctx,
        kube_api,
        hot_standbys=1,
        prefix="bench-soak",
        shard_settings={"snapshotEvery": "2Mi", "pruneEvery": prune_every},
    ) as setup:
        replicas = start_replicas(ctx, setup, 2, SHARDKEEPER_STATUS_INTERVAL="2")
        feeder = Feeder(setup)
        samples: list[dict[str, Any]] = []
        events: list[str] = []
        # replicas that exited on their own (lost the Lease), restarted as a pod would be
        restarts: list[str] = []
        try:
            primary_and_standby(replicas, restarts)
            started = time.monotonic()
            duration = minutes * 60
            failover_at, restore_at = duration / 3, 2 * duration / 3
            with feeder.sending(KEYS[:40], KEYS[40:80], every=0.05):
                next_sample = started
                while (elapsed := time.monotonic() - started) < duration:
                    if failover_at is not None and elapsed >= failover_at:
                        primary, _ = primary_and_standby(replicas, restarts)
                        primary.kill()
                        events.append(f"{elapsed:.0f}s: killed primary {primary.pod}")
                        primary.start()
                        failover_at = None
                    if restore_at is not None and elapsed >= restore_at:
                        primary, standby = primary_and_standby(replicas, restarts)
                        standby.kill()
                        shutil.rmtree(standby.data_dir)
                        standby.data_dir.mkdir(parents=True)
                        standby.start()
                        wait_for(
                            lambda s=standby: (
                                restart_exited([s], restarts) or s.state() == "STANDBY"
                            ),
                            timeout=600,
                            what=f"{standby.pod} to restore and report STANDBY",
                        )
                        events.append(f"{elapsed:.0f}s: {standby.pod} restored on an empty volume")
                        primary.kill()
                        events.append(f"{elapsed:.0f}s: killed primary {primary.pod}")
                        primary.start()
                        restore_at = None
                    restart_exited(replicas, restarts)
                    if time.monotonic() >= next_sample:
                        samples.append(sample(setup, started, feeder))
                        print(f"soak {samples[-1]}", flush=True)
                        next_sample += sample_every
                    time.sleep(1.0)
            total = sum(feeder.sent.values())
            wait_outputs(setup, total, timeout=600)
            check_counts_exact(setup, feeder.sent)
            samples.append(sample(setup, started, feeder))
        finally:
            for replica in replicas:
                replica.stop()
            logs.mkdir(parents=True, exist_ok=True)
            for replica in replicas:
                shutil.copy(replica.log_path, logs / f"{replica.pod}.log")
    half = [s for s in samples if s["t_s"] >= minutes * 30]
    held = max(s["bytes"] for s in half)
    written = samples[-1]["log_head"] - samples[0]["log_head"]
    out.add(
        Result(
            "storage.soak.recovery_log_bytes_held",
            float(held),
            "bytes",
            float(written),
            "lower",
            {
                "minutes": minutes,
                "prune_every": prune_every,
                "snapshot_every": "2Mi",
                "documents": total,
                "events": events,
                "replica_starts": [r.starts for r in replicas],
                "unexpected_restarts": restarts,
                "samples": samples,
            },
            target="bounded: the most held in the second half, a falling share of all written",
        )
    )


def run(ctx: Context, out: Run, args: argparse.Namespace) -> None:
    from kubernetes import config

    apply_crds(ctx)
    kube_api = config.new_client_from_config(config_file=str(ctx.env.kubeconfig))
    minutes = 2.0 if ctx.quick else args.minutes
    sample_every = 10.0 if ctx.quick else args.sample_every
    soak(ctx, kube_api, out, minutes, sample_every=sample_every, logs=args.out.with_suffix(".logs"))


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to feed")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a.startswith("--env-dir") for a in argv):
        return by_hand("soak", argv, run, options=options)
    # no environment given (``make soak``): one of its own, for this run only
    from shardkeeper_dev.environment import Environment

    with tempfile.TemporaryDirectory(prefix="shardkeeper-soak-") as tmp:
        env = Environment(Path(tmp))
        env.up(die_with_parent=True)
        try:
            return by_hand("soak", [*argv, "--env-dir", tmp], run, options=options)
        finally:
            env.down()


if __name__ == "__main__":
    sys.exit(main())
