"""What the real node's processes are given: containerd's configuration, the CNI network
and the KubeletConfiguration, computed from where they live and which ports they use.
Pure functions; :mod:`shardkeeper_dev.realnode.host` and the environment apply them."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any

from shardkeeper_dev.realnode import pause

NODE_NAME = "real-node"
# the bridge the pods' veths join; its address is the node's, where the control plane,
# MinIO and PostgreSQL listen so that pods can reach them
BRIDGE = "skdev0"
POD_SUBNET = ipaddress.IPv4Network("10.244.0.0/24")
GATEWAY = str(POD_SUBNET.network_address + 1)
CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = "/usr/sbin/runc"
# where containerd's CRI plugin keeps Kubernetes' images and containers
CTR_NAMESPACE = "k8s.io"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Everything of the real node under one directory of the environment's state."""

    root: Path

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def standin(self) -> Path:
        """The binder's and provisioner's state: the local volumes live under it."""
        return self.root / "standin"


def _toml_string(value: str | Path) -> str:
    # a JSON string is a TOML basic string for the paths and names used here
    return json.dumps(str(value))


def containerd_config(layout: Layout) -> str:
    """containerd 1.6's configuration (version 2): state, socket and network namespaces under
    ``layout``, runc with the cgroupfs driver (kubelet's), our pause image as the sandbox."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    runc = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
    return "\n".join(
        [
            "version = 2",
            f"root = {_toml_string(layout.containerd_root)}",
            f"state = {_toml_string(layout.containerd_state)}",
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", '
            '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
            '"io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]',
            "[grpc]",
            f"  address = {_toml_string(layout.socket)}",
            cri,
            f"  sandbox_image = {_toml_string(pause.REFERENCE)}",
            "  netns_mounts_under_state_dir = true",
            # these VMs withhold CAP_SYS_RESOURCE, without which runc cannot lower an
            # oom_score_adj (the sandbox's -998, a Guaranteed pod's -997): never below ours
            "  restrict_oom_score_adj = true",
            "  enable_unprivileged_ports = false",
            f"{cri[:-1]}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            runc,
            '  runtime_type = "io.containerd.runc.v2"',
            f"{runc[:-1]}.options]",
            f"  BinaryName = {_toml_string(RUNC)}",
            "  SystemdCgroup = false",
            f"{cri[:-1]}.cni]",
            f"  bin_dir = {_toml_string(CNI_BIN_DIR)}",
            f"  conf_dir = {_toml_string(layout.cni_conf_dir)}",
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_network(layout: Layout) -> dict[str, Any]:
    """One bridge network: each pod its own network namespace, a veth on :data:`BRIDGE`
    and an address of :data:`POD_SUBNET` from host-local, routed through the node."""
    return {
        "cniVersion": "0.4.0",
        "name": "shardkeeper-dev",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(POD_SUBNET), "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            }
        ],
    }


@dataclasses.dataclass(frozen=True)
class KubeletPorts:
    serving: int
    healthz: int


def kubelet_config(layout: Layout, ports: KubeletPorts, client_ca: Path) -> dict[str, Any]:
    """The KubeletConfiguration: cgroupfs as containerd's runc uses it, cgroup v1 allowed
    (Kubernetes 1.35 refuses it otherwise), clients authenticated by the environment's CA,
    eviction thresholds low enough for a shared development machine."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        "imageServiceEndpoint": f"unix://{layout.socket}",
        "address": GATEWAY,
        "port": ports.serving,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(layout.pod_logs),
        "failSwapOn": False,
        "serializeImagePulls": False,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
            "nodefs.inodesFree": "2%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
        # kubelet's own default (-999) needs CAP_SYS_RESOURCE, which these VMs withhold
        "oomScoreAdj": 0,
    }


def kubelet_argv(
    kubelet: Path, layout: Layout, kubeconfig: Path, node_name: str = NODE_NAME
) -> list[str]:
    return [
        str(kubelet),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_root / 'pki'}",
        f"--hostname-override={node_name}",
        f"--node-ip={GATEWAY}",
        "--v=1",
    ]


def containerd_argv(containerd: str, layout: Layout) -> list[str]:
    return [containerd, f"--config={layout.containerd_config}", "--log-level=warn"]
