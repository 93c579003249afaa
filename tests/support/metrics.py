"""The Prometheus series the product exports, for tests that check what queries and docs
name against them."""

from __future__ import annotations


def product_metrics() -> dict[str, set[str]]:
    """Every series name the operator and a shard replica export, with its label names."""
    from prometheus_client import CollectorRegistry

    from shardkeeper.controller.engine import metrics as operator_metrics
    from shardkeeper.runtime.core.metrics import RuntimeMetrics

    runtime = CollectorRegistry()
    RuntimeMetrics(runtime, "a-shard")
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    found: dict[str, set[str]] = {}
    for registry in (operator_metrics.REGISTRY, runtime):
        for family in registry.collect():
            if not family.name.startswith("shardkeeper_"):
                continue
            labels = {label for sample in family.samples for label in sample.labels}
            if family.name == "shardkeeper_operator_shards":
                labels.add("phase")  # a collector: no samples without a cache
            for suffix in suffixes.get(family.type, ("",)):
                found[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found
