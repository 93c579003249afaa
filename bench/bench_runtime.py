"""Processing-core benchmarks: derivation throughput and end-to-end latency of one shard.

* **throughput**: documents per second of an SQL derivation (an upsert per document that
  returns the updated row, as in ``tests/runtime/test_core_derive_sql.py``), from the
  first transaction to the last output appended, with every document already in the
  source journal. Baseline, in the same run: raw SQLite executing the same upsert
  statement with the same values, one ``execute`` per row with its rows fetched, in a WAL
  database with ``synchronous=NORMAL``, in transactions of the same size as the shard's.
  Target: ratio >= 0.5.
* **latency**: from a source append having returned to the output that it derives being
  appended (the commit that holds it acknowledged), p50 and p99, one document at a time.
  Baseline: the same path done by hand with boto3: a conditional ``put_object`` of the
  source fragment, a ``get_object`` of it, a conditional ``put_object`` of a recovery-log
  record and one of the output fragment, with no waiting between them. The ratio is what
  reading by polling, routing, SQLite and the store add.

Run by hand against a running environment with
``python -m bench.bench_runtime --env-dir DIR [--quick]``.
"""

from __future__ import annotations

import secrets
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from bench.bench_storage import client_of, drop_bucket, percentile
from bench.harness import Context, Result, Run, by_hand
from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import SecretKeyRef
from shardkeeper.api.shard import Shard, shard_name
from shardkeeper.api.task import Task
from shardkeeper.runtime.core.metrics import RuntimeMetrics
from shardkeeper.runtime.core.processor import (
    Processor,
    ProcessorOptions,
    ShardContext,
    TransactionSummary,
)
from shardkeeper.runtime.core.timer import StopSignal
from shardkeeper.runtime.shell.collectionio import CollectionWriter
from shardkeeper.storage.layout import object_key, recovery_log_name
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.store import ShardStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

NAMESPACE = "bench"
PREFIX = "bench/"
CUSTOMERS = 1000
FRAGMENT_DOCUMENTS = 2000
MIGRATION = "CREATE TABLE totals (customer TEXT PRIMARY KEY, total REAL NOT NULL, n INTEGER)"
UPSERT = (
    "INSERT INTO totals (customer, total, n) VALUES ($customer, $amount, 1) "
    "ON CONFLICT (customer) DO UPDATE SET total = total + excluded.total, n = n + 1 "
    "RETURNING customer, total, n"
)
ORDERS_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "customer": {"type": "string"},
        "amount": {"type": "number"},
    },
    "required": ["id", "customer", "amount"],
}
TOTALS_SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "total": {"type": "number"},
        "n": {"type": "integer"},
    },
    "required": ["customer", "total", "n"],
}


def fresh_bucket(client: S3Client) -> str:
    name = f"bench-runtime-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name


# -- a shard of the totals derivation ----------------------------------------------------


def _no_secret(ref: SecretKeyRef) -> str:
    raise AssertionError(f"the benchmark resolves no secret ({ref})")


def totals_context(objects: ObjectStore, task_name: str) -> ShardContext:
    collections = {
        f"{task_name}-orders": Collection.model_validate(
            {
                "metadata": {"name": f"{task_name}-orders"},
                "spec": {"key": ["/id"], "schema": ORDERS_SCHEMA, "storageMapping": "m"},
            }
        ),
        f"{task_name}-totals": Collection.model_validate(
            {
                "metadata": {"name": f"{task_name}-totals"},
                "spec": {"key": ["/customer"], "schema": TOTALS_SCHEMA, "storageMapping": "m"},
            }
        ),
    }
    task = Task.model_validate(
        {
            "metadata": {"name": task_name, "namespace": NAMESPACE},
            "spec": {
                "type": "derivation",
                "storageMapping": "m",
                "sources": [f"{task_name}-orders"],
                "outputs": [f"{task_name}-totals"],
                "derive": {
                    "sql": {
                        "migrations": [MIGRATION],
                        "lambdas": {f"{task_name}-orders": UPSERT},
                    }
                },
            },
        }
    )
    shard = Shard.model_validate(
        {
            "metadata": {"name": shard_name(task_name, 0, 0), "namespace": NAMESPACE},
            "spec": {
                "task": task_name,
                "keyBegin": "00000000",
                "keyEnd": "ffffffff",
                "rClockBegin": "00000000",
                "rClockEnd": "ffffffff",
                "recoveryLog": recovery_log_name(NAMESPACE, task_name, 0, 0),
            },
        }
    )
    return ShardContext(
        namespace=NAMESPACE,
        task=task,
        shard=shard,
        collections=collections,
        objects=objects,
        prefix=PREFIX,
        resolve_secret=_no_secret,
        bind_host="127.0.0.1",
    )


