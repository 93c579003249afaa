"""The Shardkeeper CRDs, applied once per session the way a user applies them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"

Kubectl = Callable[..., "CompletedProcess[str]"]


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> list[str]:
    """Apply crds/ with server-side apply; wait until the API server serves every kind."""
    applied = kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR), "-o", "name"
    )
    names = applied.stdout.split()
    assert len(names) == len(list(CRD_DIR.glob("*.yaml"))), applied.stdout
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names
