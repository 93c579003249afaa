"""One container of a pod: its process, its restarts and back-off, its probes' state."""

from __future__ import annotations

import signal

from shardkeeper_dev.node import timing
from shardkeeper_dev.node.clock import parse_time
from shardkeeper_dev.node.podcontext import Obj
from shardkeeper_dev.node.probestate import ProbeSpec, ProbeState
from shardkeeper_dev.node.process import ContainerProcess, exit_code
from shardkeeper_dev.node.status import ContainerView, Running, State, Terminated, Waiting

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def will_restart(restart_policy: str, code: int, *, init: bool) -> bool:
    if init:
        # an init container must succeed: it is retried unless the pod never restarts
        return code != 0 and restart_policy != "Never"
    return restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0)


def terminated_from_json(state: Obj) -> Terminated | None:
    term = state.get("terminated")
    if not term:
        return None
    started = term.get("startedAt")
    finished = term.get("finishedAt")
    return Terminated(
        exit_code=int(term.get("exitCode", 0)),
        started_at=parse_time(started) if started else None,
        finished_at=parse_time(finished) if finished else 0.0,
        message=term.get("message", ""),
        signal=term.get("signal"),
    )


class ContainerRunner:
    def __init__(self, spec: Obj, *, init: bool, waiting_reason: str) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.image: str = spec.get("image", "")
        self.init = init
        self.state: State = Waiting(waiting_reason)
        self.last_terminated: Terminated | None = None
        self.restart_count = 0
        self.has_run = False
        self.process: ContainerProcess | None = None
        self.run_id = 0
        self.pid = 0
        # the resolved environment of the current run, for exec probes
        self.env: dict[str, str] = {}
        self.next_start = 0.0
        self.kill_deadline: float | None = None
        self.kill_reason = ""
        self.probes: dict[str, ProbeState] = {}
        self._backoff: float | None = None
        self._run_started = 0.0

    def adopt(self, previous: Obj, restart_policy: str) -> None:
        """Carry on from the status a previous node process reported (node restart)."""
        self.restart_count = int(previous.get("restartCount", 0))
        state = previous.get("state") or {}
        self.last_terminated = terminated_from_json(previous.get("lastState") or {})
        self.has_run = bool("running" in state or "terminated" in state or self.last_terminated)
        ended = terminated_from_json(state)
        if ended is not None and not will_restart(restart_policy, ended.exit_code, init=self.init):
            # it finished for good (or, for an init container, successfully)
            self.state = ended

    @property
    def done(self) -> bool:
        """Finished and not to be started again."""
        return isinstance(self.state, Terminated)

    @property
    def succeeded(self) -> bool:
        return isinstance(self.state, Terminated) and self.state.exit_code == 0

    def may_start(self, now: float) -> bool:
        return self.process is None and isinstance(self.state, Waiting) and now >= self.next_start

    def hold(self, reason: str, message: str, retry_at: float) -> None:
        """Not started now (configuration missing, pod initializing); try again later."""
        self.state = Waiting(reason, message)
        self.next_start = retry_at

    def started(self, process: ContainerProcess, env: dict[str, str], now: float) -> None:
        if self.has_run:
            self.restart_count += 1
        self.has_run = True
        self.process = process
        self.pid = process.pid
        self.env = env
        self.run_id += 1
        self.state = Running(now)
        self._run_started = now
        self.kill_deadline = None
        self.kill_reason = ""
        self.probes = {}
        for kind in PROBES:
            probe = self.spec.get(kind)
            if probe:
                spec = ProbeSpec.from_probe(probe)
                # liveness counts as passing until proven otherwise; the others do not
                self.probes[kind] = ProbeState(spec, now, initial=kind == "livenessProbe")

    def reap(self, now: float, restart_policy: str, *, allow_restart: bool) -> Terminated | None:
        """If the process ended: record it and plan a restart. Returns how it ended."""
        if self.process is None:
            return None
        returncode = self.process.poll()
        if returncode is None:
            return None
        code, sig = exit_code(returncode)
        ended = Terminated(code, self._run_started, now, self.kill_reason, sig)
        self.process = None
        self.probes = {}
        self.kill_deadline = None
        if allow_restart and will_restart(restart_policy, code, init=self.init):
            self._backoff = timing.next_backoff(self._backoff, now - self._run_started)
            self.last_terminated = ended
            self.state = Waiting(
                "CrashLoopBackOff",
                f"back-off {self._backoff:g}s restarting failed container={self.name}",
            )
            self.next_start = now + self._backoff
        else:
            self.state = ended
        return ended

    def stop(self, grace: float, now: float, reason: str = "") -> None:
        """SIGTERM now, SIGKILL once ``grace`` is over (never later than already planned)."""
        if self.process is None:
            return
        deadline = now + max(grace, 0.0)
        if self.kill_deadline is None:
            self.kill_reason = reason
            self.process.signal(signal.SIGTERM)
            self.kill_deadline = deadline
        else:
            self.kill_deadline = min(self.kill_deadline, deadline)
        self.enforce(now)

    def enforce(self, now: float) -> None:
        if (
            self.process is not None
            and self.kill_deadline is not None
            and now >= self.kill_deadline
        ):
            self.process.signal(signal.SIGKILL)

    @property
    def is_started(self) -> bool:
        """Running, and past its startup probe if it has one."""
        if not isinstance(self.state, Running):
            return False
        startup = self.probes.get("startupProbe")
        return startup is None or startup.result

    @property
    def is_ready(self) -> bool:
        if not self.is_started or self.kill_deadline is not None:
            return False
        readiness = self.probes.get("readinessProbe")
        return readiness is None or readiness.result

    def due_probes(self, now: float) -> list[str]:
        """The probes to run now; startup first, the others only once it passed."""
        if self.process is None or self.kill_deadline is not None:
            return []
        startup = self.probes.get("startupProbe")
        if startup is not None and not startup.result:
            return ["startupProbe"] if startup.due(now) else []
        return [
            kind
            for kind in ("readinessProbe", "livenessProbe")
            if kind in self.probes and self.probes[kind].due(now)
        ]

    def next_event(self) -> float | None:
        """When this container must next be looked at (a start or a kill is due);
        probes are timed by the pod worker, which knows which ones are in flight."""
        if self.process is None and isinstance(self.state, Waiting):
            return self.next_start
        return self.kill_deadline

    def view(self) -> ContainerView:
        return ContainerView(
            name=self.name,
            image=self.image,
            state=self.state,
            last_terminated=self.last_terminated,
            restart_count=self.restart_count,
            ready=self.is_ready,
            started=self.is_started,
            # the host pid of the container's unshare process: what to look for in `ps`
            container_id=f"process://{self.pid}" if self.pid else "",
        )
