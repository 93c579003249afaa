"""The shard workload is exactly what docs/shard-pod.md says, computed from the models."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.controller.models import NAMESPACE, shard_of, task

from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.storagemapping import StorageMappingSpec
from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.objects import content_hash
from shardkeeper.controller.specs.workload import (
    WEB_IDENTITY_DIR,
    WorkloadDefaults,
    WorkloadInputs,
    keep_immutable_claims,
    runtime_rules,
    termination_grace_seconds,
    workload,
)

SHARD = "customer-totals-00000000-00000000"
DEFAULTS = WorkloadDefaults(
    shard_image="registry.example/shardkeeper:1.2.3", lease_duration=20, status_interval=5
)


def objects(**changes: Any) -> dict[str, dict[str, Any]]:
    owner = task(**changes)
    ctx = WorkloadInputs(shard_of(owner), owner, ["s3-credentials"], DEFAULTS)
    return {obj["kind"]: obj for obj in workload(ctx)}


def container(**changes: Any) -> dict[str, Any]:
    spec = objects(**changes)["StatefulSet"]["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    found: dict[str, Any] = spec["containers"][0]
    return found


def test_every_object_is_named_labelled_and_owned_by_the_shard() -> None:
    found = objects()
    assert list(found) == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "PodDisruptionBudget",
        "StatefulSet",
    ], "identity and rights first, the StatefulSet last"
    runtime = f"{SHARD}-runtime"
    expected_names = {
        "ServiceAccount": runtime,
        "Role": runtime,
        "RoleBinding": runtime,
        "Service": SHARD,
        "PodDisruptionBudget": SHARD,
        "StatefulSet": SHARD,
    }
    for kind, obj in found.items():
        meta = obj["metadata"]
        assert meta["name"] == expected_names[kind]
        assert meta["namespace"] == NAMESPACE
        assert meta["labels"] == {
            "app.kubernetes.io/name": "shardkeeper-shard",
            "app.kubernetes.io/managed-by": "shardkeeper",
            "shardkeeper.io/task": "customer-totals",
            "shardkeeper.io/shard": SHARD,
        }
        (owner,) = meta["ownerReferences"]
        assert owner == {
            "apiVersion": API_VERSION,
            "kind": "Shard",
            "name": SHARD,
            "uid": f"uid-shard-{SHARD}",
            "controller": True,
            "blockOwnerDeletion": True,
        }


def test_statefulset_runs_a_primary_and_its_standbys_with_a_data_claim() -> None:
    sts = objects()["StatefulSet"]["spec"]
    assert sts["replicas"] == 2, "the example has hotStandbys: 1"
    assert sts["serviceName"] == SHARD
    assert sts["updateStrategy"] == {"type": "OnDelete"}
    assert sts["podManagementPolicy"] == "Parallel"
    assert sts["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "shardkeeper-shard",
        "shardkeeper.io/shard": SHARD,
    }
    assert sts["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    assert "storageClassName" not in claim["spec"]
    pod = sts["template"]["spec"]
    assert pod["serviceAccountName"] == f"{SHARD}-runtime"
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/var/lib/shardkeeper"},
        {"name": "tmp", "mountPath": "/var/tmp/shardkeeper"},
    ]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert sts["template"]["metadata"]["labels"]["shardkeeper.io/shard"] == SHARD


def test_shard_pods_run_unprivileged_as_the_images_user() -> None:
    pod = objects()["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_standbys_prefer_other_nodes_than_their_primary_unless_the_task_says() -> None:
    alone = objects(**{"spec.shards.hotStandbys": 0})["StatefulSet"]["spec"]["template"]
    assert "affinity" not in alone["spec"]
    spread = objects(**{"spec.shards.hotStandbys": 1})["StatefulSet"]["spec"]["template"]
    (term,) = spread["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "shardkeeper-shard",
        "shardkeeper.io/shard": SHARD,
    }
    disabled = objects(**{"spec.shards.hotStandbys": 1, "spec.shards.disable": True})
    assert disabled["StatefulSet"]["spec"]["template"] == spread, "disabling rolls nothing"
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    chosen = objects(**{"spec.shards.hotStandbys": 1, "spec.shards.affinity": own})
    assert chosen["StatefulSet"]["spec"]["template"]["spec"]["affinity"] == own


def test_disable_scales_to_zero_and_standbys_add_replicas() -> None:
    assert objects(**{"spec.shards.disable": True})["StatefulSet"]["spec"]["replicas"] == 0
    assert objects(**{"spec.shards.hotStandbys": 3})["StatefulSet"]["spec"]["replicas"] == 4


def test_container_command_environment_ports_and_probes() -> None:
    found = container()
    assert found["name"] == "shard"
    assert found["command"] == ["shardkeeper", "shard"]
    assert "args" not in found
    assert found["image"] == DEFAULTS.shard_image
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in found["env"]}
    assert env == {
        "SHARDKEEPER_SHARD": SHARD,
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}},
        "SHARDKEEPER_DATA_DIR": "/var/lib/shardkeeper",
        "SHARDKEEPER_ADMIN_PORT": "8081",
        "SHARDKEEPER_LEASE_DURATION": "20",
        "SHARDKEEPER_STATUS_INTERVAL": "5",
        "SHARDKEEPER_PRUNE_EVERY": "10m",
        "SHARDKEEPER_LOG_LEVEL": "info",
        "TMPDIR": "/var/tmp/shardkeeper",
    }
    assert found["ports"] == [{"name": "admin", "containerPort": 8081}]
    assert found["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert found["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_capture_with_http_gets_an_ingest_port_on_pod_and_service() -> None:
    owner = task("ingest-orders")
    ctx = WorkloadInputs(shard_of(owner), owner, [], DEFAULTS)
    found = {obj["kind"]: obj for obj in workload(ctx)}
    ports = found["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "ingest", "containerPort": 8080} in ports
    assert found["Service"]["spec"]["clusterIP"] == "None"
    assert [p["name"] for p in found["Service"]["spec"]["ports"]] == ["admin", "ingest"]


def test_template_fields_reach_the_pod() -> None:
    found = container(
        **{
            "spec.shards.image": "mine:2",
            "spec.shards.imagePullPolicy": "Always",
            "spec.shards.logLevel": "debug",
            "spec.shards.resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
        }
    )
    assert found["image"] == "mine:2"
    assert found["imagePullPolicy"] == "Always"
    assert found["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    assert {"name": "SHARDKEEPER_LOG_LEVEL", "value": "debug"} in found["env"]
    pod = objects(
        **{
            "spec.shards.nodeSelector": {"disk": "ssd"},
            "spec.shards.tolerations": [{"key": "dedicated", "operator": "Exists"}],
        }
    )["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


@pytest.mark.parametrize(
    ("changes", "seconds"),
    [
        ({}, 12),  # derivation default maxTxnDuration 1s: 2 x 1s + 10s
        ({"spec.shards.maxTxnDuration": "2500ms"}, 15),
    ],
)
def test_termination_grace_covers_two_transactions(changes: dict[str, Any], seconds: int) -> None:
    assert termination_grace_seconds(task(**changes)) == seconds
    found = objects(**changes)["StatefulSet"]["spec"]["template"]["spec"]
    assert found["terminationGracePeriodSeconds"] == seconds


def test_materialization_grace_uses_its_longer_default() -> None:
    assert termination_grace_seconds(task("totals-to-postgres")) == 2 * 300 + 10


def test_pdb_takes_one_pod_at_a_time() -> None:
    pdb = objects()["PodDisruptionBudget"]["spec"]
    assert pdb == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "shardkeeper-shard",
                "shardkeeper.io/shard": SHARD,
            }
        },
    }


def test_role_pins_names_wherever_the_verb_allows() -> None:
    rules = runtime_rules(
        SHARD,
        ["s3-credentials", "postgres-password", "s3-credentials"],
        pods=[f"{SHARD}-0", f"{SHARD}-1"],
    )
    table = {
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])): r.get("resourceNames")
        for r in rules
    }
    assert table == {
        (("shardkeeper.io",), ("shards",), ("get", "watch")): [SHARD],
        (("shardkeeper.io",), ("shards/status",), ("get", "patch")): [SHARD],
        (
            ("shardkeeper.io",),
            ("tasks", "collections", "storagemappings"),
            ("get", "list", "watch"),
        ): None,
        (("coordination.k8s.io",), ("leases",), ("get", "update", "patch")): [SHARD],
        (("coordination.k8s.io",), ("leases",), ("create",)): None,
        (("",), ("events",), ("create", "patch")): None,
        (("",), ("pods",), ("patch",)): [f"{SHARD}-0", f"{SHARD}-1"],
        (("",), ("secrets",), ("get",)): ["postgres-password", "s3-credentials"],
    }


def test_the_role_lets_each_pod_of_the_shard_label_itself_even_while_disabled() -> None:
    for changes in ({}, {"spec.shards.disable": True}):
        found = objects(**{"spec.shards.hotStandbys": 2, **changes})["Role"]
        (rule,) = [r for r in found["rules"] if r["resources"] == ["pods"]]
        assert rule["verbs"] == ["patch"]
        assert rule["resourceNames"] == [f"{SHARD}-{i}" for i in range(3)]
    # resourceNames: [] would grant every pod
    assert all("pods" not in r["resources"] for r in runtime_rules(SHARD, []))


def test_no_secret_rule_at_all_when_there_is_no_secret_to_read() -> None:
    # resourceNames: [] would grant every Secret
    rules = runtime_rules(SHARD, [])
    assert all("secrets" not in r["resources"] for r in rules)


def test_rolebinding_binds_the_role_to_the_service_account() -> None:
    binding = objects()["RoleBinding"]
    runtime = f"{SHARD}-runtime"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": runtime,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": runtime, "namespace": NAMESPACE}
    ]


def test_same_inputs_same_hash_and_any_template_change_moves_it() -> None:
    def digest(**changes: Any) -> str:
        return content_hash(list(objects(**changes).values()))

    assert digest() == digest()
    assert digest() != digest(**{"spec.shards.image": "other:1"})
    assert digest() != digest(**{"spec.shards.hotStandbys": 2})
    assert digest() != digest(**{"spec.shards.logLevel": "debug"})


def test_existing_claims_are_kept_because_the_server_refuses_to_change_them() -> None:
    desired = objects(**{"spec.shards.volumeSize": "5Gi"})["StatefulSet"]
    observed = {
        "spec": {
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": {"a": "b"}},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                        "volumeMode": "Filesystem",
                        "storageClassName": "standard",
                    },
                }
            ]
        }
    }
    kept, changed = keep_immutable_claims(desired, observed)
    assert changed
    (claim,) = kept["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    assert kept["spec"]["template"] == desired["spec"]["template"]


def test_claims_that_match_in_canonical_form_are_not_a_change() -> None:
    desired = objects(**{"spec.shards.volumeSize": "1.5Gi"})["StatefulSet"]
    observed = {
        "spec": {
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    # the server's canonical form of 1.5Gi, and the default class it chose
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1536Mi"}},
                        "storageClassName": "standard",
                    },
                }
            ]
        }
    }
    kept, changed = keep_immutable_claims(desired, observed)
    assert not changed
    assert kept is desired
    assert keep_immutable_claims(desired, None) == (desired, False)


def test_names_and_ordinals() -> None:
    assert names.pod_ordinal(SHARD, f"{SHARD}-3") == 3
    assert names.pod_ordinal(SHARD, f"{SHARD}-x") is None
    assert names.pod_ordinal(SHARD, "other-0") is None


def test_a_split_changes_only_the_childs_role_never_the_pods() -> None:
    owner = task()
    shard = shard_of(owner)
    before = workload(WorkloadInputs(shard, owner, ["s3-credentials"], DEFAULTS))
    # the parent: narrowed, with targets and a request; none of it shapes its workload
    narrowed = shard.model_copy(deep=True)
    narrowed.spec.key_end = 0x7FFFFFFF
    narrowed.spec.split_targets = ["customer-totals-80000000-00000000"]
    same = workload(WorkloadInputs(narrowed, owner, ["s3-credentials"], DEFAULTS))
    assert content_hash(same) == content_hash(before)
    # a child being built may read its parent, and its pods are as any shard's
    child = shard.model_copy(deep=True)
    child.spec.split_source = "customer-totals-ffffffff-00000000"
    built = {
        o["kind"]: o for o in workload(WorkloadInputs(child, owner, ["s3-credentials"], DEFAULTS))
    }
    rule = next(r for r in built["Role"]["rules"] if r["resources"] == ["shards"])
    assert rule["resourceNames"] == [SHARD, "customer-totals-ffffffff-00000000"]
    first = {o["kind"]: o for o in before}
    assert built["StatefulSet"] == first["StatefulSet"]


def _ambient(**spec: Any) -> dict[str, dict[str, Any]]:
    owner = task()
    storage = StorageMappingSpec.model_validate(
        {"stores": [{"bucket": "shards", "region": "eu-west-1"}], **spec}
    )
    ctx = WorkloadInputs(shard_of(owner), owner, [], DEFAULTS, storage)
    return {obj["kind"]: obj for obj in workload(ctx)}


def test_a_web_identity_projects_a_token_and_sets_the_variables_boto3_reads() -> None:
    role = "arn:aws:iam::123456789012:role/shards"
    found = _ambient(
        webIdentity={"roleArn": role, "audience": "minio", "stsEndpoint": "http://sts:9000"}
    )
    pod = found["StatefulSet"]["spec"]["template"]["spec"]
    (token,) = [v for v in pod["volumes"] if v["name"] == "web-identity-token"]
    assert token["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "minio", "expirationSeconds": 3600, "path": "token"}}
    ]
    (shard,) = pod["containers"]
    mount = {"name": "web-identity-token", "mountPath": WEB_IDENTITY_DIR, "readOnly": True}
    assert mount in shard["volumeMounts"]
    env = {e["name"]: e.get("value") for e in shard["env"]}
    assert {k: v for k, v in env.items() if k.startswith("AWS_")} == {
        "AWS_ROLE_ARN": role,
        "AWS_WEB_IDENTITY_TOKEN_FILE": f"{WEB_IDENTITY_DIR}/token",
        "AWS_ROLE_SESSION_NAME": "$(POD_NAME)",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_STS": "http://sts:9000",
    }
    # $(POD_NAME) expands only to a variable defined before it
    names_in_order = [e["name"] for e in shard["env"]]
    assert names_in_order.index("POD_NAME") < names_in_order.index("AWS_ROLE_SESSION_NAME")
    assert "annotations" not in found["ServiceAccount"]["metadata"]


def test_plain_ambient_credentials_add_nothing_and_annotations_go_on_the_service_account() -> None:
    plain = _ambient()
    assert plain == objects_without_secrets(), "no identity: the workload of a Secret's store"
    annotated = _ambient(serviceAccountAnnotations={"eks.amazonaws.com/role-arn": "arn:x"})
    assert annotated["ServiceAccount"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:x"
    }
    assert annotated["StatefulSet"] == plain["StatefulSet"]


def objects_without_secrets() -> dict[str, dict[str, Any]]:
    owner = task()
    return {o["kind"]: o for o in workload(WorkloadInputs(shard_of(owner), owner, [], DEFAULTS))}
