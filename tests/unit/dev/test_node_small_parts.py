"""The node's small pure parts: addresses, back-off, probe counting, quantities,
binding and provisioning decisions, the container launch script."""

from __future__ import annotations

import ipaddress
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from shardkeeper_dev.node import timing
from shardkeeper_dev.node.binder import binding, needs_binding
from shardkeeper_dev.node.ipam import IpAllocator, pod_network_for
from shardkeeper_dev.node.probestate import ProbeSpec, ProbeState
from shardkeeper_dev.node.process import (
    LaunchSpec,
    Tools,
    exit_code,
    hostname_for,
    launch_argv,
    setup_script,
)
from shardkeeper_dev.node.provisioner import (
    needs_volume,
    persistent_volume,
    should_reclaim,
    volume_path,
)
from shardkeeper_dev.node.quantity import parse_quantity
from shardkeeper_dev.node.volumes import Mount


def test_addresses_are_unique_loopback_and_not_reused_at_once() -> None:
    ips = IpAllocator(ipaddress.IPv4Network("127.9.0.0/23"))
    first = [ips.allocate(f"pod-{i}") for i in range(300)]
    assert len(set(first)) == 300
    assert all(ipaddress.IPv4Address(a).is_loopback for a in first)
    assert "127.0.0.1" not in first
    assert not any(a.endswith((".0", ".255")) for a in first)
    assert ips.allocate("pod-7") == first[7]  # stable per owner
    ips.release("pod-0")
    assert ips.allocate("new") not in first  # the freed one waits its turn


def test_addresses_run_out_and_come_back() -> None:
    ips = IpAllocator(ipaddress.IPv4Network("127.9.0.0/29"))  # .1 to .7 usable
    taken = [ips.allocate(str(i)) for i in range(7)]
    with pytest.raises(RuntimeError, match="no free pod address"):
        ips.allocate("one too many")
    ips.release("3")
    assert ips.allocate("again") == taken[3]


def test_reserving_an_adopted_pods_address() -> None:
    ips = IpAllocator(ipaddress.IPv4Network("127.9.0.0/24"))
    assert ips.reserve("a", "127.9.0.5")
    assert not ips.reserve("b", "127.9.0.5")  # taken
    assert not ips.reserve("c", "127.0.0.1")  # outside the pod network
    assert not ips.reserve("c", "not an ip")
    assert ips.allocate("d") == "127.9.0.6"  # after the adopted ones


def test_each_state_dir_has_its_own_stable_pod_network() -> None:
    networks = {pod_network_for(Path(f"/tmp/env-{i}/node")) for i in range(20)}
    assert len(networks) > 10
    # pinned, not compared with itself: a node restarted in another process (another hash
    # seed) must derive the same network, or its adopted pods' addresses fall outside it
    assert pod_network_for(Path("/tmp/env-1/node")) == ipaddress.IPv4Network("127.198.0.0/16")
    for network in networks:
        assert network.prefixlen == 16
        assert network.is_loopback
        assert not network.overlaps(ipaddress.IPv4Network("127.0.0.0/16"))


def test_backoff_doubles_caps_and_resets() -> None:
    delays = []
    delay = None
    for _ in range(12):
        delay = timing.next_backoff(delay, ran_for=1.0)
        delays.append(delay)
    assert delays[:4] == [timing.BACKOFF_INITIAL * f for f in (1, 2, 4, 8)]
    assert max(delays) == timing.BACKOFF_MAX
    assert timing.next_backoff(timing.BACKOFF_MAX, timing.BACKOFF_RESET_AFTER) == (
        timing.BACKOFF_INITIAL
    )


def test_setup_retries_start_soon_and_double_up_to_a_second() -> None:
    delays = [timing.setup_retry_delay(n) for n in range(40)]
    assert delays[:4] == [timing.SETUP_RETRY_FIRST * f for f in (1, 2, 4, 8)]
    assert delays == sorted(delays)
    assert max(delays) == timing.SETUP_RETRY == delays[-1]


def probe(**fields: Any) -> ProbeSpec:
    return ProbeSpec.from_probe({"httpGet": {"port": 80}, **fields})


def test_probe_defaults_and_timing() -> None:
    spec = probe()
    assert (spec.period, spec.timeout, spec.success_threshold, spec.failure_threshold) == (
        10.0,
        1.0,
        1,
        3,
    )
    state = ProbeState(probe(initialDelaySeconds=5, periodSeconds=2), started_at=100, initial=False)
    assert not state.due(104.9)
    assert state.due(105)
    state.record(True, "", now=105)
    assert state.next_due == 107


