"""Preparing and tearing down the real node around its processes (containerd, kubelet,
and the process node's binder and provisioner with ``--for-kubelet``), which the
environment starts and stops by PID like its other components."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import yaml

from shardkeeper_dev import image, tools
from shardkeeper_dev.realnode import config, host, pause

# the chart's and the operator's image reference, ``shardkeeper:<version>``, as kubelet
# normalizes it
IMAGE_BASE_NAME = "docker.io/library/shardkeeper"


def default_image_archive() -> Path:
    return image.archive_path(image.REPO / ".build", image.project_version())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(layout: config.Layout, client_ca: Path) -> None:
    """Before containerd starts: the bridge, what was left by a node that did not stop
    cleanly, and the configuration files."""
    host.check_requirements()
    tools.binary_path("kubelet")  # a missing tool fails before anything starts
    host.ensure_bridge()
    host.unmount_under(layout.root)
    # no pod survives ``down``, so no address is still in use
    shutil.rmtree(layout.cni_ipam_dir, ignore_errors=True)
    for directory in (layout.cni_conf_dir, layout.pod_logs, layout.kubelet_root):
        directory.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(config.containerd_config(layout))
    (layout.cni_conf_dir / "10-shardkeeper.conflist").write_text(
        json.dumps(config.cni_network(layout), indent=2)
    )
    ports = config.KubeletPorts(serving=_free_port(), healthz=_free_port())
    layout.kubelet_config.write_text(
        yaml.safe_dump(config.kubelet_config(layout, ports, client_ca))
    )


def import_images(
    layout: config.Layout, archive: Path, log: Callable[[str], None] = lambda _m: None
) -> None:
    """The pause image (built once per machine) and the product's image, into containerd's
    k8s.io namespace; the product's is built first if ``archive`` is not there."""
    if not archive.exists():
        log(f"building the image into {archive} (make image)")
        image.build(archive.parent, log=log)
    host.import_image(layout, pause.archive(), pause.REFERENCE_BASE)
    host.import_image(layout, archive, IMAGE_BASE_NAME)


def containerd_argv(layout: config.Layout) -> list[str]:
    containerd = shutil.which("containerd") or "containerd"
    return config.containerd_argv(containerd, layout)


def kubelet_argv(layout: config.Layout, kubeconfig: Path) -> list[str]:
    return config.kubelet_argv(tools.binary_path("kubelet"), layout, kubeconfig)


def containerd_serves(layout: config.Layout) -> bool:
    if not layout.socket.exists():
        return False
    import subprocess

    proc = subprocess.run(host.ctr(layout, "version"), capture_output=True, timeout=10)
    return proc.returncode == 0


def teardown_containers(layout: config.Layout) -> frozenset[int]:
    """With containerd still running: every container and its pod's network namespace.
    The PIDs of the shims there were, for :func:`teardown_host`."""
    if containerd_serves(layout):
        return host.remove_containers(layout)
    return frozenset()


def teardown_host(
    layout: config.Layout, apiserver_port: int, tag: str, shims: frozenset[int] = frozenset()
) -> None:
    """With everything stopped: shims left over, mounts, kubelet's cgroups, the Service
    route, the bridge."""
    host.kill_shims(layout, shims)
    host.unmount_under(layout.root)
    host.remove_pod_cgroups()
    host.unroute_api_service(apiserver_port, tag)
    host.remove_bridge()
