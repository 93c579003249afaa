"""The Kubernetes objects that run one Shard, as pure functions of the Shard and its Task.

Exactly the shape docs/shard-pod.md describes: a StatefulSet with ``1 + hotStandbys``
replicas (none while the task is disabled) and a volume claim template ``data``, a headless
Service, a PodDisruptionBudget, and a ServiceAccount, Role and RoleBinding that let the
runtime read what it needs, write its own Shard's status and hold its own Lease.

Every object is owned by the Shard, so deleting the Shard deletes them (and, through the
StatefulSet's claim retention policy, the volumes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from shardkeeper.api.meta import GROUP, Duration
from shardkeeper.api.shard import Shard
from shardkeeper.api.storagemapping import StorageMappingSpec
from shardkeeper.api.task import DEFAULT_PRUNE_EVERY, Task, TaskType
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import (
    Object,
    namespaced_name,
    owner_reference,
)

# Readiness is polled often: a roll waits on it pod by pod, and so does `kubectl wait`.
READINESS_PERIOD = 2
LIVENESS_PERIOD = 10
LIVENESS_FAILURES = 6
SHUTDOWN_MARGIN_SECONDS = 10
# the image's own user (Dockerfile); fsGroup makes the data volume writable by it
RUNTIME_USER = 65532
TMP_VOLUME = "tmp"
# not /tmp itself: a volume there would hide whatever else the node keeps in /tmp
TMP_DIR = "/var/tmp/shardkeeper"
# the projected service-account token boto3 trades for a role's temporary credentials
WEB_IDENTITY_VOLUME = "web-identity-token"
WEB_IDENTITY_DIR = "/var/run/secrets/shardkeeper.io/web-identity"
WEB_IDENTITY_TOKEN = "token"
# an hour, as IRSA's; the node replaces the file when 80% of it has gone, and boto3 reads
# the file again each time it refreshes the credentials
WEB_IDENTITY_TOKEN_SECONDS = 3600
POD_SECURITY: Object = {
    "runAsNonRoot": True,
    "runAsUser": RUNTIME_USER,
    "runAsGroup": RUNTIME_USER,
    "fsGroup": RUNTIME_USER,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
# the runtime writes only its data volume and temporary files (SQLite's, TLS material)
CONTAINER_SECURITY: Object = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclasses.dataclass(frozen=True)
class WorkloadDefaults:
    """What the operator's flags decide for every shard."""

    shard_image: str
    lease_duration: int = names.DEFAULT_LEASE_DURATION
    status_interval: int = names.DEFAULT_STATUS_INTERVAL
    prune_every: Duration = DEFAULT_PRUNE_EVERY


@dataclasses.dataclass(frozen=True)
class WorkloadInputs:
    """Everything the workload of one shard is computed from."""

    shard: Shard
    task: Task
    secret_names: Sequence[str]
    """Secrets the runtime may read: its StorageMappings' credentials and the Task's own."""
    defaults: WorkloadDefaults
    storage: StorageMappingSpec | None = None
    """The Task's own StorageMapping, whose web identity and service-account annotations
    the pods get (None: neither)."""

    @property
    def name(self) -> str:
        return namespaced_name(self.shard)[1]

    @property
    def namespace(self) -> str:
        return namespaced_name(self.shard)[0]

    @property
    def labels(self) -> dict[str, str]:
        return names.shard_labels(self.shard.spec.task, self.name)


def replicas(task: Task) -> int:
    """Pods a shard of ``task`` runs: none while disabled, else a primary and its standbys."""
    template = task.spec.shards
    return 0 if template.disable else 1 + template.hot_standbys


def termination_grace_seconds(task: Task) -> int:
    """Long enough for two transactions and releasing the Lease (see docs/shard-pod.md)."""
    max_txn = task.spec.effective_max_txn_duration().total_seconds()
    return math.ceil(2 * max_txn) + SHUTDOWN_MARGIN_SECONDS


def ingest_port(task: Task) -> int | None:
    capture = task.spec.capture
    if task.spec.type != TaskType.CAPTURE or capture is None or capture.http is None:
        return None
    return capture.http.port


