"""Storage benchmarks: journal appends, store restore, commit latency, restore memory.

Every figure is set against a raw boto3 baseline measured in the same run on the same
MinIO, with the same object sizes and the same concurrency:

* journal append throughput vs ``put_object`` of the same bytes (target >= 0.8x);
* restore throughput of a 1 GiB store (64 MiB with ``quick``) vs ``get_object`` of the
  same objects (target >= 0.7x);
* commit latency p50/p99 vs one conditional ``put_object`` of the record's size
  (target p99 <= 2x);
* peak RSS of a restore, in a subprocess, at two store sizes: the ratio shows whether it
  grows with the store (target: it does not, ratio <= 1.25).

Two informational figures separate the code's own cost from the environment's: appends
against conditional ``put_object`` (what If-None-Match costs the store), and restore
against ``get_object`` plus writing and syncing the same bytes to the local disk (what a
restore cannot avoid doing).

Run by hand against a running environment with
``python -m bench.bench_storage --env-dir DIR [--quick]``.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import Context, Result, Run, by_hand
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.snapshot import latest_snapshot
from shardkeeper.storage.store import ShardStore, StoreOptions

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1 << 20
TRANSFERS = 4
BUILD_OPTIONS = StoreOptions(background_snapshots=False)


def client_of(env: Any) -> S3Client:
    return make_s3_client(
        endpoint=env.s3_endpoint,
        access_key=env.s3_access_key,
        secret_key=env.s3_secret_key,
        region=env.s3_region,
    )


def fresh_bucket(client: S3Client) -> str:
    name = f"bench-storage-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name


def drop_bucket(client: S3Client, bucket: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


# -- journal append throughput --------------------------------------------------------


def bench_append(client: S3Client, bucket: str, out: Run, *, total: int, size: int) -> None:
    """Sequential appends of ``size``-byte fragments vs sequential raw puts, in rounds
    that alternate so that drift of the machine hits both alike."""
    journal = Journal(ObjectStore(client, bucket), f"append-{size}")
    writer, _ = journal.fence(1)
    payload = os.urandom(size)
    count = max(4, total // size)
    rounds = 4
    per_round = max(1, count // rounds)
    ours = raw = conditional = 0.0
    for round_ in range(rounds):
        started = time.perf_counter()
        for i in range(per_round):
            client.put_object(Bucket=bucket, Key=f"raw-{size}/{round_}-{i}", Body=payload)
        raw += time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(per_round):
            writer.append(payload)
        ours += time.perf_counter() - started
        started = time.perf_counter()
        for i in range(per_round):
            key = f"raw-conditional-{size}/{round_}-{i}"
            client.put_object(Bucket=bucket, Key=key, Body=payload, IfNoneMatch="*")
        conditional += time.perf_counter() - started
    moved = per_round * rounds * size / MIB
    params = {"fragment_bytes": size, "fragments": per_round * rounds, "sequential": True}
    name = f"storage.journal_append_throughput.{size // 1024}KiB"
    out.add(
        Result(
            name=name,
            value=moved / ours,
            unit="MiB/s",
            baseline=moved / raw,
            better="higher",
            params=params,
            target=">= 0.8x raw put_object",
        )
    )
    # what the journal's own code costs, apart from the store's price of If-None-Match
    out.add(
        Result(
            name=f"{name}.vs_conditional_put",
            value=moved / ours,
            unit="MiB/s",
            baseline=moved / conditional,
            better="higher",
            params=params,
            target="informational",
        )
    )


# -- building stores ------------------------------------------------------------------


def build_store(volume: Path, log: RecoveryLog, size: int) -> None:
    """A store of about ``size`` bytes: rows of random blobs in 16 MiB transactions,
    a snapshot, then a short tail of smaller commits after it."""
    store = ShardStore.open(volume, log, 1, options=BUILD_OPTIONS)
    store.fence()
    row = os.urandom(3000)
    per_txn = (16 * MIB) // len(row)
    written = 0
    n = 0
    while written < size:
        with store.transaction() as txn:
            txn.execute("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, v BLOB)")
            txn.executemany(
                "INSERT INTO blobs (v) VALUES (?)",
                ((row[: len(row) - (i % 7)] + n.to_bytes(4, "big"),) for i in range(per_txn)),
            )
        n += 1
        written += per_txn * len(row)
    assert store.snapshot() is not None
    for i in range(8):
        with store.transaction() as txn:
            txn.execute("UPDATE blobs SET v = randomblob(3000) WHERE id % 500 = ?", (i,))
    store.close()


def restore_objects(log: RecoveryLog) -> list[str]:
    """The objects a restore of ``log`` reads: snapshot parts, then the log's tail."""
    manifest = latest_snapshot(log)
    assert manifest is not None
    keys = [part.key for part in manifest.parts]
    keys += [info.key for info in log.journal.list_fragments(manifest.offset)]
    return keys


