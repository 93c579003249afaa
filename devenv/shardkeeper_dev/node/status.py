"""A pod's status (phase, conditions, container statuses) from what its containers do.

Pure: the pod worker describes each container with a ``ContainerView`` and these
functions compute what a kubelet would report, following the kubelet's getPhase and
condition rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from shardkeeper_dev.node.clock import rfc3339
from shardkeeper_dev.node.podcontext import Obj

# the pod conditions this node owns; others (readiness gates, disruption targets) are
# left to whoever set them
OWN_CONDITIONS = (
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
    "PodScheduled",
)
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclasses.dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Running:
    started_at: float


@dataclasses.dataclass(frozen=True)
class Terminated:
    exit_code: int
    started_at: float | None
    finished_at: float
    message: str = ""
    signal: int | None = None

    @property
    def reason(self) -> str:
        return "Completed" if self.exit_code == 0 else "Error"


State = Waiting | Running | Terminated


@dataclasses.dataclass(frozen=True)
class ContainerView:
    name: str
    image: str
    state: State
    last_terminated: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""


def state_json(state: State) -> dict[str, Any]:
    if isinstance(state, Waiting):
        waiting: dict[str, Any] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": rfc3339(state.started_at)}}
    terminated: dict[str, Any] = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "finishedAt": rfc3339(state.finished_at),
    }
    if state.started_at is not None:
        terminated["startedAt"] = rfc3339(state.started_at)
    if state.signal is not None:
        terminated["signal"] = state.signal
    if state.message:
        terminated["message"] = state.message
    return {"terminated": terminated}


def container_status(view: ContainerView) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": view.name,
        "image": view.image,
        "imageID": "",
        "ready": view.ready,
        "started": view.started,
        "restartCount": view.restart_count,
        "state": state_json(view.state),
        "lastState": {} if view.last_terminated is None else state_json(view.last_terminated),
    }
    if view.container_id:
        status["containerID"] = view.container_id
    return status


def init_failed(init: Sequence[ContainerView], restart_policy: str) -> bool:
    """An init container failed and will not be retried: the pod has failed."""
    return restart_policy == "Never" and any(
        isinstance(v.state, Terminated) and v.state.exit_code != 0 for v in init
    )


def initialized(init: Sequence[ContainerView]) -> bool:
    return all(isinstance(v.state, Terminated) and v.state.exit_code == 0 for v in init)


def pod_phase(
    init: Sequence[ContainerView], containers: Sequence[ContainerView], restart_policy: str
) -> str:
    if init_failed(init, restart_policy):
        return "Failed"
    if not initialized(init):
        return "Pending"
    running = stopped = succeeded = waiting = 0
    for view in containers:
        if isinstance(view.state, Running):
            running += 1
        elif isinstance(view.state, Terminated):
            stopped += 1
            succeeded += view.state.exit_code == 0
        elif view.last_terminated is not None:
            # waiting to be restarted after a run: it has run, the pod is not pending
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _names(views: Sequence[ContainerView]) -> str:
    return "[" + " ".join(v.name for v in views) + "]"


def pod_conditions(
    pod: Obj,
    init: Sequence[ContainerView],
    containers: Sequence[ContainerView],
    *,
    phase: str,
    sandbox_ready: bool,
) -> dict[str, tuple[bool, str, str]]:
    """Condition type -> (status, reason, message) for the conditions this node owns."""
    conditions: dict[str, tuple[bool, str, str]] = {
        "PodScheduled": (True, "", ""),
        "PodReadyToStartContainers": (sandbox_ready, "", ""),
    }
    incomplete = [
        v for v in init if not (isinstance(v.state, Terminated) and v.state.exit_code == 0)
    ]
    conditions["Initialized"] = (True, "", "")
    if incomplete:
        message = f"containers with incomplete status: {_names(incomplete)}"
        conditions["Initialized"] = (False, "ContainersNotInitialized", message)
    if phase in TERMINAL_PHASES:
        conditions["ContainersReady"] = (False, "PodCompleted", "")
        conditions["Ready"] = (False, "PodCompleted", "")
        return conditions
    unready = [v for v in containers if not v.ready]
    if unready:
        message = f"containers with unready status: {_names(unready)}"
        conditions["ContainersReady"] = (False, "ContainersNotReady", message)
        conditions["Ready"] = (False, "ContainersNotReady", message)
        return conditions
    conditions["ContainersReady"] = (True, "", "")
    existing = {c["type"]: c.get("status") for c in pod.get("status", {}).get("conditions") or []}
    gates = [g["conditionType"] for g in pod.get("spec", {}).get("readinessGates") or []]
    missing = [g for g in gates if existing.get(g) != "True"]
    if missing:
        message = (
            "corresponding condition of pod readiness gate "
            + ", ".join(f'"{g}"' for g in missing)
            + " does not exist or is not True."
        )
        conditions["Ready"] = (False, "ReadinessGatesNotReady", message)
    else:
        conditions["Ready"] = (True, "", "")
    return conditions


def condition_list(
    computed: Mapping[str, tuple[bool, str, str]], previous: Sequence[Obj], now: float
) -> list[dict[str, Any]]:
    """Conditions as the API holds them; a condition whose status is unchanged keeps its
    lastTransitionTime."""
    before = {c["type"]: c for c in previous}
    result = []
    for kind in OWN_CONDITIONS:
        if kind not in computed:
            continue
        status, reason, message = computed[kind]
        text = "True" if status else "False"
        old = before.get(kind)
        since = old.get("lastTransitionTime") if old and old.get("status") == text else None
        # reason and message are always present: a patch merges conditions by type, so
        # an absent field would keep a stale value, where null removes it
        condition: dict[str, Any] = {
            "type": kind,
            "status": text,
            "lastProbeTime": None,
            "lastTransitionTime": since or rfc3339(now),
            "reason": reason or None,
            "message": message or None,
        }
        result.append(condition)
    return result


def pod_status(
    pod: Obj,
    init: Sequence[ContainerView],
    containers: Sequence[ContainerView],
    *,
    sandbox_ready: bool,
    pod_ip: str,
    host_ip: str,
    start_time: float,
    now: float,
    previous_conditions: Sequence[Obj],
) -> dict[str, Any]:
    """The part of ``pod.status`` this node owns. ``previous_conditions`` are the ones
    last reported, whose transition times carry over while their status holds."""
    restart_policy = pod.get("spec", {}).get("restartPolicy", "Always")
    phase = pod_phase(init, containers, restart_policy)
    computed = pod_conditions(pod, init, containers, phase=phase, sandbox_ready=sandbox_ready)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": condition_list(computed, previous_conditions, now),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": pod.get("status", {}).get("startTime") or rfc3339(start_time),
        "containerStatuses": [container_status(v) for v in containers],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if init:
        status["initContainerStatuses"] = [container_status(v) for v in init]
    return status
