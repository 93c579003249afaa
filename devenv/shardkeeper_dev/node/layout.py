"""Where the node keeps things under its state directory.

pods/<namespace>/<pod>/<container>.log   container output, kept after the pod is gone
pods/<namespace>/<pod>/pod.json          the pod's containers, for `shardkeeper dev logs`
run/<pod uid>/volumes/<volume>/          emptyDir and file volumes, removed with the pod
run/<pod uid>/work/                      the default working directory
volumes/<namespace>/<claim>-<claim uid>/ persistent volumes, removed with their claim
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    def claim_dir(self, namespace: str, claim: str, claim_uid: str) -> Path:
        # the uid keeps a claim recreated under the same name from meeting the old
        # claim's directory while that one is being deleted
        return self.volumes / namespace / f"{claim}-{claim_uid}"

    def pod_log_dir(self, namespace: str, pod: str) -> Path:
        return self.root / "pods" / namespace / pod

    def container_log(self, namespace: str, pod: str, container: str) -> Path:
        return self.pod_log_dir(namespace, pod) / f"{container}.log"

    def pod_manifest(self, namespace: str, pod: str) -> Path:
        return self.pod_log_dir(namespace, pod) / "pod.json"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def pod_run_dir(self, pod_uid: str) -> Path:
        return self.run / pod_uid

    def volume_dir(self, pod_uid: str, volume: str) -> Path:
        return self.pod_run_dir(pod_uid) / "volumes" / volume

    def work_dir(self, pod_uid: str) -> Path:
        return self.pod_run_dir(pod_uid) / "work"
