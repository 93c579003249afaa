"""Split benchmarks: the hand-off pause, the whole split's time, and throughput before
and after a split.

Real ``shardkeeper shard`` processes run a derivation that counts documents per key (the
set-up of ``tests/runtime``) against the environment's API server and MinIO. The bench
makes the operator's writes of a split itself, each as soon as its condition holds (the
child Shard and the parent's ``splitTargets``; the parent narrowed once the child is a
STANDBY within 4 MiB, the operator's CatchUp rule; then Finish), so the figures are the
data plane's and not the operator's reaction times (but for ``split.total_time``). The
parent's store is filled with incompressible rows first (``randomblob``), so its size is
what a restore must fetch.

* ``split.handoff_pause``: from the parent's last commit before the hand-off fence to the
  first commit after it of the slower side (the narrowed parent or the child), taken from
  the commit fragments' times in MinIO. Five splits in a row per store size (two quick), one parent
  (each split halves its key range again; rows outside a range are kept, so every child
  restores the whole store). Ratio: the median pause of the largest store ÷ that of the
  smallest (target ≤ 1.2: the pause must not grow with the state); each size is also
  reported against ``maxTxnDuration`` + 2 s.
* ``split.total_time``: one split asked for with ``spec.split`` and run by the operator
  and the process node, from the request to the step ``Done`` (status.split.steps), of
  the largest store ÷ the raw sequential boto3 download of the parent's recovery log up
  to the hand-off fence (target ≤ 2). ``split.data_plane_time`` is the same span for the
  bench's own writes (child Shard created to both sides' first commit), informational.
* ``split.throughput``: documents per second of a backlog processed by the two shards
  after a 1 → 2 split ÷ by the one shard before it, as measured on this machine.

Run by hand against a running environment with
``python -m bench.bench_split --env-dir DIR [--quick] [--only PART]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import signal
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.runtime.shard_harness import (
    PREFIX,
    TASK,
    Feeder,
    ReplicaProcess,
    ShardSetup,
    apply,
    caught_up,
    child_shard,
    output_documents,
    patch_spec,
    pod_network,
    wait_outputs,
)
from tests.support.wait import wait_for

from bench.bench_failover import apply_crds, shard_setup
from bench.bench_operator import Cluster, Operator
from bench.harness import Context, Result, Run, by_hand
from shardkeeper.api.meta import GROUP
from shardkeeper.api.shard import shard_name
from shardkeeper.runtime.core.routing import Ranges
from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.layout import object_key, recovery_log_name
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper_dev.environment import s3_client

MAX_TXN = 0.5
# what the issue allows beyond maxTxnDuration for a hand-off
PAUSE_SLACK = 2.0
# the operator's CatchUp rule: the child is a STANDBY this close to the parent's head
CATCH_UP = 4 << 20
PAD = 1 << 20
FILL_MIGRATIONS = ("CREATE TABLE counts (key TEXT PRIMARY KEY, n INTEGER NOT NULL, pad BLOB)",)
# a document with a ``pad`` adds that many random bytes to the store; the others count
FILL_SQL = (
    "INSERT INTO counts (key, n, pad) VALUES ($key, 1, randomblob(coalesce($pad, 0))) "
    "ON CONFLICT (key) DO UPDATE SET n = n + 1 RETURNING key, n"
)
KEYS = [f"key-{i:03d}" for i in range(64)]
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class SplitFigures:
    pause: float  # s, last commit before the fence to the slower side's first after it
    parent_pause: float  # s, to the narrowed parent's first commit after the fence
    child_pause: float  # s, to the child's first commit
    total: float  # s, child Shard created to that first commit
    fence_offset: int
    restore_seconds: float  # what the child's restore logged, for the record


class Splitter:
    """The operator's writes of one key split after another, on one parent."""

    def __init__(self, ctx: Context, setup: ShardSetup) -> None:
        self.ctx = ctx
        self.setup = setup
        self.s3 = s3_client(ctx.env)
        self.network = pod_network()
        self.started: list[ReplicaProcess] = []

    def spawn(self, setup: ShardSetup, pod: str) -> ReplicaProcess:
        ip = f"{self.network}.{len(self.started) + 1}"
        replica = ReplicaProcess(setup, pod, ip, self.ctx.workdir / setup.namespace)
        replica.start()
        self.started.append(replica)
        return replica

    def stop_all(self) -> None:
        for replica in self.started:
            replica.stop()

    def log(self, name: str) -> RecoveryLog:
        return RecoveryLog(self.setup.objects, object_key(PREFIX, name))

    def fragments(self, log: RecoveryLog) -> list[tuple[int, float, str]]:
        """``(begin, time written, key)`` of the log's fragments, in order. The time is
        MinIO's, in milliseconds: one clock for every writer here."""
        prefix = log.journal.prefix + "/"
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.setup.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if "/" not in name:  # not snapshots, claims or forks
                    found.append((int(name, 16), obj["LastModified"].timestamp(), obj["Key"]))
        return sorted(found)

    def first_commit_after(self, log: RecoveryLog, offset: int) -> float | None:
        for begin, at, _ in self.fragments(log):
            if begin > offset:
                fragment = next(iter(log.journal.read(begin)))
                if fragment.kind is FragmentKind.DATA:
                    return at
        return None

    def last_commit_before(self, log: RecoveryLog, offset: int) -> float:
        before = [at for begin, at, _ in self.fragments(log) if begin < offset]
        assert before, "no commit before the fence"
        return before[-1]

    def split(self, pivot: int, keep_child: bool = False) -> SplitFigures:
        setup = self.setup
        spec = child_shard(setup.namespace, setup.get_shard(), pivot)
        child = spec["metadata"]["name"]
        child_setup = dataclasses.replace(setup, shard=child)
        requested = time.time()
        apply(setup.kube_api, setup.namespace, spec)
        patch_spec(setup, setup.shard, {"splitTargets": [child]})
        replica = self.spawn(child_setup, f"{child}-0")
        wait_for(
            lambda: (
                child_setup.replica(replica.pod).get("state") == "STANDBY"
                and caught_up(child_setup, replica.pod, CATCH_UP)
            ),
            timeout=900,
            what=f"{child} to catch up",
            interval=0.2,
        )
        patch_spec(setup, setup.shard, {"keyEnd": f"{pivot - 1:08x}"})
        replica.wait_state("PRIMARY", timeout=120)
        parent_log = self.log(recovery_log_name(setup.namespace, TASK, 0, 0))
        child_log = self.log(spec["spec"]["recoveryLog"])
        narrowed = Ranges(key_end=pivot - 1)
        fence = wait_for(
            lambda: next(
                (c.offset for c in parent_log.claims() if Ranges.from_claim(c.owns) == narrowed),
                None,
            ),
            timeout=60,
            what="the parent's narrowed fence",
        )
        child_fence = wait_for(
            lambda: max((c.offset for c in child_log.claims()), default=None),
            timeout=60,
            what="the child's fence",
        )
        parent_first = wait_for(
            lambda: self.first_commit_after(parent_log, fence),
            timeout=60,
            what="the parent's first commit after the fence",
            interval=0.2,
        )
        child_first = wait_for(
            lambda: self.first_commit_after(child_log, child_fence),
            timeout=60,
            what="the child's first commit",
            interval=0.2,
        )
        before = self.last_commit_before(parent_log, fence)
        first_after = max(parent_first, child_first)
        # the operator's Finish step
        patch_spec(child_setup, child, {"splitSource": None})
        patch_spec(setup, setup.shard, {"splitTargets": None})
        restore = restored_seconds(replica)
        if not keep_child:
            replica.signal(signal.SIGTERM)
            replica.wait(60)
        return SplitFigures(
            first_after - before,
            parent_first - before,
            child_first - before,
            first_after - requested,
            fence,
            restore,
        )

    def raw_download(self, up_to: int) -> tuple[float, int]:
        """Seconds and bytes of a sequential boto3 download of the parent's log fragments
        below ``up_to`` into a local file: what a restore from the log alone fetches."""
        log = self.log(recovery_log_name(self.setup.namespace, TASK, 0, 0))
        keys = [key for begin, _, key in self.fragments(log) if begin < up_to]
        return download_sequentially(
            self.s3, self.setup.bucket, sorted(keys), self.ctx.workdir / "raw-download"
        )


