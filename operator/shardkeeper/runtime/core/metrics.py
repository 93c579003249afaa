"""Prometheus metrics of one shard replica.

The processor updates the transaction, document, lag and recovery-log figures; the shell
sets ``recovery_duration_seconds`` after a restore and ``replica_state`` on each change of
role, and counts the primary's automatic prunes of the recovery log. Every series
carries a ``shard`` label, so replicas of several shards scraped together stay apart.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shardkeeper.api.shard import ReplicaState

# transactions run from a few milliseconds (a document at a time) up to maxTxnDuration
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 100000)


class RuntimeMetrics:
    """The metric objects, already bound to this shard's label."""

    def __init__(self, registry: CollectorRegistry, shard: str) -> None:
        self.shard = shard

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, ("shard",), registry=registry).labels(shard)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, ("shard",), registry=registry).labels(shard)

        def histogram(name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, text, ("shard",), buckets=buckets, registry=registry).labels(
                shard
            )

        self.transactions_total = counter("shardkeeper_transactions", "Transactions committed.")
        self.transaction_duration_seconds = histogram(
            "shardkeeper_transaction_duration_seconds",
            "Time from a transaction's first document to its outputs being appended.",
            DURATION_BUCKETS,
        )
        self.transaction_documents = histogram(
            "shardkeeper_transaction_documents",
            "Documents (source or captured) per transaction.",
            SIZE_BUCKETS,
        )
        self.documents_in_total = counter(
            "shardkeeper_documents_in", "Documents read and processed (captured, for a capture)."
        )
        self.documents_out_total = counter(
            "shardkeeper_documents_out",
            "Documents appended to output collections (rows upserted, for a materialization).",
        )
        self.lag_bytes = gauge(
            "shardkeeper_lag_bytes", "Bytes of source journals not yet read and committed."
        )
        self.recovery_log_bytes_total = counter(
            "shardkeeper_recovery_log_bytes", "Bytes appended to the recovery log by commits."
        )
        self.hints_given_total = counter(
            "shardkeeper_hints_given",
            "Long-polls of readers of this replica's journals answered with new data.",
        )
        self.recovery_log_prunes_total = counter(
            "shardkeeper_recovery_log_prunes", "Automatic prunes of the recovery log that ran."
        )
        self.recovery_log_prune_failures_total = counter(
            "shardkeeper_recovery_log_prune_failures",
            "Automatic prunes of the recovery log that failed (tried again an interval later).",
        )
        self.recovery_log_pruned_bytes_total = counter(
            "shardkeeper_recovery_log_pruned_bytes",
            "Bytes of recovery-log fragments removed by automatic prunes.",
        )
        self.recovery_log_pruned_objects_total = counter(
            "shardkeeper_recovery_log_pruned_objects",
            "Objects deleted by automatic prunes: fragments, old snapshots, fork registrations.",
        )
        self.recovery_duration_seconds = gauge(
            "shardkeeper_recovery_duration_seconds", "Time the last restore of the store took."
        )
        self._object_store_errors = Counter(
            "shardkeeper_object_store_errors",
            "Failed requests to the object store (recovery log, journals), retried or not,"
            " by S3 operation.",
            ("shard", "operation"),
            registry=registry,
        )
        states = Gauge(
            "shardkeeper_replica_state",
            "1 for the state this replica is in, 0 for the others.",
            ("shard", "state"),
            registry=registry,
        )
        self.replica_state = {state: states.labels(shard, state.value) for state in ReplicaState}

    def object_store_error(self, operation: str) -> None:
        self._object_store_errors.labels(self.shard, operation).inc()

    def set_replica_state(self, state: ReplicaState) -> None:
        for each, gauge in self.replica_state.items():
            gauge.set(1 if each is state else 0)