def _metadata(ctx: WorkloadInputs, name: str) -> Object:
    return {
        "name": name,
        "namespace": ctx.namespace,
        "labels": ctx.labels,
        "ownerReferences": [owner_reference(ctx.shard)],
    }


def _field_env(name: str, path: str) -> Object:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _container(ctx: WorkloadInputs) -> Object:
    template = ctx.task.spec.shards
    ports = [{"name": names.ADMIN_PORT_NAME, "containerPort": names.ADMIN_PORT}]
    ingest = ingest_port(ctx.task)
    if ingest is not None:
        ports.append({"name": names.INGEST_PORT_NAME, "containerPort": ingest})
    container: Object = {
        "name": names.CONTAINER,
        "image": template.image or ctx.defaults.shard_image,
        "command": ["shardkeeper", "shard"],
        "env": [
            {"name": "SHARDKEEPER_SHARD", "value": ctx.name},
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("POD_IP", "status.podIP"),
            {"name": "SHARDKEEPER_DATA_DIR", "value": names.DATA_DIR},
            {"name": "SHARDKEEPER_ADMIN_PORT", "value": str(names.ADMIN_PORT)},
            {"name": "SHARDKEEPER_LEASE_DURATION", "value": str(ctx.defaults.lease_duration)},
            {"name": "SHARDKEEPER_STATUS_INTERVAL", "value": str(ctx.defaults.status_interval)},
            {"name": "SHARDKEEPER_PRUNE_EVERY", "value": str(ctx.defaults.prune_every)},
            {"name": "SHARDKEEPER_LOG_LEVEL", "value": str(template.log_level)},
            # the root filesystem is read-only: Python's and SQLite's temporary files
            {"name": "TMPDIR", "value": TMP_DIR},
        ],
        "ports": ports,
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": names.ADMIN_PORT_NAME},
            "periodSeconds": READINESS_PERIOD,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": names.ADMIN_PORT_NAME},
            "periodSeconds": LIVENESS_PERIOD,
            "timeoutSeconds": 5,
            "failureThreshold": LIVENESS_FAILURES,
        },
        "volumeMounts": [
            {"name": names.DATA_VOLUME, "mountPath": names.DATA_DIR},
            {"name": TMP_VOLUME, "mountPath": TMP_DIR},
        ],
        "securityContext": dict(CONTAINER_SECURITY),
    }
    identity_env = web_identity_env(ctx)
    if identity_env:
        container["env"] += identity_env
        container["volumeMounts"].append(
            {"name": WEB_IDENTITY_VOLUME, "mountPath": WEB_IDENTITY_DIR, "readOnly": True}
        )
    if template.image_pull_policy is not None:
        container["imagePullPolicy"] = str(template.image_pull_policy)
    if template.resources is not None:
        resources = template.resources.model_dump(mode="json", by_alias=True, exclude_none=True)
        container["resources"] = {k: v for k, v in resources.items() if v}
    return container


def web_identity_env(ctx: WorkloadInputs) -> list[Object]:
    """The variables with which boto3's default chain assumes the mapping's role, as the EKS
    pod identity webhook sets them for IRSA; none without a web identity."""
    if ctx.storage is None or ctx.storage.web_identity is None:
        return []
    identity = ctx.storage.web_identity
    env: list[Object] = [
        {"name": "AWS_ROLE_ARN", "value": identity.role_arn},
        {
            "name": "AWS_WEB_IDENTITY_TOKEN_FILE",
            "value": f"{WEB_IDENTITY_DIR}/{WEB_IDENTITY_TOKEN}",
        },
        # the pod's name in the STS's and the bucket's audit logs
        {"name": "AWS_ROLE_SESSION_NAME", "value": "$(POD_NAME)"},
        # STS is regional; the first store's region is where new data goes
        {"name": "AWS_REGION", "value": ctx.storage.stores[0].region},
    ]
    if identity.sts_endpoint is not None:
        env.append({"name": "AWS_ENDPOINT_URL_STS", "value": identity.sts_endpoint})
    return env


def web_identity_volume(ctx: WorkloadInputs) -> Object | None:
    identity = ctx.storage.web_identity if ctx.storage is not None else None
    if identity is None:
        return None
    token = {
        "audience": identity.audience,
        "expirationSeconds": WEB_IDENTITY_TOKEN_SECONDS,
        "path": WEB_IDENTITY_TOKEN,
    }
    return {
        "name": WEB_IDENTITY_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": token}]},
    }


