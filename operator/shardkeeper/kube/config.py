"""Where the cluster's credentials come from: one decision (pure) for every client.

In order: a kubeconfig given explicitly, else ``KUBECONFIG``, else the pod's in-cluster
service account when ``KUBERNETES_SERVICE_HOST`` says we run in a pod, else
``~/.kube/config``. The operator's official client (``controller/engine/kube.py``, and
kopf's login through it) and the shard runtime's light client
(:mod:`shardkeeper.kube.transport`) both load what :func:`locate` chose.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path


class KubeconfigError(ValueError):
    """The kubeconfig or the in-cluster setup cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Source:
    """The kubeconfig to read, or ``None`` for the in-cluster service account."""

    kubeconfig: Path | None
    why: str  # "argument", "KUBECONFIG", "in-cluster" or "default"

    @property
    def in_cluster(self) -> bool:
        return self.kubeconfig is None


def locate(kubeconfig: str | Path | None, environ: Mapping[str, str]) -> Source:
    """Where to find the credentials; a string may be a path list (as KUBECONFIG is), but
    must name one file, which is all the light client reads."""
    if isinstance(kubeconfig, Path):
        return Source(kubeconfig.expanduser(), "argument")
    if kubeconfig and kubeconfig.strip():
        return Source(_one_file(kubeconfig.strip()), "argument")
    listed = environ.get("KUBECONFIG", "").strip()
    if listed:
        return Source(_one_file(listed), "KUBECONFIG")
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return Source(None, "in-cluster")
    home = environ.get("HOME")
    base = Path(home) if home else Path("~").expanduser()
    return Source(base / ".kube" / "config", "default")


def _one_file(value: str) -> Path:
    paths = [p for p in value.split(os.pathsep) if p]
    if len(paths) != 1:
        raise KubeconfigError(
            f"KUBECONFIG={value!r} lists {len(paths)} files: shardkeeper reads one"
        )
    return Path(paths[0]).expanduser()