def in_order(fn: Callable[[str], bytes], keys: list[str], window: int) -> Iterator[bytes]:
    """``fn`` of each key, in order, at most ``window`` running or waiting to be taken:
    the restore's read-ahead, so memory stays bounded the same way."""
    pending: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
    todo = iter(keys)
    with concurrent.futures.ThreadPoolExecutor(window) as pool:
        for key in todo:
            pending.append(pool.submit(fn, key))
            if len(pending) >= window:
                break
        while pending:
            data = pending.popleft().result()
            following = next(todo, None)
            if following is not None:
                pending.append(pool.submit(fn, following))
            yield data


def bench_restore(ctx: Context, client: S3Client, log: RecoveryLog, out: Run, size: int) -> None:
    keys = restore_objects(log)
    total = 0

    def get(key: str) -> bytes:
        return client.get_object(Bucket=log.store.bucket, Key=key)["Body"].read()

    def fetch(key: str) -> int:
        return len(get(key))

    def fetch_and_write(target: Path) -> int:
        """The same downloads, written to a local file and synced, as a restore must."""
        written = 0
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for data in in_order(get, keys, TRANSFERS):
                os.pwrite(fd, data, written)
                written += len(data)
            os.fsync(fd)
        finally:
            os.close(fd)
            target.unlink()
        return written

    raw_times, our_times, written_times = [], [], []
    direct_bytes = 0
    for attempt in range(2):
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(TRANSFERS) as pool:
            total = sum(pool.map(fetch, keys))
        raw_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        fetch_and_write(ctx.workdir / "raw-restore")
        written_times.append(time.perf_counter() - started)
        target = ctx.workdir / f"restore-{attempt}"
        started = time.perf_counter()
        store = ShardStore.open(target, log, 2, options=BUILD_OPTIONS)
        our_times.append(time.perf_counter() - started)
        assert store.restore_report.source == "snapshot"
        direct_bytes = store.restore_report.direct_bytes
        store.close()
        shutil.rmtree(target)
    out.add(
        Result(
            name="storage.restore_throughput",
            value=total / MIB / min(our_times),
            unit="MiB/s",
            baseline=total / MIB / min(raw_times),
            better="higher",
            params={
                "store_bytes": size,
                "objects": len(keys),
                "object_bytes": total,
                "transfers": TRANSFERS,
                "best_of": 2,
                # what each side does with the same objects at the same concurrency
                "baseline": f"{TRANSFERS} concurrent get_object, bodies read and dropped",
                "restore": (
                    f"{TRANSFERS} threads each get a snapshot part into an aligned buffer, "
                    "check it there (crc32) and write it from there at its offset (O_DIRECT "
                    f"where possible); then the log tail (read-ahead {TRANSFERS}, sha256) "
                    "replayed; one fsync"
                ),
                "restore_direct_io_bytes": direct_bytes,
            },
            target=">= 0.7x raw get_object",
        )
    )
    # what the restore's own code costs, apart from writing the bytes to the volume
    out.add(
        Result(
            name="storage.restore_throughput.vs_get_and_write",
            value=total / MIB / min(our_times),
            unit="MiB/s",
            baseline=total / MIB / min(written_times),
            better="higher",
            params={
                "store_bytes": size,
                "objects": len(keys),
                "transfers": TRANSFERS,
                "baseline": (
                    f"{TRANSFERS} concurrent get_object in order, written sequentially through "
                    "the page cache, one fsync"
                ),
            },
            target="informational",
        )
    )


# -- restore memory -------------------------------------------------------------------

_CHILD = """
import json, sys
from pathlib import Path
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions
a = json.loads(sys.argv[1])
client = make_s3_client(endpoint=a["endpoint"], access_key=a["key"], secret_key=a["secret"],
                        region=a["region"])
log = RecoveryLog(ObjectStore(client, a["bucket"]), a["log"])
store = ShardStore.open(Path(a["volume"]), log, 3, options=StoreOptions(background_snapshots=False))
store.close()
# VmHWM is this process's own peak: ru_maxrss would also count the parent's memory that a
# fork copied before exec
status = Path("/proc/self/status").read_text()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
"""


