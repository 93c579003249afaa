"""A container's restarts, back-off and readiness, driven by a stand-in process."""

from __future__ import annotations

import signal
from typing import Any, cast

import pytest

from shardkeeper_dev.node import timing
from shardkeeper_dev.node.container import ContainerRunner, will_restart
from shardkeeper_dev.node.process import ContainerProcess
from shardkeeper_dev.node.status import Running, Terminated, Waiting


class StubProcess:
    """Only what ContainerRunner uses: poll() and signal()."""

    def __init__(self, pid: int = 1234) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[signal.Signals] = []

    def poll(self) -> int | None:
        return self.returncode

    def signal(self, sig: signal.Signals) -> None:
        self.signals.append(sig)


def start(runner: ContainerRunner, now: float) -> StubProcess:
    stub = StubProcess()
    runner.started(cast(ContainerProcess, stub), {}, now)
    return stub


@pytest.mark.parametrize(
    ("policy", "code", "init", "restart"),
    [
        ("Always", 0, False, True),
        ("OnFailure", 0, False, False),
        ("OnFailure", 1, False, True),
        ("Never", 1, False, False),
        ("Always", 0, True, False),
        ("Always", 1, True, True),
        ("Never", 1, True, False),
    ],
)
def test_restart_policy(policy: str, code: int, init: bool, restart: bool) -> None:
    assert will_restart(policy, code, init=init) is restart


def test_crash_loop_backs_off_and_counts_restarts() -> None:
    runner = ContainerRunner({"name": "app", "image": "i"}, init=False, waiting_reason="X")
    assert runner.may_start(0)
    now = 100.0
    delays = []
    for _ in range(4):
        stub = start(runner, now)
        assert isinstance(runner.state, Running)
        stub.returncode = 1
        ended = runner.reap(now + 1, "Always", allow_restart=True)
        assert ended is not None
        assert ended.exit_code == 1
        assert isinstance(runner.state, Waiting)
        assert runner.state.reason == "CrashLoopBackOff"
        assert runner.last_terminated == ended
        assert not runner.may_start(now + 1)
        delays.append(runner.next_start - (now + 1))
        now = runner.next_start
        assert runner.may_start(now)
    assert delays == [timing.BACKOFF_INITIAL * f for f in (1, 2, 4, 8)]
    assert runner.restart_count == 3
    assert runner.view().restart_count == 3


def test_no_restart_while_stopping() -> None:
    runner = ContainerRunner({"name": "app"}, init=False, waiting_reason="X")
    stub = start(runner, 0)
    runner.stop(grace=5, now=10)
    assert stub.signals == [signal.SIGTERM]
    assert not runner.is_ready
    runner.enforce(14.9)
    assert stub.signals == [signal.SIGTERM]
    runner.enforce(15)
    assert stub.signals == [signal.SIGTERM, signal.SIGKILL]
    stub.returncode = -9
    runner.reap(16, "Always", allow_restart=False)
    assert runner.state == Terminated(137, 0, 16, "", 9)
    assert runner.done


def test_shorter_grace_brings_the_kill_forward() -> None:
    runner = ContainerRunner({"name": "app"}, init=False, waiting_reason="X")
    stub = start(runner, 0)
    runner.stop(grace=30, now=0)
    runner.stop(grace=0, now=1)
    assert stub.signals == [signal.SIGTERM, signal.SIGKILL]


def test_readiness_follows_the_probe_and_startup_gates_it() -> None:
    spec: dict[str, Any] = {
        "name": "app",
        "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
        "readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1},
    }
    runner = ContainerRunner(spec, init=False, waiting_reason="X")
    start(runner, 0)
    assert runner.due_probes(0) == ["startupProbe"]
    assert not runner.is_started
    runner.probes["startupProbe"].record(True, "", 0)
    assert runner.is_started
    assert not runner.is_ready
    assert runner.due_probes(0) == ["readinessProbe", "livenessProbe"]
    runner.probes["readinessProbe"].record(True, "", 0)
    assert runner.is_ready
    assert runner.view().ready


def test_without_probes_running_means_ready() -> None:
    runner = ContainerRunner({"name": "app"}, init=False, waiting_reason="X")
    assert not runner.is_ready
    start(runner, 0)
    assert runner.is_ready


def test_adopting_a_previous_status() -> None:
    previous = {
        "name": "app",
        "restartCount": 2,
        "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
        "lastState": {},
    }
    runner = ContainerRunner({"name": "app"}, init=False, waiting_reason="X")
    runner.adopt(previous, "Always")
    start(runner, 0)
    assert runner.restart_count == 3

    done = {
        "name": "app",
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "finishedAt": "2024-01-01T00:00:00Z"}},
    }
    finished = ContainerRunner({"name": "app"}, init=False, waiting_reason="X")
    finished.adopt(done, "OnFailure")
    assert finished.done
    assert not finished.may_start(0)
