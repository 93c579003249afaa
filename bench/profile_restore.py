"""By hand: a restore of a ~1 GiB store against the raw download of its recovery log, with
the restore's phases timed (what ``split.total_time``'s ``Children`` step spends most of).

``python -m bench.profile_restore --env-dir DIR fill`` writes a store the way
``bench_split`` fills its parent (rows of 1 MiB of random bytes, 8 per transaction; a
snapshot every 256 MiB of log, the Task's default) into a log of the environment's bucket
and prints the log's name; ``... measure LOG [--rounds N]`` then alternates, N times, a
sequential boto3 download of the log's fragments (``Splitter.raw_download``) and a restore
into an empty directory (``ShardStore.open``), and prints both with the restore's split
into laying the snapshot down and replaying the log after it, and the restore's CPU
time (user and system, all threads).
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.bench_split import download_sequentially
from shardkeeper.storage import restore as restore_module
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore, StoreOptions
from shardkeeper_dev.environment import EnvInfo, Environment

MIB = 1 << 20
ROW = 1 << 20
ROWS_PER_TXN = 8


def objects(env: EnvInfo) -> ObjectStore:
    client = make_s3_client(
        endpoint=env.s3_endpoint,
        access_key=env.s3_access_key,
        secret_key=env.s3_secret_key,
        region=env.s3_region,
    )
    return ObjectStore(client, env.s3_bucket)


def fill(env: EnvInfo, size: int, snapshot_every: int) -> str:
    name = f"profile-restore/{secrets.token_hex(4)}"
    log = RecoveryLog(objects(env), name)
    options = StoreOptions(snapshot_every_bytes=snapshot_every)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        store = ShardStore.open(Path(tmp), log, 1, options=options)
        store.fence()
        with store.transaction() as txn:
            txn.execute("CREATE TABLE counts (key TEXT PRIMARY KEY, n INTEGER, pad BLOB)")
        rows = size // ROW
        for start in range(0, rows, ROWS_PER_TXN):
            with store.transaction() as txn:
                txn.executemany(
                    "INSERT INTO counts (key, n, pad) VALUES (?, 1, randomblob(?))",
                    [(f"fill-{i:06d}", ROW) for i in range(start, min(rows, start + ROWS_PER_TXN))],
                )
        # let the background snapshot that the last commits made due finish
        time.sleep(5)
        store.close()
    return name


def raw_download(env: EnvInfo, log: RecoveryLog, workdir: Path) -> tuple[float, int]:
    """``bench_split.Splitter.raw_download``: every fragment, one after the other."""
    s3 = make_s3_client(
        endpoint=env.s3_endpoint,
        access_key=env.s3_access_key,
        secret_key=env.s3_secret_key,
        region=env.s3_region,
    )
    keys = [info.key for info in log.journal.list_fragments()]
    return download_sequentially(s3, env.s3_bucket, keys, workdir / "raw-download")


@contextmanager
def timed(module: Any, name: str, into: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in ``module.name`` to ``into[name]`` while the block runs."""
    original: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.monotonic() - started

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def _cpu_seconds() -> float:
    """User and system time of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_restore(log: RecoveryLog, workdir: Path) -> dict[str, float]:
    phases: dict[str, float] = {}
    target = workdir / "restore"
    shutil.rmtree(target, ignore_errors=True)
    with (
        timed(restore_module, "restore_snapshot", phases),
        timed(restore_module, "apply_segments", phases),
    ):
        cpu = _cpu_seconds()
        started = time.monotonic()
        store = ShardStore.open(target, log, 0)
        phases["total"] = time.monotonic() - started
        phases["cpu"] = _cpu_seconds() - cpu
    report = store.restore_report
    phases["log_bytes"] = report.bytes_replayed / MIB
    store.close()
    shutil.rmtree(target, ignore_errors=True)
    return phases


def measure(env: EnvInfo, name: str, rounds: int, what: str) -> None:
    log = RecoveryLog(objects(env), name)
    raws: list[float] = []
    restores: list[float] = []
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        workdir = Path(tmp)
        for n in range(rounds):
            if what in ("both", "raw"):
                seconds, size = raw_download(env, log, workdir)
                raws.append(seconds)
                print(f"round {n}: raw download {seconds:.2f} s of {size // MIB} MiB", flush=True)
            if what in ("both", "restore"):
                phases = one_restore(log, workdir)
                restores.append(phases["total"])
                figures = {k: round(v, 2) for k, v in phases.items()}
                print(f"round {n}: restore {json.dumps(figures)}", flush=True)
    if raws and restores:
        ratios = [r / d for r, d in zip(restores, raws, strict=True)]
        print(
            f"median raw {statistics.median(raws):.2f} s, restore "
            f"{statistics.median(restores):.2f} s, ratios {[round(r, 2) for r in ratios]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_restore")
    parser.add_argument("--env-dir", type=Path, required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    fill_cmd = sub.add_parser("fill")
    fill_cmd.add_argument("--mib", type=int, default=1024)
    fill_cmd.add_argument("--snapshot-every-mib", type=int, default=256)
    measure_cmd = sub.add_parser("measure")
    measure_cmd.add_argument("log")
    measure_cmd.add_argument("--rounds", type=int, default=3)
    measure_cmd.add_argument("--only", choices=("both", "raw", "restore"), default="both")
    args = parser.parse_args(argv)
    env = Environment(args.env_dir).info()
    if args.command == "fill":
        print(fill(env, args.mib * MIB, args.snapshot_every_mib * MIB))
    else:
        measure(env, args.log, args.rounds, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
