"""What the real node's processes are given (shardkeeper_dev.realnode.config)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from shardkeeper_dev.realnode import config, pause

LAYOUT = config.Layout(Path("/state/real-node"))


def test_containerd_runs_runc_with_cgroupfs_our_pause_image_and_state_under_the_layout() -> None:
    doc = tomllib.loads(config.containerd_config(LAYOUT))
    assert doc["root"] == "/state/real-node/containerd/root"
    assert doc["state"] == "/state/real-node/containerd/state"
    assert doc["grpc"]["address"] == str(LAYOUT.socket)
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == pause.REFERENCE
    # the VMs withhold CAP_SYS_RESOURCE: a sandbox's -998 would fail in runc
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(LAYOUT.cni_conf_dir)


def test_the_pod_network_is_a_bridge_with_host_local_addresses_kept_under_the_layout() -> None:
    (bridge,) = config.cni_network(LAYOUT)["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["isGateway"]) == ("bridge", "skdev0", True)
    ipam = bridge["ipam"]
    assert ipam["type"] == "host-local"
    assert ipam["ranges"] == [[{"subnet": "10.244.0.0/24", "gateway": config.GATEWAY}]]
    assert ipam["dataDir"] == str(LAYOUT.cni_ipam_dir)


def test_kubelet_allows_cgroup_v1_uses_cgroupfs_and_trusts_only_the_ca() -> None:
    ca = Path("/state/pki/ca.crt")
    conf = config.kubelet_config(LAYOUT, config.KubeletPorts(10250, 10248), ca)
    assert conf["failCgroupV1"] is False
    assert conf["cgroupDriver"] == "cgroupfs"
    assert conf["containerRuntimeEndpoint"] == f"unix://{LAYOUT.socket}"
    assert conf["authentication"]["anonymous"] == {"enabled": False}
    assert conf["authentication"]["x509"] == {"clientCAFile": str(ca)}
    assert (conf["address"], conf["port"], conf["readOnlyPort"]) == (config.GATEWAY, 10250, 0)
    assert conf["podLogsDir"] == str(LAYOUT.pod_logs)
    argv = config.kubelet_argv(Path("/tools/kubelet"), LAYOUT, Path("/state/k.kubeconfig"))
    assert f"--root-dir={LAYOUT.kubelet_root}" in argv
    assert f"--hostname-override={config.NODE_NAME}" in argv
