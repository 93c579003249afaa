"""Starting and stopping the environment's processes, by PID and never by name.

A PID alone can be reused by the kernel after a process exits, so every record also keeps
the process's start time from ``/proc/<pid>/stat``: a PID whose start time differs is a
different process and is never signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int
    argv: tuple[str, ...]
    log: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=data["name"],
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            argv=tuple(data["argv"]),
            log=data["log"],
        )


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may contain spaces and parentheses; fields resume after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    stat = _stat(record.pid)
    return stat is not None and stat[1] == record.start_time and stat[0] not in ("Z", "X")


def _with_pdeathsig(argv: Sequence[str]) -> list[str]:
    # setpriv (util-linux) sets the parent-death signal and execs, which avoids a
    # preexec_fn in a threaded parent; the setting survives exec
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("setpriv (util-linux) is needed: apt-get install util-linux")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> tuple[ProcessRecord, subprocess.Popen[bytes]]:
    """Start ``argv`` in its own session with output appended to ``log_path``.

    ``die_with_parent`` ties the process's life to the calling thread (test sessions), so
    an interrupted run leaves nothing behind; ``shardkeeper dev up`` leaves it off so the
    environment outlives the command.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            _with_pdeathsig(argv) if die_with_parent else list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stat = _stat(proc.pid)
    start_time = stat[1] if stat else 0
    record = ProcessRecord(name, proc.pid, start_time, tuple(argv), str(log_path))
    return record, proc


def stop(
    record: ProcessRecord,
    *,
    timeout: float = 15.0,
    reap: Callable[[], object] | None = None,
    sig: signal.Signals = signal.SIGTERM,
) -> bool:
    """``sig`` (SIGTERM) to the process's group, then SIGKILL after ``timeout``. True if it
    had been alive.

    ``reap`` collects the exit status when the caller is the parent, so no zombie remains.
    """
    if not is_alive(record):
        return False
    _signal_group(record, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not is_alive(record):
            break
        time.sleep(0.05)
    else:
        _signal_group(record, signal.SIGKILL)
        while is_alive(record):
            if reap is not None:
                reap()
            time.sleep(0.05)
    return True


def kill(record: ProcessRecord) -> bool:
    """SIGKILL the process alone (not its group). True if it had been alive."""
    if not is_alive(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    return True


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    # the process leads its own session, so its group id equals its pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, sig)
