"""Stands in for a storage provisioner: a hostPath PersistentVolume (a ``local`` one for a
real kubelet, which applies a pod's fsGroup to local volumes and not to hostPath ones)
for each Pending claim of the served namespaces, pre-bound to the claim through its
claimRef so that the PV controller binds the two. When the claim goes, the PV controller
marks the volume Released and this deletes its directory and the PV (reclaim policy
Delete).

The PVs name this node as their external provisioner, so the PV controller leaves their
deletion to it instead of trying an in-tree plugin.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from shardkeeper.kube.paths import resource_path
from shardkeeper_dev.node.informer import ObjectsByKey
from shardkeeper_dev.node.kube import ApiError, Kube
from shardkeeper_dev.node.layout import Layout
from shardkeeper_dev.node.podcontext import Obj

log = logging.getLogger(__name__)

PROVISIONER = "shardkeeper.io/process-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
OWNER_LABEL = "shardkeeper.io/process-node"
DEFAULT_SIZE = "1Gi"
VOLUME_SOURCES = ("hostPath", "local")


def pv_name(claim: Obj) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def needs_volume(claim: Obj) -> bool:
    spec = claim.get("spec", {})
    return (
        claim.get("status", {}).get("phase", "Pending") == "Pending"
        and not spec.get("volumeName")
        and spec.get("volumeMode", "Filesystem") == "Filesystem"
        and not claim["metadata"].get("deletionTimestamp")
    )


def persistent_volume(
    claim: Obj, node_name: str, path: Path, source: str = "hostPath"
) -> dict[str, Any]:
    meta = claim["metadata"]
    spec = claim.get("spec", {})
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", DEFAULT_SIZE)
    volume_spec: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Delete",
        "volumeMode": "Filesystem",
        source: (
            {"path": str(path), "type": "DirectoryOrCreate"}
            if source == "hostPath"
            else {"path": str(path)}
        ),
        "claimRef": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        },
        "nodeAffinity": {
            "required": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "In",
                                "values": [node_name],
                            }
                        ]
                    }
                ]
            }
        },
    }
    if spec.get("storageClassName"):
        volume_spec["storageClassName"] = spec["storageClassName"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name(claim),
            "labels": {OWNER_LABEL: node_name},
            "annotations": {PROVISIONED_BY: PROVISIONER},
        },
        "spec": volume_spec,
    }


def is_ours(volume: Obj, node_name: str) -> bool:
    meta = volume.get("metadata", {})
    return (meta.get("labels") or {}).get(OWNER_LABEL) == node_name and (
        meta.get("annotations") or {}
    ).get(PROVISIONED_BY) == PROVISIONER


def should_reclaim(volume: Obj, node_name: str) -> bool:
    return (
        is_ours(volume, node_name)
        and not volume["metadata"].get("deletionTimestamp")
        and volume.get("status", {}).get("phase") in ("Released", "Failed")
        and volume.get("spec", {}).get("persistentVolumeReclaimPolicy") == "Delete"
    )


def volume_path(volume: Obj) -> str | None:
    spec = volume.get("spec", {})
    for kind in ("hostPath", "local"):
        if kind in spec:
            return str(spec[kind]["path"])
    return None


class Provisioner:
    def __init__(
        self,
        kube: Kube,
        claims: ObjectsByKey,
        volumes: ObjectsByKey,
        layout: Layout,
        node_name: str,
        *,
        source: str = "hostPath",
    ) -> None:
        if source not in VOLUME_SOURCES:
            raise ValueError(f"volume source {source!r} is not one of {VOLUME_SOURCES}")
        self._source = source
        self._kube = kube
        self._claims = claims
        self._volumes = volumes
        self._layout = layout
        self._node_name = node_name

    def reconcile_claim(self, key: str) -> None:
        claim = self._claims.get(key)
        if claim is None or not needs_volume(claim):
            return
        name = pv_name(claim)
        if self._volumes.get(name) is not None:
            return
        meta = claim["metadata"]
        path = self._layout.claim_dir(meta["namespace"], meta["name"], meta["uid"])
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._kube.create(
                resource_path("v1", "persistentvolumes"),
                persistent_volume(claim, self._node_name, path, self._source),
            )
        except ApiError as err:
            if err.status != 409:
                raise
            return
        log.info("provisioned %s for claim %s at %s", name, key, path)

    def reconcile_volume(self, name: str) -> None:
        volume = self._volumes.get(name)
        if volume is None or not should_reclaim(volume, self._node_name):
            return
        path = volume_path(volume)
        if path is not None:
            self._remove_dir(Path(path))
        if self._kube.delete(resource_path("v1", "persistentvolumes", name=name)):
            log.info("deleted released volume %s and its directory", name)

    def _remove_dir(self, path: Path) -> None:
        root = self._layout.volumes.resolve()
        resolved = path.resolve()
        # only ever delete what this node created
        if root not in resolved.parents:
            log.warning("not deleting %s: it is outside %s", path, root)
            return
        shutil.rmtree(resolved, ignore_errors=True)
        with contextlib.suppress(OSError):
            resolved.parent.rmdir()  # the namespace's directory, once empty
