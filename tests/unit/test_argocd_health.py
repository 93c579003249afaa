"""The Argo CD health script of docs/argocd/health.lua, run in Lua 5.1 on status shapes
the operator writes; the end-to-end tests run it on real objects too."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.argocd import health


def obj(*conditions: tuple[str, str, str], observed: int = 4) -> dict[str, Any]:
    return {
        "metadata": {"generation": 4},
        "status": {
            "observedGeneration": observed,
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{r} said"}
                for t, s, r in conditions
            ],
        },
    }


READY = ("Ready", "True", "Running")
STABLE = ("Reconciling", "False", "Stable")
NOT_STALLED = ("Stalled", "False", "NotStalled")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (obj(READY, STABLE, NOT_STALLED), ("Healthy", "Running said")),
        (
            obj(READY, ("Reconciling", "True", "Splitting"), NOT_STALLED),
            ("Progressing", "Splitting: Splitting said"),
        ),
        (
            obj(("Ready", "False", "ShardFailed"), STABLE, ("Stalled", "True", "ShardFailed")),
            ("Degraded", "ShardFailed: ShardFailed said"),
        ),
        (
            obj(("Ready", "False", "PodsStarting"), STABLE, NOT_STALLED),
            ("Progressing", "PodsStarting: PodsStarting said"),
        ),
        (obj(("Ready", "True", "Disabled"), STABLE, NOT_STALLED), ("Suspended", "Disabled said")),
        (obj(READY, ("Reconciling", "False", "Paused"), NOT_STALLED), ("Suspended", "Paused said")),
        (
            obj(READY, STABLE, NOT_STALLED, observed=3),
            ("Progressing", "waiting for the operator to observe generation 4"),
        ),
        ({"metadata": {"generation": 1}}, ("Progressing", "waiting for the operator to report")),
    ],
    ids=[
        "ready",
        "splitting",
        "failed",
        "starting",
        "disabled",
        "paused",
        "old-generation",
        "no-status",
    ],
)
def test_health(given: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(given) == expected
