"""What the real node changes on the machine, and undoes: the pods' bridge, the one
Service route there is (no kube-proxy runs), images imported into containerd, and on the
way down the containers, network namespaces, mounts and cgroups that kubelet and
containerd leave when they are stopped rather than drained."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from shardkeeper_dev.realnode.config import BRIDGE, CTR_NAMESPACE, GATEWAY, POD_SUBNET, Layout

# the `kubernetes` Service's ClusterIP (the first of the API server's service range)
API_SERVICE_IP = "10.96.0.1"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# what the real node needs from the machine, by Debian package
PACKAGES = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "umoci": "umoci",
    "gcc": "gcc",
}


class HostError(RuntimeError):
    """The machine lacks what the real node needs, or refused a change."""


def _run(argv: Sequence[str], what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HostError(f"{what} failed:\n$ {' '.join(argv)}\n{proc.stderr.strip()[-2000:]}")
    return proc


def check_requirements() -> None:
    """Fail before anything starts if a package or the root user is missing."""
    if os.geteuid() != 0:
        raise HostError("the real node needs root (containerd, runc, network namespaces)")
    missing = sorted({pkg for binary, pkg in PACKAGES.items() if shutil.which(binary) is None})
    if not (Path("/usr/lib/cni") / "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise HostError(
            f"the real node needs {', '.join(missing)}: `apt-get install {' '.join(missing)}`"
        )


def ensure_bridge() -> None:
    """The pods' bridge with the node's address on it, so that the control plane can
    listen there before the first pod's veth joins it."""
    if _run(["ip", "link", "show", BRIDGE], "ip link show", check=False).returncode != 0:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"], "creating the bridge")
    prefix = POD_SUBNET.prefixlen
    _run(["ip", "addr", "replace", f"{GATEWAY}/{prefix}", "dev", BRIDGE], "addressing the bridge")
    _run(["ip", "link", "set", BRIDGE, "up"], "bringing the bridge up")


def remove_bridge() -> None:
    _run(["ip", "link", "delete", BRIDGE], "removing the bridge", check=False)


def _api_rule(apiserver_port: int, tag: str) -> list[str]:
    return [
        "PREROUTING",
        "-i", BRIDGE, "-d", API_SERVICE_IP, "-p", "tcp", "--dport", "443",
        "-m", "comment", "--comment", f"shardkeeper-dev {tag}",
        "-j", "DNAT", "--to-destination", f"{GATEWAY}:{apiserver_port}",
    ]  # fmt: skip


def route_api_service(apiserver_port: int, tag: str) -> None:
    """Pods reach the API server as ``kubernetes.default`` (what kubelet puts in their
    KUBERNETES_SERVICE_HOST): DNAT from the Service's address to the API server."""
    rule = _api_rule(apiserver_port, tag)
    if _run(["iptables", "-t", "nat", "-C", *rule], "iptables -C", check=False).returncode:
        _run(["iptables", "-t", "nat", "-A", *rule], "routing the kubernetes Service")


def unroute_api_service(apiserver_port: int, tag: str) -> None:
    rule = _api_rule(apiserver_port, tag)
    while _run(["iptables", "-t", "nat", "-D", *rule], "iptables -D", check=False).returncode == 0:
        pass


def ctr(layout: Layout, *args: str) -> list[str]:
    return ["ctr", "--address", str(layout.socket), "--namespace", CTR_NAMESPACE, *args]


def import_image(layout: Layout, archive: Path, base_name: str) -> None:
    """Import an OCI archive whose index tags the image, as ``base_name:<tag>``."""
    _run(
        ctr(layout, "images", "import", "--base-name", base_name, str(archive)),
        f"importing {archive} into containerd",
    )


def image_names(layout: Layout) -> list[str]:
    out = _run(ctr(layout, "images", "ls", "-q"), "listing containerd's images").stdout
    return out.split()


def shim_pids(layout: Layout) -> set[int]:
    """The PIDs of the shims of the k8s.io namespace's running tasks: the parents of the
    tasks' processes (containerd 1.6 writes no pid file for a shim)."""
    tasks = layout.containerd_state / "io.containerd.runtime.v2.task" / CTR_NAMESPACE
    pids = set()
    for path in tasks.glob("*/init.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{int(path.read_text().strip())}/stat").read_text()
            pids.add(int(stat[stat.rindex(")") + 2 :].split()[1]))
    return pids


def kill_shims(layout: Layout, pids: frozenset[int]) -> None:
    """SIGKILL those of ``pids`` that are still shims of this containerd (a PID may have
    been reused since): a shim whose task was being created as kubelet stopped can
    outlive its container."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(layout.socket).encode() in cmdline.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def remove_containers(layout: Layout) -> frozenset[int]:
    """Kill and delete every container of the k8s.io namespace and the network namespace
    of each pod sandbox: what stopping containerd leaves running (its shims outlive it).
    A sandbox whose creation was under way when kubelet stopped may appear meanwhile:
    the listing is repeated until it is empty. The PIDs of the shims seen."""
    shims: set[int] = set()
    for _ in range(10):
        listed = _run(ctr(layout, "containers", "ls", "-q"), "listing containers", check=False)
        if listed.returncode != 0 or not listed.stdout.split():
            break
        shims |= shim_pids(layout)
        _remove(layout, listed.stdout.split())
        time.sleep(0.2)
    return frozenset(shims)


def _remove(layout: Layout, cids: list[str]) -> None:
    netns: list[str] = []
    for cid in cids:
        info = _run(ctr(layout, "containers", "info", cid), "container info", check=False)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            namespaces = json.loads(info.stdout)["Spec"]["linux"]["namespaces"]
            netns += [n["path"] for n in namespaces if n["type"] == "network" and n.get("path")]
        _run(ctr(layout, "tasks", "delete", "--force", cid), "deleting a task", check=False)
        _run(ctr(layout, "containers", "delete", cid), "deleting a container", check=False)
    for path in netns:
        _run(["umount", path], "unmounting a network namespace", check=False)
        with contextlib.suppress(OSError):
            os.unlink(path)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    found = []
    prefix = str(root.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: Path) -> None:
    """Lazily unmount what kubelet and containerd mounted below ``root`` (volumes,
    secrets, rootfs, shm), so that the directory can be removed."""
    for point in mounts_under(root):
        _run(["umount", "-l", point], f"unmounting {point}", check=False)


def remove_pod_cgroups() -> None:
    """Remove kubelet's empty ``kubepods`` cgroups in every v1 hierarchy, innermost first."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for _ in range(50):  # a cgroup whose last task is exiting is busy for a moment
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for directory in [*dirs, top]:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if not top.exists():
                break
            time.sleep(0.1)