def restore_peak_rss(env: Any, log: RecoveryLog, volume: Path) -> float:
    """Peak RSS in MiB of a fresh process that restores ``log`` onto ``volume``."""
    spec = {
        "endpoint": env.s3_endpoint,
        "key": env.s3_access_key,
        "secret": env.s3_secret_key,
        "region": env.s3_region,
        "bucket": log.store.bucket,
        "log": log.name,
        "volume": str(volume),
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    shutil.rmtree(volume)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


# -- commit latency -------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_commit_latency(
    ctx: Context, client: S3Client, bucket: str, out: Run, *, commits: int
) -> None:
    log = RecoveryLog(ObjectStore(client, bucket), "latency")
    store = ShardStore.open(ctx.workdir / "latency", log, 1)
    store.fence()
    with store.transaction() as txn:
        txn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB)")
    ours, raw, sizes = [], [], []
    for i in range(commits):
        body = os.urandom(200)
        started = time.perf_counter()
        with store.transaction() as txn:
            txn.execute("INSERT INTO events (body) VALUES (?)", (body,))
        ours.append(time.perf_counter() - started)
        assert txn.result is not None
        sizes.append(txn.result.end - txn.result.begin)
        record = os.urandom(sizes[-1])
        started = time.perf_counter()
        client.put_object(Bucket=bucket, Key=f"raw-latency/{i:08d}", Body=record, IfNoneMatch="*")
        raw.append(time.perf_counter() - started)
    store.close()
    params = {"commits": commits, "record_bytes": statistics.median(sizes), "rows_per_commit": 1}
    for name, fraction, target in (("p50", 0.5, "informational"), ("p99", 0.99, "<= 2x")):
        out.add(
            Result(
                name=f"storage.commit_latency_{name}",
                value=percentile(ours, fraction) * 1000,
                unit="ms",
                baseline=percentile(raw, fraction) * 1000,
                better="lower",
                params=params,
                target=f"{target} raw conditional put_object",
            )
        )


# -- entry point ----------------------------------------------------------------------


PARTS = ("append", "latency", "restore")


def run(ctx: Context, out: Run, parts: tuple[str, ...] = PARTS) -> None:
    client = client_of(ctx.env)
    bucket = fresh_bucket(client)
    try:
        append_total = 64 * MIB if ctx.quick else 512 * MIB
        if "append" in parts:
            for size in (256 * 1024, 4 * MIB):
                bench_append(client, bucket, out, total=append_total, size=size)
        if "latency" in parts:
            bench_commit_latency(ctx, client, bucket, out, commits=150 if ctx.quick else 600)
        if "restore" in parts:
            bench_restore_and_memory(ctx, client, bucket, out)
    finally:
        drop_bucket(client, bucket)


def bench_restore_and_memory(ctx: Context, client: S3Client, bucket: str, out: Run) -> None:
    small_size, large_size = (16 * MIB, 64 * MIB) if ctx.quick else (256 * MIB, 1024 * MIB)
    objects = ObjectStore(client, bucket)
    sizes = {"small": small_size, "large": large_size}
    logs = {name: RecoveryLog(objects, f"store-{name}") for name in sizes}
    for name, size in sizes.items():
        build_store(ctx.workdir / f"build-{name}", logs[name], size)
        shutil.rmtree(ctx.workdir / f"build-{name}")
    bench_restore(ctx, client, logs["large"], out, large_size)
    small_rss = restore_peak_rss(ctx.env, logs["small"], ctx.workdir / "rss-small")
    large_rss = restore_peak_rss(ctx.env, logs["large"], ctx.workdir / "rss-large")
    out.add(
        Result(
            name="storage.restore_peak_rss",
            value=large_rss,
            unit="MiB",
            baseline=small_rss,
            better="lower",
            params={"store_bytes": large_size, "baseline_store_bytes": small_size},
            target="ratio <= 1.25 (does not grow with the store)",
        )
    )


def main(argv: list[str] | None = None) -> int:
    def only(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--only",
            action="append",
            choices=PARTS,
            help="run only this part (repeatable): journal appends, commit latency, or "
            "restore throughput and memory",
        )

    return by_hand(
        "bench_storage",
        argv,
        lambda ctx, out, args: run(ctx, out, tuple(args.only) if args.only else PARTS),
        options=only,
    )


if __name__ == "__main__":
    sys.exit(main())
