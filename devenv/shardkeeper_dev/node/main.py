"""``shardkeeper dev node``: run the process node until SIGTERM or SIGINT.

Wiring only: informers feed the binder, the provisioner and the pod manager; the
registration keeps the Node alive. On SIGTERM every pod process is stopped (SIGTERM,
SIGKILL after a short grace) and the node exits 0; the pods stay bound to it and are
run again when it starts next.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from shardkeeper_dev.node import timing
from shardkeeper_dev.node.binder import Binder
from shardkeeper_dev.node.events import Events
from shardkeeper_dev.node.informer import Informer, ObjectsByKey
from shardkeeper_dev.node.ipam import IpAllocator, pod_network_for
from shardkeeper_dev.node.kube import Kube, collection, key_of
from shardkeeper_dev.node.kubeletapi import KubeletApi
from shardkeeper_dev.node.layout import Layout
from shardkeeper_dev.node.podmanager import PodManager, remove_stale_pod_dirs
from shardkeeper_dev.node.podworker import NodeServices
from shardkeeper_dev.node.process import Tools
from shardkeeper_dev.node.provisioner import Provisioner
from shardkeeper_dev.node.registration import Registration, host_resources
from shardkeeper_dev.node.workqueue import KeysToReconcile

log = logging.getLogger("shardkeeper_dev.node")

EXCLUDED_NAMESPACES = frozenset({"kube-system"})
# the node's own address (127.0.0.1) and local resolvers (127.0.0.53) live here
RESERVED = ipaddress.IPv4Network("127.0.0.0/16")
SYNC_TIMEOUT = 60.0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="shardkeeper dev node",
        description="A development and test stand-in for a kubelet: runs pods as local "
        "processes. See docs/process-node.md.",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="pods, volumes, logs")
    parser.add_argument("--name", required=True, help="the Node's name")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="serve this namespace (repeatable; default: all but kube-system)",
    )
    parser.add_argument(
        "--pod-network",
        type=ipaddress.IPv4Network,
        default=None,
        help="loopback addresses for pods, such as 127.1.0.0/16 (default: a /16 derived "
        "from the state dir); nodes on one machine need different ones",
    )
    parser.add_argument(
        "--for-kubelet",
        action="store_true",
        help="only bind pods and provision local volumes, for a real kubelet that runs "
        "the pods on this Node (the real node, docs/real-node.md)",
    )
    args = parser.parse_args(argv)
    if args.pod_network is None:
        args.pod_network = pod_network_for(args.state_dir.resolve())
    if not args.pod_network.is_loopback or args.pod_network.overlaps(RESERVED):
        parser.error(f"--pod-network must be inside 127.0.0.0/8 and outside {RESERVED}")
    return args


def base_env() -> dict[str, str]:
    """What every container's environment starts from, before the pod's own variables.

    The directory of the node's Python comes first on PATH, so that `python` and
    `shardkeeper` are the project's.
    """
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {"PATH": f"{Path(sys.executable).parent}:{path}"}
    for name in ("HOME", "LANG", "LC_ALL", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _served(namespace: str | None, served: frozenset[str]) -> bool:
    if served:
        return namespace in served
    return namespace not in EXCLUDED_NAMESPACES


def _namespace_filter(
    served: frozenset[str], handler: Callable[[str, dict[str, Any]], None]
) -> Callable[[str, dict[str, Any]], None]:
    def filtered(kind: str, obj: dict[str, Any]) -> None:
        if _served(obj["metadata"].get("namespace"), served):
            handler(kind, obj)

    return filtered


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    layout = Layout(state_dir)
    kube, server = Kube.from_kubeconfig(args.kubeconfig)
    served = frozenset(args.namespace)
    pods, claims, volumes = ObjectsByKey(), ObjectsByKey(), ObjectsByKey()
    events = Events(kube, args.name)
    # a real kubelet registers the Node and runs its pods; this binds and provisions only
    manager: PodManager | None = None
    registration: Registration | None = None
    if not args.for_kubelet:
        resources = host_resources(state_dir)
        kubelet_api = KubeletApi(layout)
        kubelet_api.start()
        registration = Registration(kube, args.name, resources, kubelet_api.port)
        registration.register()
        node = NodeServices(
            kube=kube,
            node_name=args.name,
            layout=layout,
            ips=IpAllocator(args.pod_network),
            claims=claims,
            volumes=volumes,
            server=server,
            base_env=base_env(),
            allocatable=resources,
            tools=Tools.find(),
            as_root=os.geteuid() == 0,
            events=events,
        )
        manager = PodManager(node)
    binder = Binder(kube, pods, args.name, events)
    source = "local" if args.for_kubelet else "hostPath"
    provisioner = Provisioner(kube, claims, volumes, layout, args.name, source=source)
    bind_queue = KeysToReconcile("bind", binder.reconcile)
    claim_queue = KeysToReconcile("provision", provisioner.reconcile_claim)
    volume_queue = KeysToReconcile("reclaim", provisioner.reconcile_volume)

    def on_pod(kind: str, pod: dict[str, Any]) -> None:
        if kind != "DELETED":
            bind_queue.add(key_of(pod))
        if manager is not None:
            manager.handle(kind, pod)

    scopes: list[str | None] = sorted(served) if served else [None]
    volume_informer = Informer(
        kube,
        collection("persistentvolumes", None),
        volumes,
        [lambda kind, pv: volume_queue.add(key_of(pv))],
    )
    claim_informers = [
        Informer(
            kube,
            collection("persistentvolumeclaims", ns),
            claims,
            [_namespace_filter(served, lambda kind, pvc: claim_queue.add(key_of(pvc)))],
        )
        for ns in scopes
    ]
    pod_informers = [
        Informer(kube, collection("pods", ns), pods, [_namespace_filter(served, on_pod)])
        for ns in scopes
    ]
    # volumes and claims first, so that adopted pods find their volumes at once
    informers = [volume_informer, *claim_informers, *pod_informers]
    threads = [
        threading.Thread(target=q.run, args=(stop,), name=q.name, daemon=True)
        for q in (bind_queue, claim_queue, volume_queue)
    ]
    if registration is not None:
        threads.append(
            threading.Thread(target=registration.run, args=(stop,), name="heartbeat", daemon=True)
        )
    for thread in threads:
        thread.start()
    # listed before any worker runs: these are the previous node process's pods
    previous_pods = [d.name for d in layout.run.iterdir()] if layout.run.is_dir() else []
    for informer in informers:
        threading.Thread(target=informer.run, args=(stop,), name="informer", daemon=True).start()
        if informer in (volume_informer, *claim_informers):
            informer.synced.wait(SYNC_TIMEOUT)
    synced = all(informer.synced.wait(SYNC_TIMEOUT) for informer in pod_informers)
    if synced and manager is not None:
        live = {pod["metadata"]["uid"] for pod in pods.values()}
        remove_stale_pod_dirs(layout, previous_pods, live)
    log.info(
        "node %s serving %s; state in %s",
        args.name,
        ", ".join(sorted(served)) or "all namespaces but kube-system",
        state_dir,
    )
    while not stop.wait(1.0):
        pass
    if manager is not None:
        manager.shutdown(timing.NODE_SHUTDOWN_GRACE + 5.0)
    for queue in (bind_queue, claim_queue, volume_queue):
        queue.wake()
    log.info("node %s stopped", args.name)
    return 0
