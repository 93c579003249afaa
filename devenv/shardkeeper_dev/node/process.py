"""Containers as host processes, each in its own mount, UTS and PID namespaces.

A container is started as

    setpriv --pdeathsig KILL -- unshare --mount --propagation private --uts --pid --fork
        --kill-child --mount-proc -- /bin/sh -c SCRIPT sh COMMAND ARGS...

where SCRIPT bind-mounts the volumes at their mountPaths (visible to this container
only), sets the hostname, enters the working directory and runs the command. The shell
is PID 1 of the container and the command its child, so the command keeps ordinary
signal handling (a PID 1 ignores SIGTERM it has no handler for).

Nothing outlives the node: setpriv makes unshare die with the node thread that started
it, ``--kill-child`` makes the container's PID 1 die with unshare, and the kernel kills
every process of a PID namespace when its PID 1 ends.

The container runs in its own session, so signals go to its process group: unshare
ignores SIGTERM, the shell (PID 1) ignores it, and the command and its children get it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shardkeeper_dev import processes
from shardkeeper_dev.node.volumes import Mount

HOSTNAME_MAX = 63


@dataclasses.dataclass(frozen=True)
class Tools:
    """Absolute paths of the host tools, so a container's PATH cannot change them."""

    unshare: str
    nsenter: str
    mount: str
    mkdir: str
    sh: str
    # optional: without it the host name is written to /proc, which needs real root
    hostname: str | None = None

    @classmethod
    def find(cls) -> Tools:
        found = {}
        search = "/usr/sbin:/usr/bin:/sbin:/bin"
        for name in ("unshare", "nsenter", "mount", "mkdir", "sh"):
            path = shutil.which(name, path=search)
            if path is None:
                raise RuntimeError(f"{name} (util-linux/coreutils) is needed by the process node")
            found[name] = path
        return cls(**found, hostname=shutil.which("hostname", path=search))


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    working_dir: str
    mounts: Sequence[Mount]
    hostname: str
    log_path: Path


def hostname_for(pod_name: str, spec_hostname: str | None) -> str:
    # as a kubelet: spec.hostname, else the pod name cut to a valid host name
    name = spec_hostname or pod_name
    return name[:HOSTNAME_MAX].rstrip("-.") or "pod"


def setup_script(spec: LaunchSpec, tools: Tools) -> str:
    """The shell that prepares the container's namespaces, then runs ``"$@"``."""
    q = shlex.quote
    lines = ["set -e"]
    for m in spec.mounts:
        # the mount point is made inside the namespace, after the mounts before it, so a
        # mount nested in another volume gets its mount point in that volume
        lines.append(
            f"if [ -d {q(m.source)} ]; then {q(tools.mkdir)} -p {q(m.target)}; "
            f'else {q(tools.mkdir)} -p "$(dirname {q(m.target)})"; '
            f"[ -e {q(m.target)} ] || : > {q(m.target)}; fi"
        )
        lines.append(f"{q(tools.mount)} --bind {q(m.source)} {q(m.target)}")
        if m.read_only:
            lines.append(f"{q(tools.mount)} -o remount,bind,ro {q(m.target)}")
    if tools.hostname:
        lines.append(f"{q(tools.hostname)} {q(spec.hostname)}")
    else:
        lines.append(f"echo {q(spec.hostname)} > /proc/sys/kernel/hostname")
    lines.append(f"{q(tools.mkdir)} -p {q(spec.working_dir)}")
    lines.append(f"cd {q(spec.working_dir)}")
    lines.append("set +e")
    # not `exec`: the shell stays PID 1 so that the command is not
    lines.append('"$@"')
    lines.append("exit $?")
    return "\n".join(lines) + "\n"


def launch_argv(spec: LaunchSpec, tools: Tools, *, as_root: bool) -> list[str]:
    namespaces = ["--mount", "--propagation", "private", "--uts", "--pid", "--fork"]
    if not as_root:
        # an unprivileged node maps itself to root in a user namespace to be allowed to
        # mount; it cannot create mount points outside directories it may write
        namespaces = ["--user", "--map-root-user", *namespaces]
    return [
        tools.unshare,
        *namespaces,
        "--kill-child",
        "--mount-proc",
        "--",
        tools.sh,
        "-c",
        setup_script(spec, tools),
        "sh",
        *spec.argv,
    ]


def exit_code(returncode: int) -> tuple[int, int | None]:
    """(exit code, signal) as a container runtime reports a process's end."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


class ContainerProcess:
    """A started container. ``on_exit`` is called (from another thread) when it ends;
    reaping and signalling stay with the caller's thread, so a signal never reaches a
    process group whose leader was already reaped."""

    def __init__(self, popen: subprocess.Popen[bytes], on_exit: Callable[[], None]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._waiter = threading.Thread(
            target=self._wait, args=(on_exit,), name=f"wait-{popen.pid}", daemon=True
        )
        self._waiter.start()

    def _wait(self, on_exit: Callable[[], None]) -> None:
        # WNOWAIT: see the end without reaping, so the pid stays ours until poll()
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        on_exit()

    def poll(self) -> int | None:
        return self._popen.poll()

    def signal(self, sig: signal.Signals) -> None:
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def init_pid(self) -> int | None:
        """The host pid of the container's PID 1 (unshare's child), for nsenter."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == self.pid:
                return int(entry.name)
        return None


def start(
    spec: LaunchSpec, tools: Tools, on_exit: Callable[[], None], *, as_root: bool
) -> ContainerProcess:
    """Start a container from the calling thread, which it must not outlive."""
    _, popen = processes.spawn(
        spec.name,
        launch_argv(spec, tools, as_root=as_root),
        env=spec.env,
        log_path=spec.log_path,
        die_with_parent=True,
    )
    return ContainerProcess(popen, on_exit)


def exec_in(
    process: ContainerProcess,
    argv: Sequence[str],
    env: Mapping[str, str],
    tools: Tools,
    timeout: float,
) -> tuple[int, str]:
    """Run ``argv`` inside a running container's namespaces (exec probes)."""
    target = process.init_pid()
    if target is None:
        return -1, "container is not running"
    proc = subprocess.run(
        [tools.nsenter, "-t", str(target), "--mount", "--uts", "--pid", "--wd", "--", *argv],
        env=dict(env),
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return proc.returncode, output
