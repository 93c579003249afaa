"""Pod phase, conditions and container statuses from container states."""

from __future__ import annotations

from typing import Any

import pytest

from shardkeeper_dev.node.clock import rfc3339
from shardkeeper_dev.node.status import (
    ContainerView,
    Running,
    Terminated,
    Waiting,
    container_status,
    pod_phase,
    pod_status,
)

T0 = 1_700_000_000.0


def running(name: str = "app", *, ready: bool = True) -> ContainerView:
    return ContainerView(name, "img", Running(T0), ready=ready, started=True)


def waiting(
    name: str = "app", reason: str = "ContainerCreating", *, ran: bool = False
) -> ContainerView:
    last = Terminated(1, T0, T0 + 1) if ran else None
    return ContainerView(name, "img", Waiting(reason), last_terminated=last)


def ended(name: str = "app", code: int = 0) -> ContainerView:
    return ContainerView(name, "img", Terminated(code, T0, T0 + 5))


@pytest.mark.parametrize(
    ("init", "containers", "policy", "phase"),
    [
        ([], [waiting()], "Always", "Pending"),
        ([waiting("i", "PodInitializing")], [waiting()], "Always", "Pending"),
        ([ended("i", 0)], [running()], "Always", "Running"),
        ([ended("i", 1)], [waiting()], "Never", "Failed"),
        ([ended("i", 1)], [waiting()], "OnFailure", "Pending"),
        ([], [running(), waiting("b")], "Always", "Pending"),
        ([], [running(), ended("b", 0)], "Never", "Running"),
        ([], [waiting(reason="CrashLoopBackOff", ran=True)], "Always", "Running"),
        ([], [ended(code=0)], "Always", "Running"),
        ([], [ended(code=0), ended("b", 0)], "OnFailure", "Succeeded"),
        ([], [ended(code=0), ended("b", 2)], "Never", "Failed"),
        ([], [ended(code=0), ended("b", 2)], "OnFailure", "Running"),
    ],
)
def test_phase(
    init: list[ContainerView], containers: list[ContainerView], policy: str, phase: str
) -> None:
    assert pod_phase(init, containers, policy) == phase


def status(
    containers: list[ContainerView],
    *,
    init: list[ContainerView] | None = None,
    pod: dict[str, Any] | None = None,
    previous: list[dict[str, Any]] | None = None,
    now: float = T0 + 10,
) -> dict[str, Any]:
    return pod_status(
        pod or {"metadata": {}, "spec": {}},
        init or [],
        containers,
        sandbox_ready=True,
        pod_ip="127.1.0.1",
        host_ip="127.0.0.1",
        start_time=T0,
        now=now,
        previous_conditions=previous or [],
    )


def conditions(result: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}


def test_ready_pod() -> None:
    result = status([running()])
    assert result["phase"] == "Running"
    assert result["podIP"] == "127.1.0.1"
    assert result["podIPs"] == [{"ip": "127.1.0.1"}]
    assert result["startTime"] == rfc3339(T0)
    assert conditions(result) == {
        "PodReadyToStartContainers": ("True", None),
        "Initialized": ("True", None),
        "ContainersReady": ("True", None),
        "Ready": ("True", None),
        "PodScheduled": ("True", None),
    }


def test_unready_and_uninitialized_pods_say_which_containers() -> None:
    result = status([running("a"), running("b", ready=False)])
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ContainersNotReady")
    assert ready["message"] == "containers with unready status: [b]"

    result = status([waiting(reason="PodInitializing")], init=[running("setup")])
    init = next(c for c in result["conditions"] if c["type"] == "Initialized")
    assert init["message"] == "containers with incomplete status: [setup]"
    assert [s["name"] for s in result["initContainerStatuses"]] == ["setup"]


def test_completed_pods_are_not_ready() -> None:
    result = status([ended(code=0)], pod={"metadata": {}, "spec": {"restartPolicy": "Never"}})
    assert result["phase"] == "Succeeded"
    assert conditions(result)["Ready"] == ("False", "PodCompleted")


def test_readiness_gates_hold_ready_back() -> None:
    pod = {
        "metadata": {},
        "spec": {"readinessGates": [{"conditionType": "example.com/gate"}]},
        "status": {"conditions": [{"type": "example.com/gate", "status": "False"}]},
    }
    result = status([running()], pod=pod)
    assert conditions(result)["ContainersReady"] == ("True", None)
    assert conditions(result)["Ready"] == ("False", "ReadinessGatesNotReady")
    pod["status"]["conditions"][0]["status"] = "True"
    assert conditions(status([running()], pod=pod))["Ready"] == ("True", None)


def test_transition_times_move_only_when_the_status_changes() -> None:
    first = status([running(ready=False)], now=T0 + 10)
    second = status([running(ready=False)], previous=first["conditions"], now=T0 + 20)
    assert second == first
    third = status([running()], previous=second["conditions"], now=T0 + 30)
    times = {c["type"]: c["lastTransitionTime"] for c in third["conditions"]}
    assert times["Ready"] == rfc3339(T0 + 30)
    assert times["PodScheduled"] == rfc3339(T0 + 10)


def test_container_status_json() -> None:
    view = ContainerView(
        "app",
        "img",
        Waiting("CrashLoopBackOff", "back-off 2s"),
        last_terminated=Terminated(137, T0, T0 + 3, signal=9),
        restart_count=2,
        container_id="process://42",
    )
    assert container_status(view) == {
        "name": "app",
        "image": "img",
        "imageID": "",
        "containerID": "process://42",
        "ready": False,
        "started": False,
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2s"}},
        "lastState": {
            "terminated": {
                "exitCode": 137,
                "reason": "Error",
                "signal": 9,
                "startedAt": rfc3339(T0),
                "finishedAt": rfc3339(T0 + 3),
            }
        },
    }
    assert container_status(ended())["state"]["terminated"]["reason"] == "Completed"
