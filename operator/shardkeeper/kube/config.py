"""Where the cluster's credentials come from: one decision (pure) for every client.

In order: a kubeconfig given explicitly, else ``KUBECONFIG``, else the pod's in-cluster
service account when ``KUBERNETES_SERVICE_HOST`` says we run in a pod (unless a context is
asked for by name), else ``~/.kube/config``. Within a kubeconfig, the context named by the
caller (kubectl's ``--context``), else its ``current-context``. The operator's official
client (``controller/engine/kube.py``, and kopf's login through it), the shard runtime's
light client (:mod:`shardkeeper.kube.transport`) and the ``shards`` command all load what
:func:`locate` chose.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class KubeconfigError(ValueError):
    """The kubeconfig or the in-cluster setup cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Source:
    """The kubeconfig to read, or ``None`` for the in-cluster service account."""

    kubeconfig: Path | None
    why: str  # "argument", "KUBECONFIG", "in-cluster" or "default"
    context: str | None = None  # a context of the kubeconfig; None: its current-context

    @property
    def in_cluster(self) -> bool:
        return self.kubeconfig is None


def locate(
    kubeconfig: str | Path | None, environ: Mapping[str, str], context: str | None = None
) -> Source:
    """Where to find the credentials; a string may be a path list (as KUBECONFIG is), but
    must name one file, which is all the light client reads."""
    context = context or None
    if isinstance(kubeconfig, Path):
        return Source(kubeconfig.expanduser(), "argument", context)
    if kubeconfig and kubeconfig.strip():
        return Source(_one_file(kubeconfig.strip()), "argument", context)
    listed = environ.get("KUBECONFIG", "").strip()
    if listed:
        return Source(_one_file(listed), "KUBECONFIG", context)
    # a context is an entry of a kubeconfig: naming one rules out the service account, as
    # it does for kubectl
    if environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        return Source(None, "in-cluster")
    home = environ.get("HOME")
    base = Path(home) if home else Path("~").expanduser()
    return Source(base / ".kube" / "config", "default", context)


def select_context(config: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """The context called ``name`` in a kubeconfig, else its current-context."""
    chosen = name or config.get("current-context")
    if not chosen:
        raise KubeconfigError("the kubeconfig has no current-context")
    return named(config, "contexts", chosen, "context")


def context_namespace(config: Mapping[str, Any], name: str | None = None) -> str | None:
    """The namespace the chosen context sets, as kubectl's default ``--namespace``."""
    namespace = select_context(config, name).get("namespace")
    return str(namespace) if namespace else None


def named(config: Mapping[str, Any], section: str, name: Any, field: str) -> dict[str, Any]:
    """The ``field`` of the entry called ``name`` in a kubeconfig's list ``section``."""
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            found: dict[str, Any] = entry.get(field) or {}
            return found
    raise KubeconfigError(f"the kubeconfig has no {field} named {name!r} in {section}")


def _one_file(value: str) -> Path:
    paths = [p for p in value.split(os.pathsep) if p]
    if len(paths) != 1:
        raise KubeconfigError(
            f"KUBECONFIG={value!r} lists {len(paths)} files: shardkeeper reads one"
        )
    return Path(paths[0]).expanduser()
