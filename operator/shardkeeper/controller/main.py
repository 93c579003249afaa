"""``shardkeeper operator``: elect a leader, then run kopf's watches and the reconcile loop.

Every replica serves ``/metrics``, ``/healthz`` and ``/readyz``; only the one that holds the leader
Lease watches and reconciles. A leader that loses the Lease stops and exits with 1, to be
restarted as a standby; on SIGTERM it stops, releases the Lease and exits with 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from datetime import timedelta

import kopf

from shardkeeper import __version__, redact
from shardkeeper.api.meta import Duration
from shardkeeper.api.task import (
    DEFAULT_PRUNE_EVERY,
    PRUNE_EVERY_MAX,
    PRUNE_EVERY_MIN,
    prune_every_allowed,
)
from shardkeeper.controller.engine import kube, metrics
from shardkeeper.controller.engine.cache import Cache
from shardkeeper.controller.engine.events import Recorder
from shardkeeper.controller.engine.handlers import build_registry
from shardkeeper.controller.engine.leader import LeaderElector
from shardkeeper.controller.engine.manager import Manager
from shardkeeper.controller.engine.queue import WorkQueue
from shardkeeper.controller.engine.secrets import watch_secrets
from shardkeeper.controller.reconcilers.base import Deps
from shardkeeper.controller.specs.names import DEFAULT_LEASE_DURATION, DEFAULT_STATUS_INTERVAL
from shardkeeper.controller.specs.retention import RETENTION_EVERY
from shardkeeper.controller.specs.splits import CATCH_UP_TIMEOUT, SplitSettings
from shardkeeper.controller.specs.workload import WorkloadDefaults

log = logging.getLogger("shardkeeper.operator")
LEADER_LEASE = "shardkeeper-operator"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="shardkeeper operator", description=__doc__)
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="a namespace to watch; repeat for more (default: every namespace)",
    )
    parser.add_argument(
        "--shard-image",
        default=env.get("SHARDKEEPER_SHARD_IMAGE", f"shardkeeper:{__version__}"),
        help="image of shard pods whose Task sets none (default: %(default)s)",
    )
    parser.add_argument(
        "--lease-duration",
        type=int,
        default=DEFAULT_LEASE_DURATION,
        help="seconds of a shard's primary Lease, passed to shard pods (default: %(default)s)",
    )
    parser.add_argument(
        "--status-interval",
        type=int,
        default=DEFAULT_STATUS_INTERVAL,
        help="seconds between a shard replica's progress reports in its Shard's status "
        "(changes of state are reported at once), passed to shard pods (default: %(default)s)",
    )
    parser.add_argument(
        "--prune-every",
        type=_prune_every,
        default=DEFAULT_PRUNE_EVERY,
        help="least time between two automatic prunes of a shard's recovery log by its "
        "primary, for Tasks that set no spec.shards.pruneEvery: 0s (never) or 10s to 24h, "
        "passed to shard pods (default: %(default)s)",
    )
    parser.add_argument(
        "--split-catch-up-timeout",
        type=_duration,
        default=env.get("SHARDKEEPER_SPLIT_CATCH_UP_TIMEOUT", str(_as_text(CATCH_UP_TIMEOUT))),
        help="how long a split's child may take, from Plan, to catch up with its parent's "
        "recovery log before the split is aborted, like 10m or 1h "
        "($SHARDKEEPER_SPLIT_CATCH_UP_TIMEOUT; default: %(default)s)",
    )
    parser.add_argument(
        "--retention-every",
        type=_duration,
        default=env.get("SHARDKEEPER_RETENTION_EVERY", str(_as_text(RETENTION_EVERY))),
        help="how often a Collection's spec.retention is applied, like 5m "
        "($SHARDKEEPER_RETENTION_EVERY; default: %(default)s)",
    )
    parser.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics, /healthz")
    parser.add_argument(
        "--metrics-address",
        default=env.get("POD_IP", "0.0.0.0"),
        help="address to serve metrics on (default: $POD_IP, else every address)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=env.get("POD_NAMESPACE", "default"),
        help="namespace of the leader Lease (default: $POD_NAMESPACE, else default)",
    )
    parser.add_argument("--leader-election-name", default=LEADER_LEASE, help="name of the Lease")
    parser.add_argument(
        "--identity",
        default=env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        help="this replica's name in the Lease (default: $POD_NAME, else host-pid)",
    )
    parser.add_argument("--workers", type=int, default=8, help="reconciles run at once")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


async def watch_secret_changes(
    manager: Manager, client: kube.AsyncKube, namespaces: Sequence[str]
) -> None:
    # from the first reconcile on: until then the cache does not know what names a Secret
    await manager.started.wait()
    await watch_secrets(client.transport, namespaces or [None], manager.on_secret)


def _duration(text: str) -> timedelta:
    try:
        value = Duration.parse(text).to_timedelta()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError("the duration must be more than 0s")
    return value


def _prune_every(text: str) -> Duration:
    try:
        every = Duration.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not prune_every_allowed(every):
        raise argparse.ArgumentTypeError(
            f"must be 0s (never) or from {PRUNE_EVERY_MIN} to {PRUNE_EVERY_MAX}"
        )
    return every


def _as_text(value: timedelta) -> str:
    return str(Duration.of(seconds=int(value.total_seconds())))


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        # kopf logs every handled watch event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("shardkeeper").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact.LogFilter())
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    client = kube.AsyncKube(kube.connect())
    elector = LeaderElector(
        client, args.leader_election_namespace, args.leader_election_name, args.identity
    )
    server = await metrics.serve(args.metrics_port, args.metrics_address, elector.in_contact)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        acquiring = asyncio.create_task(elector.acquire())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            return 0
        stopping.cancel()
        return await lead(args, client, elector, stop)
    finally:
        await server.cleanup()
        client.close()


async def lead(
    args: argparse.Namespace, client: kube.AsyncKube, elector: LeaderElector, stop: asyncio.Event
) -> int:
    queue = WorkQueue()
    deps = Deps(
        cache=Cache(),
        kube=client,
        recorder=Recorder(client, args.identity),
        queue=queue,
        defaults=WorkloadDefaults(
            args.shard_image, args.lease_duration, args.status_interval, args.prune_every
        ),
        splits=SplitSettings(catch_up_timeout=args.split_catch_up_timeout),
        retention_every=args.retention_every,
    )
    manager = Manager(deps)
    settings = kopf.OperatorSettings()
    # leader election is ours (above): kopf's peering only pauses equal-priority peers
    # after the fact, so it is off
    settings.peering.standalone = True
    settings.posting.enabled = False
    # kopf removes *its* finalizer from objects none of its handlers needs it for, so it
    # must not be told that ours is its own

    holding = asyncio.create_task(elector.hold())
    holding.add_done_callback(lambda _: stop.set())
    workers = asyncio.create_task(manager.run(args.workers))
    workers.add_done_callback(lambda t: stop.set() if not t.cancelled() else None)
    metrics.SECRETS_KEPT.set_function(lambda: len(deps.cache.secrets))
    secrets = asyncio.create_task(watch_secret_changes(manager, client, args.namespace))
    try:
        await kopf.operator(
            registry=build_registry(manager),
            settings=settings,
            stop_flag=stop,
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
        )
    finally:
        queue.close()
        await deps.recorder.flush()
        lost = holding.done()
        for task in (workers, secrets, holding):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not lost:
            await elector.release()
    if lost:
        log.error("lost the leader Lease: exiting")
        return 1
    return 0