def _pod_spec(ctx: WorkloadInputs) -> Object:
    template = ctx.task.spec.shards
    spec: Object = {
        "serviceAccountName": names.runtime_name(ctx.name),
        "terminationGracePeriodSeconds": termination_grace_seconds(ctx.task),
        # the runtime finds its peers through the API, not through service variables
        "enableServiceLinks": False,
        "securityContext": dict(POD_SECURITY),
        "containers": [_container(ctx)],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}],
    }
    token = web_identity_volume(ctx)
    if token is not None:
        spec["volumes"].append(token)
    if template.node_selector:
        spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        spec["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True)
            for t in template.tolerations
        ]
    if template.affinity:
        spec["affinity"] = template.affinity
    elif template.hot_standbys > 0:
        # a standby is there to outlive its primary's node
        spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": names.shard_selector(ctx.name)},
                        },
                    }
                ]
            }
        }
    return spec


def volume_claim_templates(task: Task, labels: dict[str, str]) -> list[Object]:
    template = task.spec.shards
    claim: Object = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": template.volume_size}},
    }
    if template.storage_class_name is not None:
        claim["storageClassName"] = template.storage_class_name
    return [{"metadata": {"name": names.DATA_VOLUME, "labels": labels}, "spec": claim}]


def stateful_set(ctx: WorkloadInputs) -> Object:
    """One pod per replica. Updates are ``OnDelete``: the operator deletes outdated pods
    itself, standbys first and the primary last (see rollout.py)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(ctx, ctx.name),
        "spec": {
            "replicas": replicas(ctx.task),
            "serviceName": ctx.name,
            # replicas elect their primary through a Lease, so none waits for another
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": names.shard_selector(ctx.name)},
            # a volume is a cache of the recovery log: it goes with the StatefulSet, but
            # stays while the shard is disabled (scaled to zero) so it restarts warm
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": ctx.labels,
                    "annotations": {"kubectl.kubernetes.io/default-container": "shard"},
                },
                "spec": _pod_spec(ctx),
            },
            "volumeClaimTemplates": volume_claim_templates(ctx.task, ctx.labels),
        },
    }


def keep_immutable_claims(desired: Object, observed: Object | None) -> tuple[Object, bool]:
    """``desired`` with the volume claim templates of the existing StatefulSet, which the API
    server refuses to change; and whether the wanted ones differed."""
    existing = (observed or {}).get("spec", {}).get("volumeClaimTemplates")
    if existing is None:
        return desired, False
    wanted = desired["spec"]["volumeClaimTemplates"]
    if _claims_match(wanted, existing):
        return desired, False
    kept = [
        {
            "metadata": {"name": c["metadata"]["name"], "labels": c["metadata"].get("labels", {})},
            "spec": {
                k: v
                for k, v in c["spec"].items()
                if k in ("accessModes", "resources", "storageClassName")
            },
        }
        for c in existing
    ]
    return {**desired, "spec": {**desired["spec"], "volumeClaimTemplates": kept}}, True


def _claims_match(wanted: list[Object], existing: list[Object]) -> bool:
    """Same names, sizes and classes; an unset class matches the default the server chose."""
    if len(wanted) != len(existing):
        return False
    for want, have in zip(wanted, existing, strict=True):
        want_class = want["spec"].get("storageClassName")
        if (
            want["metadata"]["name"] != have["metadata"].get("name")
            or not _same_quantity(
                want["spec"]["resources"]["requests"].get("storage"),
                have["spec"].get("resources", {}).get("requests", {}).get("storage"),
            )
            or (want_class is not None and want_class != have["spec"].get("storageClassName"))
        ):
            return False
    return True


def _same_quantity(a: object, b: object) -> bool:
    """The server stores quantities in canonical form (1.5Gi becomes 1536Mi)."""
    from kubernetes.utils import parse_quantity

    if a is None or b is None:
        return a is b
    return bool(parse_quantity(a) == parse_quantity(b))


def _service_ports(ctx: WorkloadInputs) -> list[Object]:
    ports: list[Object] = [
        {"name": names.ADMIN_PORT_NAME, "port": names.ADMIN_PORT, "targetPort": "admin"}
    ]
    ingest = ingest_port(ctx.task)
    if ingest is not None:
        ports.append({"name": names.INGEST_PORT_NAME, "port": ingest, "targetPort": "ingest"})
    return ports


def service(ctx: WorkloadInputs) -> Object:
    """Headless: it names the StatefulSet's pods; there is nothing to balance."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ctx, ctx.name),
        "spec": {
            "clusterIP": "None",
            "selector": names.shard_selector(ctx.name),
            "ports": _service_ports(ctx),
        },
    }