def download_sequentially(s3: Any, bucket: str, keys: list[str], target: Path) -> tuple[float, int]:
    """Seconds and bytes of raw boto3 ``get_object`` calls of ``keys``, one after the other,
    into the file ``target`` (removed after): the baseline a restore is compared with."""
    size = 0
    started = time.monotonic()
    with target.open("wb") as out:
        for key in keys:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
            while chunk := body.read(1 << 20):
                out.write(chunk)
                size += len(chunk)
    elapsed = time.monotonic() - started
    target.unlink()
    return elapsed, size


def restored_seconds(replica: ReplicaProcess) -> float:
    for line in replica.log_lines():
        if line["msg"].startswith("restored from "):
            return float(line["msg"].rsplit(" in ", 1)[1].removesuffix("s"))
    return float("nan")


def fill(setup: ShardSetup, feeder: Feeder, size: int) -> None:
    """Rows of ``PAD`` random bytes until the store holds ``size``; a few per transaction."""
    rows = max(1, size // PAD)
    done = len(output_documents(setup))
    for start in range(0, rows, 8):
        batch = [f"fill-{i:06d}" for i in range(start, min(rows, start + 8))]
        feeder.send(batch, pad=PAD)
        wait_outputs(setup, done + start + len(batch), timeout=120)


@contextmanager
def parent(ctx: Context, kube_api: Any) -> Iterator[tuple[ShardSetup, Splitter]]:
    with shard_setup(
        ctx,
        kube_api,
        hot_standbys=0,
        prefix="bench-split",
        max_txn=f"{int(MAX_TXN * 1000)}ms",
        sql=FILL_SQL,
        migrations=FILL_MIGRATIONS,
    ) as setup:
        splitter = Splitter(ctx, setup)
        try:
            yield setup, splitter
        finally:
            splitter.stop_all()


def bench_handoff(ctx: Context, kube_api: Any, out: Run, sizes: list[int], splits: int) -> None:
    pauses: dict[int, list[float]] = {}
    sides: dict[int, list[tuple[float, float]]] = {}
    firsts: dict[int, tuple[SplitFigures, float, int]] = {}
    for size in sizes:
        with parent(ctx, kube_api) as (setup, splitter):
            primary = splitter.spawn(setup, "parent-0")
            primary.wait_state("PRIMARY", timeout=120)
            feeder = Feeder(setup)
            fill(setup, feeder, size)
            figures = []
            # commits go on all along, so there is a last one before the fence
            with feeder.sending(KEYS, every=0.05):
                for n in range(splits):
                    figures.append(splitter.split(0x80000000 >> n))
            download = splitter.raw_download(figures[0].fence_offset)
            pauses[size] = [f.pause for f in figures]
            sides[size] = [(round(f.parent_pause, 3), round(f.child_pause, 3)) for f in figures]
            firsts[size] = (figures[0], *download)
            print(
                f"  {size // MIB} MiB: pauses (parent, child) {sides[size]} s, "
                f"first split {figures[0].total:.2f} s (child restore "
                f"{figures[0].restore_seconds:.2f} s), raw download {download[0]:.2f} s "
                f"of {download[1] // MIB} MiB",
                flush=True,
            )
    bound = MAX_TXN + PAUSE_SLACK
    for size in sizes:
        out.add(
            Result(
                f"split.handoff_pause.{size // MIB}MiB",
                statistics.median(pauses[size]),
                "s",
                bound,
                "lower",
                {
                    "store_bytes": size,
                    "pauses": pauses[size],
                    "parent_and_child_pauses": sides[size],
                    "max_txn_s": MAX_TXN,
                },
                target=f"<= 1 (within maxTxnDuration + {PAUSE_SLACK:g} s)",
            )
        )
    small, large = sizes[0], sizes[-1]
    out.add(
        Result(
            "split.handoff_pause",
            statistics.median(pauses[large]),
            "s",
            statistics.median(pauses[small]),
            "lower",
            {"store_bytes": large, "baseline_store_bytes": small, "splits_each": splits},
            target="<= 1.2",
        )
    )
    figures, seconds, size = firsts[large]
    out.add(
        Result(
            "split.data_plane_time",
            figures.total,
            "s",
            seconds,
            "lower",
            {
                "store_bytes": large,
                "downloaded_bytes": size,
                "child_restore_s": figures.restore_seconds,
                "what": "child Shard created to both sides' first commit, writes by the bench",
            },
            target="informational (split.total_time is the operator's, request to Done)",
        )
    )


def split_steps(setup: ShardSetup) -> dict[str, float] | None:
    """When the parent's split entered each step (status.split.steps), once it is Done."""
    status = setup.get_shard().get("status") or {}
    for condition in status.get("conditions", []):
        if condition["type"] == "SplitAccepted" and condition["status"] == "False":
            raise AssertionError(f"the split was refused: {condition.get('message')}")
    split = status.get("split") or {}
    if split.get("step") != "Done":
        if split.get("step") in ("Abort", "Aborted"):
            raise AssertionError(f"the split was aborted: {split.get('message')}")
        return None
    return {r["step"]: datetime.fromisoformat(r["at"]).timestamp() for r in split["steps"]}


def bench_total_time(ctx: Context, kube_api: Any, out: Run, size: int) -> None:
    """One split asked for by ``spec.split``, run by the operator and the process node,
    from the request to Done, against the raw download of the parent's store."""
    from kubernetes.client.exceptions import ApiException

    with shard_setup(
        ctx,
        kube_api,
        hot_standbys=0,
        prefix="bench-split-op",
        shard=False,
        max_shards=2,
        max_txn=f"{int(MAX_TXN * 1000)}ms",
        sql=FILL_SQL,
        migrations=FILL_MIGRATIONS,
    ) as setup:
        cluster = Cluster(ctx)
        operator = Operator(ctx, setup.namespace)
        splitter = Splitter(ctx, setup)
        try:
            wait_for(
                lambda: (setup.get_shard().get("status") or {}).get("primary"),
                timeout=300,
                what="the operator's shard to have a primary",
                interval=0.5,
                retry=(ApiException, OSError),
            )
            feeder = Feeder(setup)
            fill(setup, feeder, size)
            with feeder.sending(KEYS, every=0.05):
                requested = time.time()
                patch_spec(setup, setup.shard, {"split": {"by": "key"}})
                steps = wait_for(
                    lambda: split_steps(setup), timeout=1800, what="the split", interval=0.5
                )
            total = steps["Done"] - requested
            parent_log = splitter.log(recovery_log_name(setup.namespace, TASK, 0, 0))
            narrowed = Ranges(key_end=0x7FFFFFFF)
            fence = next(
                c.offset for c in parent_log.claims() if Ranges.from_claim(c.owns) == narrowed
            )
            seconds, downloaded = splitter.raw_download(fence)
        finally:
            # the Tasks go through the operator (their finalizers); the namespace after
            cluster.kubectl(
                "delete", f"tasks.{GROUP}", "--all", "-n", setup.namespace, "--timeout=600s"
            )
            operator.stop()
    order = sorted(steps, key=steps.__getitem__)
    durations = {a: round(steps[b] - steps[a], 3) for a, b in itertools.pairwise(order)}
    print(f"  operator split of {size // MIB} MiB: {total:.2f} s, steps {durations}", flush=True)
    out.add(
        Result(
            "split.total_time",
            total,
            "s",
            seconds,
            "lower",
            {
                "store_bytes": size,
                "downloaded_bytes": downloaded,
                "step_seconds": durations,
                "baseline": "sequential boto3 get_object of the parent's log fragments",
            },
            target="<= 2",
        )
    )


def processed(setup: ShardSetup, writers: list[str]) -> int:
    return sum(len(output_documents(setup, w)) for w in writers)


def backlog_rate(setup: ShardSetup, feeder: Feeder, writers: list[str], documents: int) -> float:
    """Documents per second for the shards ``writers`` to work off ``documents`` sent at
    once, spread over many keys."""
    done = processed(setup, writers)
    keys = [f"load-{i:04d}" for i in range(512)]
    started = time.monotonic()
    for start in range(0, documents, 1000):
        feeder.send([keys[i % len(keys)] for i in range(start, min(documents, start + 1000))])
    wait_for(
        lambda: processed(setup, writers) >= done + documents,
        timeout=600,
        what=f"{documents} documents processed",
        interval=0.25,
    )
    return documents / (time.monotonic() - started)


def bench_throughput(ctx: Context, kube_api: Any, out: Run, documents: int) -> None:
    with parent(ctx, kube_api) as (setup, splitter):
        primary = splitter.spawn(setup, "parent-0")
        primary.wait_state("PRIMARY", timeout=120)
        feeder = Feeder(setup)
        before = backlog_rate(setup, feeder, [setup.shard], documents)
        with feeder.sending(KEYS, every=0.05):
            splitter.split(0x80000000, keep_child=True)
        child = shard_name(TASK, 0x80000000, 0)
        after = backlog_rate(setup, feeder, [setup.shard, child], documents)
    out.add(
        Result(
            "split.throughput",
            after,
            "docs/s",
            before,
            "higher",
            {"documents": documents, "shards_before": 1, "shards_after": 2},
            target="informational (2 cores: the shards share them with MinIO and the feeder)",
        )
    )


PARTS = ("handoff", "total_time", "throughput")


def run(ctx: Context, out: Run, parts: Sequence[str] = PARTS) -> None:
    from kubernetes import config

    apply_crds(ctx)
    kube_api = config.new_client_from_config(config_file=str(ctx.env.kubeconfig))
    sizes = [1 * MIB, 8 * MIB] if ctx.quick else [10 * MIB, 100 * MIB, 1024 * MIB]
    if "handoff" in parts:
        bench_handoff(ctx, kube_api, out, sizes, splits=2 if ctx.quick else 5)
    if "total_time" in parts:
        bench_total_time(ctx, kube_api, out, size=sizes[-1])
    if "throughput" in parts:
        bench_throughput(ctx, kube_api, out, documents=5_000 if ctx.quick else 30_000)


def main(argv: list[str] | None = None) -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--only",
            choices=PARTS,
            action="append",
            help="run only this part (repeatable); all of them by default",
        )

    return by_hand(
        "bench_split",
        argv,
        lambda ctx, out, args: run(ctx, out, args.only or PARTS),
        options=options,
    )


if __name__ == "__main__":
    sys.exit(main())
