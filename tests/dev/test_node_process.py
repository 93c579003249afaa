"""Containers as host processes, for real: private bind mounts, hostname, PID namespace,
signals, exec, and nothing left behind when the container or the node dies."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from tests.support.wait import wait_for

from shardkeeper_dev.node.process import ContainerProcess, LaunchSpec, Tools, exec_in, start
from shardkeeper_dev.node.volumes import Mount

TOOLS = Tools.find()


def launch(tmp_path: Path, argv: list[str], mounts: list[Mount] | None = None) -> LaunchSpec:
    return LaunchSpec(
        name="test",
        argv=argv,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        working_dir=str(tmp_path / "work"),
        mounts=mounts or [],
        hostname="box-0",
        log_path=tmp_path / "out.log",
    )


def run(spec: LaunchSpec) -> tuple[ContainerProcess, threading.Event]:
    ended = threading.Event()
    return start(spec, TOOLS, ended.set, as_root=True), ended


def pids_running(*argv: str) -> list[int]:
    """Host pids of live processes running exactly ``argv``."""
    wanted = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if cmdline == wanted and stat[stat.rindex(")") + 2] not in "ZX":
            found.append(int(entry.name))
    return found


def test_mounts_are_private_read_only_where_asked_and_hostname_is_set(tmp_path: Path) -> None:
    data, config, target = tmp_path / "data", tmp_path / "config", tmp_path / "target"
    data.mkdir()
    config.mkdir()
    (config / "settings").write_text("x=1")
    script = (
        f"cat {target}/config/settings; echo; hostname; echo pid $$;"
        f" echo hi > {target}/written;"
        f" touch {target}/config/nope 2>/dev/null && echo config-writable || echo config-read-only"
    )
    mounts = [Mount(str(data), str(target), False), Mount(str(config), f"{target}/config", True)]
    process, ended = run(launch(tmp_path, ["sh", "-c", script], mounts))
    assert ended.wait(30)
    assert process.poll() == 0
    lines = (tmp_path / "out.log").read_text().splitlines()
    assert lines[:2] == ["x=1", "box-0"]
    assert lines[2] != "pid 1"  # the shell that set up the container is PID 1
    assert lines[3] == "config-read-only"
    # writes went to the volume; the host's own mount point stays untouched
    assert (data / "written").read_text() == "hi\n"
    assert (data / "config").is_dir()  # the nested mount point, made inside the volume
    assert not (target / "written").exists()
    assert (tmp_path / "work").is_dir()


def test_sigterm_reaches_the_command(tmp_path: Path) -> None:
    argv = ["python", "-c", f"import time; time.sleep({secrets.randbelow(10**6) + 10**6})"]
    process, ended = run(launch(tmp_path, argv))
    wait_for(lambda: pids_running(*argv), timeout=30, what="the command to start")
    process.signal(signal.SIGTERM)
    assert ended.wait(30)
    assert process.poll() == 143  # the command died of SIGTERM, reported as a shell does


def test_processes_that_escape_the_group_die_with_the_container(tmp_path: Path) -> None:
    marker = str(secrets.randbelow(10**6) + 10**6)
    process, ended = run(launch(tmp_path, ["sh", "-c", f"setsid sleep {marker} & sleep 600"]))
    wait_for(lambda: len(pids_running("sleep", marker)) == 1, timeout=30, what="the escapee")
    process.signal(signal.SIGKILL)
    assert ended.wait(30)
    process.poll()
    wait_for(lambda: not pids_running("sleep", marker), timeout=10, what="the escapee to be killed")


def test_exec_runs_inside_the_containers_namespaces(tmp_path: Path) -> None:
    secret_dir, target = tmp_path / "secret", tmp_path / "seen-only-inside"
    secret_dir.mkdir()
    (secret_dir / "file").write_text("inside")
    marker = str(secrets.randbelow(10**6) + 10**6)
    process, ended = run(
        launch(tmp_path, ["sleep", marker], [Mount(str(secret_dir), str(target), True)])
    )
    try:
        wait_for(lambda: pids_running("sleep", marker), timeout=30, what="the container")
        code, output = exec_in(
            process, ["cat", f"{target}/file"], {"PATH": "/usr/bin:/bin"}, TOOLS, 10
        )
        assert (code, output) == (0, "inside")
        code, output = exec_in(process, ["hostname"], {"PATH": "/usr/bin:/bin"}, TOOLS, 10)
        assert output.strip() == "box-0"
        assert not (target / "file").exists()
    finally:
        process.signal(signal.SIGKILL)
        ended.wait(30)
        process.poll()


def test_an_unprivileged_node_mounts_in_a_user_namespace() -> None:
    with tempfile.TemporaryDirectory(prefix="unprivileged-node-") as tmp:
        # not pytest's tmp_path: it lies in a directory only root may enter
        check_unprivileged(Path(tmp))


def check_unprivileged(tmp_path: Path) -> None:
    nobody = 65534
    data, target = tmp_path / "data", tmp_path / "target"
    for path in (tmp_path, data, target):
        path.mkdir(exist_ok=True)
        path.chmod(0o777)
    (data / "file").write_text("mounted")
    node = textwrap.dedent(
        f"""
        import threading
        from pathlib import Path
        from shardkeeper_dev.node.process import LaunchSpec, Tools, start
        from shardkeeper_dev.node.volumes import Mount
        command = ["sh", "-c", "cat {target}/file; echo; hostname; id -u"]
        mounts = [Mount("{data}", "{target}", True)]
        spec = LaunchSpec("t", command, {{"PATH": "/usr/bin:/bin"}}, "{tmp_path}", mounts,
                          "box-1", Path("{tmp_path}/out.log"))
        ended = threading.Event()
        process = start(spec, Tools.find(), ended.set, as_root=False)
        ended.wait(30)
        print(process.poll())
        """
    )
    setpriv = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", "--"]
    result = subprocess.run(
        [*setpriv, sys.executable, "-c", node], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "0", result.stderr
    # inside its user namespace the container is root, on the host it is nobody
    assert (tmp_path / "out.log").read_text().splitlines() == ["mounted", "box-1", "0"]
    assert (tmp_path / "out.log").stat().st_uid == nobody


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_containers_die_with_the_node(tmp_path: Path, how: signal.Signals) -> None:
    """However the node process ends, its containers end with it (parent-death signal,
    then the PID namespace)."""
    marker = str(secrets.randbelow(10**6) + 10**6)
    node = textwrap.dedent(
        f"""
        import threading, time
        from pathlib import Path
        from shardkeeper_dev.node.process import LaunchSpec, Tools, start
        command = ["sh", "-c", "sleep {marker} & sleep {marker}; true"]
        env = {{"PATH": "/usr/bin:/bin"}}
        spec = LaunchSpec("t", command, env, "{tmp_path}", [], "n", Path("{tmp_path}/out.log"))
        start(spec, Tools.find(), lambda: None, as_root=True)
        print("started", flush=True)
        time.sleep(600)
        """
    )
    fake_node = subprocess.Popen([sys.executable, "-c", node], stdout=subprocess.PIPE, text=True)
    try:
        assert fake_node.stdout is not None
        assert fake_node.stdout.readline().strip() == "started"
        wait_for(lambda: len(pids_running("sleep", marker)) == 2, timeout=30, what="the container")
        fake_node.send_signal(how)
        fake_node.wait(30)
        wait_for(
            lambda: not pids_running("sleep", marker),
            timeout=10,
            what="the container's processes to die with the node",
        )
    finally:
        if fake_node.poll() is None:
            fake_node.kill()
            fake_node.wait()