class RunningShard:
    """A primary running the processor in a thread, reporting each commit."""

    def __init__(self, ctx: ShardContext, volume: Path) -> None:
        log = RecoveryLog(ctx.objects, object_key(ctx.prefix, ctx.shard.spec.recovery_log))
        self.store = ShardStore.open(volume, log, 1)
        self.store.fence()
        self.commits: list[tuple[float, TransactionSummary]] = []
        self.committed = threading.Condition()
        options = ProcessorOptions(on_commit=self._committed)
        metrics = RuntimeMetrics(CollectorRegistry(), ctx.shard_name)
        self.processor = Processor(ctx, self.store, metrics, options)
        self.stop = StopSignal()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="bench shard", daemon=True)
        self.thread.start()

    def _committed(self, summary: TransactionSummary) -> None:
        with self.committed:
            self.commits.append((time.monotonic(), summary))
            self.committed.notify_all()

    def _run(self) -> None:
        try:
            self.processor.run(self.stop)
        except BaseException as exc:
            self.error.append(exc)
        finally:
            self.store.close()

    def wait_documents(self, count: int, timeout: float) -> float:
        """Wait until ``count`` documents are committed; when the last commit landed."""
        deadline = time.monotonic() + timeout
        with self.committed:
            while sum(s.documents for _, s in self.commits) < count:
                if self.error:
                    raise RuntimeError(f"the shard failed: {self.error[0]!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{count} documents not committed in {timeout}s")
                self.committed.wait(left)
            return self.commits[-1][0]

    def wait_recovered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.processor.progress().recovered:
            if self.error or time.monotonic() > deadline:
                raise RuntimeError(f"the shard did not recover: {self.error}")
            self.stop.wait(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        if self.error:
            raise RuntimeError(f"the shard failed: {self.error[0]!r}")


def orders(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "customer": f"c{i % CUSTOMERS:04d}", "amount": (i % 97) / 4}
        for i in range(first, first + count)
    ]


# -- throughput ------------------------------------------------------------------------------


def raw_sqlite_upserts(path: Path, documents: list[dict[str, Any]], per_txn: int) -> float:
    """Seconds for raw SQLite to run the lambda's upsert for every document."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(MIGRATION)
    statement = UPSERT.replace("$customer", ":customer").replace("$amount", ":amount")
    started = time.perf_counter()
    for first in range(0, len(documents), per_txn):
        conn.execute("BEGIN IMMEDIATE")
        for document in documents[first : first + per_txn]:
            conn.execute(statement, document).fetchall()
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def bench_throughput(ctx: Context, objects: ObjectStore, out: Run, count: int) -> None:
    shard_ctx = totals_context(objects, "throughput")
    source = CollectionWriter(
        objects, PREFIX, namespace=NAMESPACE, collection="throughput-orders", writer="feeder"
    )
    documents = orders(0, count)
    for first in range(0, count, FRAGMENT_DOCUMENTS):
        source.append(documents[first : first + FRAGMENT_DOCUMENTS])
    shard = RunningShard(shard_ctx, ctx.workdir / "throughput")
    # the clock starts at the first transaction's first document (recovery excluded)
    last = shard.wait_documents(count, timeout=600)
    shard.finish()
    first = shard.commits[0][1].started
    ours = count / (last - first)
    transactions = len(shard.commits)
    per_txn = max(1, count // transactions)
    raw = count / raw_sqlite_upserts(ctx.workdir / "raw.db", documents, per_txn)
    out.add(
        Result(
            name="runtime.derivation_throughput",
            value=ours,
            unit="docs/s",
            baseline=raw,
            better="higher",
            params={"documents": count, "transactions": transactions, "per_txn": per_txn},
            target="ratio >= 0.5 of raw SQLite upserts",
        )
    )


# -- latency ---------------------------------------------------------------------------------


def raw_chain_latency(client: S3Client, bucket: str, samples: int) -> list[float]:
    """Seconds for source put, get, log put and output put done back to back."""
    body = b"x" * 160
    times = []
    for n in range(samples):
        started = time.perf_counter()
        source = f"raw/source/{n:016x}"
        client.put_object(Bucket=bucket, Key=source, Body=body, IfNoneMatch="*")
        client.get_object(Bucket=bucket, Key=source)["Body"].read()
        client.put_object(Bucket=bucket, Key=f"raw/log/{n:016x}", Body=body * 8, IfNoneMatch="*")
        client.put_object(Bucket=bucket, Key=f"raw/out/{n:016x}", Body=body, IfNoneMatch="*")
        times.append(time.perf_counter() - started)
    return times


def bench_latency(
    ctx: Context, objects: ObjectStore, client: S3Client, out: Run, *, samples: int
) -> None:
    shard_ctx = totals_context(objects, "latency")
    source = CollectionWriter(
        objects, PREFIX, namespace=NAMESPACE, collection="latency-orders", writer="feeder"
    )
    shard = RunningShard(shard_ctx, ctx.workdir / "latency")
    shard.wait_recovered(timeout=60)
    latencies = []
    for n in range(samples):
        source.append(orders(n, 1))
        appended = time.monotonic()
        committed = shard.wait_documents(n + 1, timeout=60)
        latencies.append(committed - appended)
    shard.finish()
    raw = raw_chain_latency(client, objects.bucket, samples)
    params = {"samples": samples, "poll": "ReaderOptions() defaults"}
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        out.add(
            Result(
                name=f"runtime.end_to_end_latency_{label}",
                value=percentile(latencies, fraction) * 1000,
                unit="ms",
                baseline=percentile(raw, fraction) * 1000,
                better="lower",
                params=params,
                target="informational: set against the raw S3 round trips of the same path",
            )
        )
    out.add(
        Result(
            name="runtime.end_to_end_latency_mean",
            value=statistics.fmean(latencies) * 1000,
            unit="ms",
            baseline=statistics.fmean(raw) * 1000,
            better="lower",
            params=params,
            target="informational",
        )
    )


# -- entry point ----------------------------------------------------------------------------


def run(ctx: Context, out: Run) -> None:
    client = client_of(ctx.env)
    bucket = fresh_bucket(client)
    try:
        objects = ObjectStore(client, bucket)
        bench_throughput(ctx, objects, out, count=20_000 if ctx.quick else 200_000)
        bench_latency(ctx, objects, client, out, samples=100 if ctx.quick else 400)
    finally:
        drop_bucket(client, bucket)


def main(argv: list[str] | None = None) -> int:
    return by_hand("bench_runtime", argv, lambda ctx, out, _: run(ctx, out))


if __name__ == "__main__":
    sys.exit(main())