def pod_disruption_budget(ctx: WorkloadInputs) -> Object:
    """A drain takes one replica at a time, so a standby is left to take over."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ctx, ctx.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.shard_selector(ctx.name)},
        },
    }


def service_account(ctx: WorkloadInputs) -> Object:
    """The pods' identity; the mapping's annotations are for an identity webhook (IRSA's
    eks.amazonaws.com/role-arn, GKE's iam.gke.io/gcp-service-account)."""
    metadata = _metadata(ctx, names.runtime_name(ctx.name))
    annotations = ctx.storage.service_account_annotations if ctx.storage is not None else {}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def pod_names(task: Task, shard: str) -> list[str]:
    """The names the shard's StatefulSet gives its pods, disabled or not."""
    return [names.pod_name(shard, i) for i in range(1 + task.spec.shards.hot_standbys)]


def runtime_rules(
    shard: str,
    secret_names: Sequence[str],
    split_source: str | None = None,
    pods: Sequence[str] = (),
) -> list[Object]:
    """The runtime's permissions, exactly the table in docs/shard-pod.md.

    Names are pinned wherever the verb allows it, so a shard's pods cannot read or write
    another shard's object or Lease, or any Secret they were not given. A child of a split
    may also read its parent (``split_source``), whose spec names the log it restores.
    Each pod labels itself with its role (``pods``: the shard's pod names).
    """
    readable = [shard, split_source] if split_source else [shard]
    rules: list[Object] = [
        _rule(GROUP, "shards", ["get", "watch"], readable),
        _rule(GROUP, "shards/status", ["get", "patch"], [shard]),
        {
            "apiGroups": [GROUP],
            "resources": ["tasks", "collections", "storagemappings"],
            "verbs": ["get", "list", "watch"],
        },
        _rule("coordination.k8s.io", "leases", ["get", "update", "patch"], [shard]),
        # create cannot be limited by name: the object does not exist when it is authorized
        _rule("coordination.k8s.io", "leases", ["create"]),
        _rule("", "events", ["create", "patch"]),
    ]
    if pods:
        # an empty resourceNames would mean every pod: leave the rule out instead
        rules.append(_rule("", "pods", ["patch"], list(pods)))
    if secret_names:
        # an empty resourceNames would mean every Secret: leave the rule out instead
        rules.append(_rule("", "secrets", ["get"], sorted(set(secret_names))))
    return rules


def _rule(group: str, resource: str, verbs: list[str], names_: list[str] | None = None) -> Object:
    rule: Object = {"apiGroups": [group], "resources": [resource], "verbs": verbs}
    if names_:
        rule["resourceNames"] = names_
    return rule


def role(ctx: WorkloadInputs) -> Object:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(ctx, names.runtime_name(ctx.name)),
        "rules": runtime_rules(
            ctx.name,
            ctx.secret_names,
            ctx.shard.spec.split_source,
            pod_names(ctx.task, ctx.name),
        ),
    }


def role_binding(ctx: WorkloadInputs) -> Object:
    runtime = names.runtime_name(ctx.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(ctx, runtime),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": runtime},
        "subjects": [{"kind": "ServiceAccount", "name": runtime, "namespace": ctx.namespace}],
    }


def workload(ctx: WorkloadInputs) -> list[Object]:
    """Every object of the shard, in the order to apply them: the pods' identity and rights
    first, so that a pod never starts without them, and the StatefulSet last."""
    return [
        service_account(ctx),
        role(ctx),
        role_binding(ctx),
        service(ctx),
        pod_disruption_budget(ctx),
        stateful_set(ctx),
    ]