def test_probe_thresholds() -> None:
    state = ProbeState(probe(successThreshold=2, failureThreshold=2), 0, initial=False)
    assert not state.record(True, "", 1)
    assert not state.result
    assert state.record(True, "", 2)
    assert state.result
    assert not state.record(False, "no", 3)
    assert state.result
    assert not state.record(True, "", 4)
    assert not state.record(False, "no", 5)
    assert state.record(False, "no", 6)
    assert not state.result
    assert state.failed_out


def test_startup_probe_fails_out_without_changing_its_result() -> None:
    state = ProbeState(probe(failureThreshold=2), 0, initial=False)
    state.record(False, "", 1)
    assert not state.failed_out
    state.record(False, "", 2)
    assert state.failed_out
    assert not state.result


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Fraction(1, 2)), ("1Gi", 2**30), ("2", 2), ("1e3", 1000), ("1.5k", 1500)],
)
def test_quantities(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


def test_bad_quantity() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("12XB")


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def test_which_pods_to_bind() -> None:
    assert needs_binding(pod())
    assert needs_binding(pod(schedulerName="default-scheduler"))
    assert not needs_binding(pod(schedulerName="other"))
    assert not needs_binding(pod(nodeName="n"))
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert not needs_binding(deleting)
    assert binding(pod(), "node")["target"] == {"apiVersion": "v1", "kind": "Node", "name": "node"}
    assert binding(pod(), "node")["metadata"]["uid"] == "u"


def claim(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "data-web-0", "namespace": "ns", "uid": "c-uid"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        "status": {"phase": "Pending", **status},
    }


def test_volume_for_a_claim() -> None:
    assert needs_volume(claim())
    assert not needs_volume(claim(phase="Bound"))
    pv = persistent_volume(claim(), "node", Path("/state/volumes/ns/data-web-0-c-uid"))
    assert pv["metadata"]["name"] == "pvc-c-uid"
    assert pv["spec"]["claimRef"]["uid"] == "c-uid"
    assert pv["spec"]["capacity"] == {"storage": "2Gi"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert volume_path(pv) == "/state/volumes/ns/data-web-0-c-uid"
    released = {**pv, "status": {"phase": "Released"}}
    assert should_reclaim(released, "node")
    assert not should_reclaim(released, "other-node")
    assert not should_reclaim({**pv, "status": {"phase": "Bound"}}, "node")


def test_a_volume_for_a_real_kubelet_is_a_local_one() -> None:
    # kubelet applies a pod's fsGroup to a local volume, not to a hostPath one
    path = Path("/state/volumes/ns/data-web-0-c-uid")
    pv = persistent_volume(claim(), "node", path, "local")
    assert pv["spec"]["local"] == {"path": str(path)}
    assert "hostPath" not in pv["spec"]
    assert volume_path(pv) == str(path)
    assert should_reclaim({**pv, "status": {"phase": "Released"}}, "node")


TOOLS = Tools("/usr/bin/unshare", "/usr/bin/nsenter", "/bin/mount", "/bin/mkdir", "/bin/sh")
SPEC = LaunchSpec(
    name="ns/p/app",
    argv=["python", "-c", "print(1)"],
    env={},
    working_dir="/data/work dir",
    mounts=[Mount("/pv/x", "/data", False), Mount("/run/cfg", "/etc/cfg", True)],
    hostname="web-0",
    log_path=Path("/log"),
)


def test_launch_wraps_the_command_in_its_namespaces() -> None:
    argv = launch_argv(SPEC, TOOLS, as_root=True)
    assert argv[:2] == ["/usr/bin/unshare", "--mount"]
    assert {"--pid", "--fork", "--kill-child", "--uts", "--mount-proc"} <= set(argv)
    assert argv[-4:] == ["sh", "python", "-c", "print(1)"]
    assert "--map-root-user" in launch_argv(SPEC, TOOLS, as_root=False)


def test_setup_script_mounts_in_order_then_runs_the_command() -> None:
    script = setup_script(SPEC, TOOLS)
    lines = script.splitlines()
    assert lines.index("/bin/mount --bind /pv/x /data") < lines.index(
        "/bin/mount --bind /run/cfg /etc/cfg"
    )
    assert "/bin/mount -o remount,bind,ro /etc/cfg" in lines
    assert "/bin/mount -o remount,bind,ro /data" not in lines
    assert "cd '/data/work dir'" in lines
    # the shell must not exec the command: it stays PID 1
    assert lines[-2:] == ['"$@"', "exit $?"]


def test_exit_codes_and_hostnames() -> None:
    assert exit_code(3) == (3, None)
    assert exit_code(-9) == (137, 9)
    assert hostname_for("web-0", None) == "web-0"
    assert hostname_for("x" * 70, "") == "x" * 63
    assert hostname_for("pod", "custom") == "custom"
