"""What ``shardkeeper dev`` keeps across restarts: the ports of a state directory, and the
exports of ``dev env`` that put the environment's own kubectl and helm on PATH."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from shardkeeper_dev import environment, tools
from shardkeeper_dev.environment import EnvironmentError_, Ports, resolve_ports

RECORDED = Ports(
    apiserver=6443,
    etcd=2379,
    etcd_peer=2380,
    controller_manager=10257,
    s3=9000,
    s3_console=9001,
    postgres=5432,
    operator_metrics=8080,
)


def never_free(taken: set[int]) -> int:
    raise AssertionError("no port should be picked afresh")


def test_the_recorded_ports_are_reused_when_free() -> None:
    assert resolve_ports(Ports(), RECORDED, in_use=lambda _: False, free_port=never_free) == (
        RECORDED
    )


def test_a_requested_port_overrides_the_recorded_one() -> None:
    ports = resolve_ports(Ports(s3=19000), RECORDED, in_use=lambda _: False, free_port=never_free)
    assert ports == dataclasses.replace(RECORDED, s3=19000)


def test_a_taken_recorded_port_fails_naming_it_and_its_flag() -> None:
    with pytest.raises(EnvironmentError_) as caught:
        resolve_ports(Ports(), RECORDED, in_use=lambda port: port == 9000, free_port=never_free)
    message = str(caught.value)
    assert "port 9000 on 127.0.0.1" in message
    assert "s3 listened before" in message
    assert "--s3-port" in message


def test_without_a_record_the_ports_are_picked_afresh_and_distinct() -> None:
    picked = iter(range(40000, 40100))
    ports = resolve_ports(
        Ports(postgres=5432), None, in_use=lambda _: False, free_port=lambda _: next(picked)
    )
    values = list(dataclasses.asdict(ports).values())
    assert ports.postgres == 5432
    assert len(set(values)) == len(values)


def test_a_recorded_port_now_requested_for_another_component_is_not_reused_twice() -> None:
    picked = iter(range(40000, 40100))
    ports = resolve_ports(
        Ports(apiserver=9000), RECORDED, in_use=lambda _: False, free_port=lambda _: next(picked)
    )
    assert ports.apiserver == 9000
    assert ports.s3 == 40000


def test_the_ports_are_recorded_in_the_state_dir_and_survive_down(tmp_path: Path) -> None:
    env = environment.Environment(tmp_path / "env")
    assert env.recorded_ports() is None
    env.record_ports(RECORDED)
    env.down()
    assert environment.Environment(tmp_path / "env").recorded_ports() == RECORDED
    env.down(purge=True)
    assert environment.Environment(tmp_path / "env").recorded_ports() is None


def fake_tool(cache: Path, name: str, binary: str) -> Path:
    tool = tools.TOOLS[name]
    directory = cache / "tools" / tool.key
    directory.mkdir(parents=True)
    (directory / ".complete").touch()
    path = directory / binary
    path.write_text(f"#!/bin/sh\necho {binary} from the cache\n")
    path.chmod(0o755)
    return path


def info_for(state_dir: Path) -> environment.EnvInfo:
    return environment.EnvInfo(
        state_dir=state_dir,
        kubeconfig=state_dir / "kubeconfig",
        server="https://127.0.0.1:6443",
        node_name="process-node",
        s3_endpoint="http://127.0.0.1:9000",
        s3_access_key="shardkeeper",
        s3_secret_key="s e c r e t",
        s3_region="us-east-1",
        s3_bucket="shardkeeper",
        postgres_host="127.0.0.1",
        postgres_port=5432,
        postgres_user="postgres",
        postgres_password="p'w",
        postgres_database="shardkeeper",
    )


def test_dev_env_puts_the_cached_kubectl_and_helm_first_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDKEEPER_CACHE", str(tmp_path / "cache"))
    kubectl = fake_tool(tmp_path / "cache", "kubernetes", "kubectl")
    fake_tool(tmp_path / "cache", "helm", "helm")
    info = info_for(tmp_path / "state dir")
    assert environment.link_client_tools(info.bin_dir) == ["kubectl", "helm"]
    # a machine with no kubectl of its own: only the shell's basics on PATH
    script = (
        f"{info.shell_exports()}"
        'command -v kubectl; kubectl; helm; printf "%s\\n" "$SHARDKEEPER_S3_SECRET_KEY"; '
        'printf "%s\\n" "$PATH"'
    )
    out = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == str(info.bin_dir / "kubectl")
    assert (info.bin_dir / "kubectl").resolve() == kubectl.resolve()
    assert out[1:3] == ["kubectl from the cache", "helm from the cache"]
    assert out[3] == "s e c r e t"  # values are quoted for the shell
    assert out[4] == f"{info.bin_dir}:/usr/bin:/bin"


def test_a_tool_not_built_is_not_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDKEEPER_CACHE", str(tmp_path / "cache"))
    fake_tool(tmp_path / "cache", "kubernetes", "kubectl")
    bin_dir = tmp_path / "bin"
    (bin_dir).mkdir()
    (bin_dir / "helm").symlink_to(tmp_path / "gone")
    assert environment.link_client_tools(bin_dir) == ["kubectl"]
    assert sorted(p.name for p in bin_dir.iterdir()) == ["kubectl"]
