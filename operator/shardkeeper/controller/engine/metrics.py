"""The operator's Prometheus metrics, and the HTTP server for them and for ``/healthz``.

Served by every replica, leader or not, so a standby is seen to be alive; only the leader
reconciles, so only its counters move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = Counter(
    "shardkeeper_operator_reconciles_total",
    "Reconciles by kind of object and result (success, requeue, error)",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "shardkeeper_operator_reconcile_duration_seconds",
    "Time one reconcile takes, by kind of object",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS = Counter(
    "shardkeeper_operator_api_requests_total",
    "Requests the reconcilers made to the API server (watches not included)",
    ["verb", "resource"],
)
WATCH_EVENTS = Counter(
    "shardkeeper_operator_watch_events_total",
    "Watch events received, by kind of object",
    ["kind"],
)
WATCH_LAST_EVENT = Gauge(
    "shardkeeper_operator_watch_last_event_timestamp_seconds",
    "When the last watch event of a kind arrived (Unix time)",
    ["kind"],
)
WATCHING = Gauge(
    "shardkeeper_operator_watching",
    "1 once every watched kind is listed and reconciles have started",
)
SECRETS_KEPT = Gauge(
    "shardkeeper_operator_secrets_kept",
    "Secrets whose key names and resourceVersion the operator keeps: those that Tasks and "
    "StorageMappings name (never their values)",
)
QUEUE_DEPTH = Gauge("shardkeeper_operator_queue_depth", "Objects waiting to be reconciled")
LEADER = Gauge("shardkeeper_operator_leader", "1 while this replica holds the leader Lease")
BUCKET_CHECKS = Counter(
    "shardkeeper_operator_bucket_checks_total",
    "Checks of StorageMapping stores, by reason of the outcome",
    ["reason"],
)
SPLITS_STARTED = Counter(
    "shardkeeper_operator_splits_started_total",
    "Splits planned (status.split entered Plan), by task",
    ["namespace", "task"],
)
SPLITS_FINISHED = Counter(
    "shardkeeper_operator_splits_finished_total",
    "Splits that reached Done, by task",
    ["namespace", "task"],
)
SPLITS_ABORTED = Counter(
    "shardkeeper_operator_splits_aborted_total",
    "Splits that were aborted (entered Abort), by task",
    ["namespace", "task"],
)
SPLIT_STEP_SECONDS = Histogram(
    "shardkeeper_operator_split_step_duration_seconds",
    "Time a split spent in a step, by step, observed when it leaves the step",
    ["step"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
SPLIT_HANDOFF_SECONDS = Histogram(
    "shardkeeper_operator_split_handoff_duration_seconds",
    "Time from a split's HandOff step to its child reported PRIMARY (the parent narrowed, "
    "its fence, the child's fork), as the operator saw it, by task",
    ["namespace", "task"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
)
EVENTS = Counter(
    "shardkeeper_operator_events_total", "Kubernetes Events the operator posted", ["type", "reason"]
)


class ShardPhases(Collector):
    """``shardkeeper_operator_shards{phase}``, counted from the cache when scraped."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "shardkeeper_operator_shards",
            "Shards by phase, as the operator sees them",
            labels=["phase"],
        )
        for phase, count in sorted((self.source() if self.source else {}).items()):
            family.add_metric([phase], count)
        yield family


SHARD_PHASES = ShardPhases()
REGISTRY.register(SHARD_PHASES)


async def serve(
    port: int, host: str = "0.0.0.0", ready: Callable[[], bool] = lambda: True
) -> web.AppRunner:
    """Start ``/metrics``, ``/healthz`` and ``/readyz`` on ``port``; the caller cleans the
    runner up.

    ``/healthz`` answers from the event loop that runs everything else, so a loop that is
    stuck fails it; a leader whose watches or reconcilers die stops and exits instead.
    ``/readyz`` answers 503 while ``ready`` is false: a replica that cannot reach the API
    server is alive (restarting it would not help) but could not lead.
    """

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="the API server has not answered lately\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
