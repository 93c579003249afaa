"""The CRDs against a real API server: examples accepted, defaults applied by the server,
invalid manifests refused with the field named, immutable fields kept, columns printed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from subprocess import CompletedProcess
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.api.manifests import (
    EXAMPLES,
    GROUP,
    PLURALS,
    VERSION,
    Invalid,
    at,
    example,
    example_documents,
    invalid_manifests,
    shard,
)
from tests.support.wait import wait_for

from shardkeeper.api import KINDS
from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import ConditionStatus, Resource
from shardkeeper.api.shard import ReplicaState, Shard, ShardPhase, ShardStatus
from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import TaskStatus

Kubectl = Callable[..., "CompletedProcess[str]"]
MODELS: dict[str, type[Resource]] = {k.KIND: k for k in KINDS}
ROOT = EXAMPLES.parent


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "-n", namespace, f"{PLURALS[kind]}.{GROUP}", name, "-o", "json")
    obj: dict[str, Any] = json.loads(out.stdout)
    return obj


def _apply_examples(kubectl: Kubectl, namespace: str) -> CompletedProcess[str]:
    return kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(ROOT / "crds"), "-f", str(EXAMPLES)
    )


def _without_empty(value: Any) -> Any:
    """Drop empty lists and maps, which the models write and the API server never stores."""
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def _ours(documents: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for _, doc in documents if doc["apiVersion"] == f"{GROUP}/{VERSION}"]


def test_examples_are_accepted_with_the_models_defaults_and_reapply_changes_nothing(
    crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    documents = example_documents()
    first = _apply_examples(kubectl, namespace)
    assert first.stdout.count("serverside-applied") == len(crds) + len(documents), first.stdout

    stored = {}
    for doc in _ours(documents):
        kind, name = doc["kind"], doc["metadata"]["name"]
        obj = _get(kubectl, namespace, kind, name)
        stored[kind, name] = obj
        # The API server filled in exactly the defaults the models have.
        expected = _without_empty(MODELS[kind].from_k8s(doc).to_k8s()["spec"])
        assert obj["spec"] == expected, f"{kind}/{name}"
        assert obj["metadata"]["generation"] == 1

    _apply_examples(kubectl, namespace)
    for (kind, name), before in stored.items():
        after = _get(kubectl, namespace, kind, name)
        assert after["metadata"]["generation"] == before["metadata"]["generation"], name
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], name


def test_a_materialization_may_run_transactions_up_to_its_own_default_max(
    crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    # 2m is past the 1s default of other types, within the 5m of a materialization.
    materialization = next(
        doc for doc in _ours(example_documents()) if doc["spec"].get("type") == "materialization"
    )
    manifest = at(materialization, {"spec.shards.minTxnDuration": "2m"})
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    assert (
        _get(kubectl, namespace, "Task", manifest["metadata"]["name"])["spec"]["shards"][
            "minTxnDuration"
        ]
        == "2m"
    )


_KUBECTL_ERROR = re.compile(r"^(?:\* |.* is invalid: )(?P<field>[^\s:]+): (?P<message>.*)$")


def _kubectl_errors(stderr: str) -> list[tuple[str, str]]:
    errors = []
    for line in stderr.splitlines():
        match = _KUBECTL_ERROR.match(line)
        if match:
            errors.append((match["field"], match["message"]))
        elif "unknown field" in line:
            field = re.search(r'unknown field "([^"]+)"', line)
            errors.append((field[1] if field else "", line))
    return errors


def _api_errors(error: ApiException) -> list[tuple[str, str]]:
    status = json.loads(error.body)
    causes = status.get("details", {}).get("causes", [])
    if causes:
        return [(c.get("field", ""), c.get("message", "")) for c in causes]
    field = re.search(r'unknown field "([^"]+)"', status.get("message", ""))
    return [(field[1] if field else "", status.get("message", ""))]


@pytest.mark.parametrize("case", invalid_manifests(), ids=lambda case: case.id)
def test_invalid_manifest_is_refused_naming_the_field(
    case: Invalid, crds: list[str], kubectl: Kubectl, kube_api: Any, namespace: str
) -> None:
    body = json.dumps(case.manifest)
    # As a person applies it...
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=body, check=False)
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    errors = _kubectl_errors(proc.stderr)
    assert any(f == case.field and case.message in m for f, m in errors), proc.stderr

    # ...and as a program does, reading the causes of the API's answer.
    api = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURALS[case.manifest["kind"]],
            case.manifest,
            field_validation="Strict",
        )
    assert refused.value.status in (400, 422)
    causes = _api_errors(refused.value)
    assert any(f == case.field and case.message in m for f, m in causes), causes


IMMUTABLE = [
    pytest.param("Task", {"spec": {"type": "derivation"}}, "spec.type", id="task-type"),
    pytest.param(
        "Task", {"spec": {"storageMapping": "elsewhere"}}, "spec.storageMapping", id="task-mapping"
    ),
    pytest.param(
        "Task",
        {"spec": {"restoreFrom": {"task": "customer-totals"}}},
        "spec.restoreFrom",
        id="task-restore-added",
    ),
    pytest.param("Collection", {"spec": {"key": ["/order"]}}, "spec.key", id="collection-key"),
    pytest.param("Shard", {"spec": {"task": "other"}}, "spec.task", id="shard-task"),
    pytest.param("Shard", {"spec": {"keyBegin": "00000001"}}, "spec.keyBegin", id="key-begin"),
    pytest.param(
        "Shard", {"spec": {"rClockBegin": "00000001"}}, "spec.rClockBegin", id="r-clock-begin"
    ),
    pytest.param(
        "Shard", {"spec": {"recoveryLog": "recovery/x"}}, "spec.recoveryLog", id="recovery-log"
    ),
    pytest.param("Shard", {"spec": {"keyEnd": "ffffffff"}}, "spec.keyEnd", id="key-end-widens"),
    pytest.param(
        "Shard", {"spec": {"rClockEnd": "ffffffff"}}, "spec.rClockEnd", id="r-clock-end-widens"
    ),
]
MESSAGES = {
    "spec.restoreFrom": "restoreFrom is set when a Task is created",
    "spec.keyEnd": "keyEnd may only shrink",
    "spec.rClockEnd": "rClockEnd may only shrink",
}
EXAMPLE_NAMES = {"Task": "ingest-orders", "Collection": "orders"}


def _create_shard(kubectl: Kubectl, namespace: str, **spec: Any) -> str:
    manifest = at(shard(), {f"spec.{k}": v for k, v in spec.items()})
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    return str(manifest["metadata"]["name"])


@pytest.mark.parametrize(("kind", "patch", "field"), IMMUTABLE)
def test_immutable_fields_are_kept(
    *,
    kind: str,
    patch: dict[str, Any],
    field: str,
    crds: list[str],
    kubectl: Kubectl,
    namespace: str,
) -> None:
    if kind == "Shard":
        name = _create_shard(kubectl, namespace, rClockEnd="7fffffff")
    else:
        _apply_examples(kubectl, namespace)
        name = EXAMPLE_NAMES[kind]
    message = MESSAGES.get(field, f"{field.rsplit('.', maxsplit=1)[-1]} is immutable")
    before = _get(kubectl, namespace, kind, name)
    proc = kubectl(
        "patch", "-n", namespace, f"{PLURALS[kind]}.{GROUP}", name, "--type=merge",
        "-p", json.dumps(patch), check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert any(f == field and message in m for f, m in _kubectl_errors(proc.stderr)), proc.stderr
    assert _get(kubectl, namespace, kind, name)["spec"] == before["spec"]


def test_a_shard_range_may_narrow_and_a_person_may_ask_for_a_split(
    crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    name = _create_shard(kubectl, namespace)
    resource = f"shards.{GROUP}"
    patch = {"spec": {"keyEnd": "3fffffff", "split": {"by": "rClock"}}}
    kubectl("patch", "-n", namespace, resource, name, "--type=merge", "-p", json.dumps(patch))
    stored = Shard.from_k8s(_get(kubectl, namespace, "Shard", name))
    assert stored.spec.key_end == 0x3FFFFFFF
    assert stored.spec.split is not None
    assert stored.spec.split.by == "rClock"


def test_a_collection_retention_is_accepted_and_kept_as_written(
    crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    _apply_examples(kubectl, namespace)
    resource = f"collections.{GROUP}"
    for retention in ({"maxAge": "168h"}, {"maxBytes": "10Gi"}, {"maxAge": "1m", "maxBytes": 1}):
        patch = {"spec": {"retention": {"maxAge": None, "maxBytes": None, **retention}}}
        kubectl(
            "patch", "-n", namespace, resource, "orders", "--type=merge", "-p", json.dumps(patch)
        )
        stored = _get(kubectl, namespace, "Collection", "orders")
        assert stored["spec"]["retention"] == retention
        assert Collection.from_k8s(stored).spec.retention is not None


def test_a_store_without_a_secret_is_accepted_with_a_web_identity(
    crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    """Ambient credentials: no credentialsSecretRef, with or without a web identity."""
    mapping = example("StorageMapping", "local")
    del mapping["spec"]["stores"][0]["credentialsSecretRef"]
    plain = json.dumps(mapping)
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=plain)
    assert (
        "credentialsSecretRef"
        not in _get(kubectl, namespace, "StorageMapping", "local")["spec"]["stores"][0]
    )
    role = "arn:minio:iam:::role/abc"
    mapping["spec"]["webIdentity"] = {"roleArn": role, "stsEndpoint": "http://127.0.0.1:9000"}
    mapping["spec"]["serviceAccountAnnotations"] = {"eks.amazonaws.com/role-arn": role}
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(mapping))
    stored = _get(kubectl, namespace, "StorageMapping", "local")
    assert stored["spec"]["webIdentity"] == {
        "roleArn": role,
        "audience": "sts.amazonaws.com",
        "stsEndpoint": "http://127.0.0.1:9000",
    }
    parsed = StorageMapping.from_k8s(stored).spec
    assert parsed.web_identity is not None
    assert parsed.web_identity.role_arn == role
    assert parsed.service_account_annotations == {"eks.amazonaws.com/role-arn": role}


def test_status_is_a_subresource_and_the_columns_print(
    crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    _apply_examples(kubectl, namespace)
    name = _create_shard(kubectl, namespace)
    primary = f"{name}-0"
    status = ShardStatus(
        phase=ShardPhase.RUNNING,
        primary=primary,
        epoch=3,
        lag=42,
        replicas=[{"pod": primary, "state": ReplicaState.PRIMARY, "epoch": 3}],
        conditions=[
            {
                "type": "Ready",
                "status": ConditionStatus.TRUE,
                "reason": "PrimaryRunning",
                "lastTransitionTime": "2024-01-31T12:00:00Z",
            }
        ],
    )
    shard_status = {"status": status.model_dump(mode="json", exclude_none=True)}
    # Status is written only through its subresource: a spec update ignores it.
    kubectl(
        "patch", "-n", namespace, f"shards.{GROUP}", name, "--type=merge",
        "-p", json.dumps(shard_status),
    )  # fmt: skip
    assert "status" not in _get(kubectl, namespace, "Shard", name)
    kubectl(
        "patch", "-n", namespace, f"shards.{GROUP}", name, "--subresource=status",
        "--type=merge", "-p", json.dumps(shard_status),
    )  # fmt: skip
    stored = Shard.from_k8s(_get(kubectl, namespace, "Shard", name))
    assert stored.status.primary == primary
    assert stored.status.epoch == 3

    task_status = TaskStatus(shards=1, ready_shards=1, shards_by_phase={"Running": 1})
    kubectl(
        "patch", "-n", namespace, f"tasks.{GROUP}", "customer-totals", "--subresource=status",
        "--type=merge", "-p",
        json.dumps({"status": task_status.model_dump(mode="json", exclude_none=True)}),
    )  # fmt: skip

    out = kubectl("get", "-n", namespace, "tasks,shards,collections,storagemappings").stdout
    tables = _tables(out)
    assert tables["TYPE"]["task.shardkeeper.io/customer-totals"] == {
        "TYPE": "derivation",
        "SHARDS": "1",
        "READY": "1",
    } | _age(tables["TYPE"]["task.shardkeeper.io/customer-totals"])
    assert tables["TASK"][f"shard.shardkeeper.io/{name}"] == {
        "TASK": "customer-totals",
        "KEY BEGIN": "00000000",
        "KEY END": "7fffffff",
        "RCLOCK BEGIN": "00000000",
        "RCLOCK END": "ffffffff",
        "PHASE": "Running",
        "PRIMARY": primary,
        "LAG": "42",
    } | _age(tables["TASK"][f"shard.shardkeeper.io/{name}"])
    assert tables["KEY"]["collection.shardkeeper.io/orders"]["KEY"] == '["/id"]'
    assert tables["BUCKET"]["storagemapping.shardkeeper.io/local"]["BUCKET"] == "shardkeeper"
    for table in tables.values():
        for row in table.values():
            assert re.fullmatch(r"\d+[smhd].*", row["AGE"]), row

    # The category lists every kind; the short names name them.
    listed = kubectl("get", "-n", namespace, "shardkeeper", "-o", "name").stdout.split()
    assert {line.split("/")[0] for line in listed} == {
        f"{plural[:-1]}.{GROUP}" for plural in PLURALS.values()
    }
    for kind in KINDS:
        for short in kind.SHORT_NAMES:
            names = kubectl("get", "-n", namespace, short, "-o", "name").stdout.split()
            assert names
            assert all(n.startswith(f"{kind.KIND.lower()}.{GROUP}/") for n in names)


def _age(row: dict[str, str]) -> dict[str, str]:
    return {"AGE": row["AGE"]}


def _tables(output: str) -> dict[str, dict[str, dict[str, str]]]:
    """``kubectl get`` of several kinds: second header -> object name -> column -> value."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    for block in output.strip().split("\n\n"):
        header, *rows = block.splitlines()
        starts = [m.start() for m in re.finditer(r"(?<=\s{2})\S|^\S", header)]
        names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        table = {}
        for row in rows:
            cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
            table[cells[0]] = dict(zip(names[1:], cells[1:], strict=True))
        tables[names[1]] = table
    return tables


def test_kubectl_explain_shows_the_models_descriptions(crds: list[str], kubectl: Kubectl) -> None:
    def explain() -> str | None:
        proc = kubectl("explain", "task.spec.shards", check=False)
        return proc.stdout if proc.returncode == 0 and "maxTxnDuration" in proc.stdout else None

    text = wait_for(explain, timeout=60, what="the Task schema in the published OpenAPI")
    flat = " ".join(text.split())
    assert "How the task's shards run: Flow's shard settings" in flat
    assert "Unset means 1s for captures and derivations and 5m for materializations." in flat
    assert "Replicas per shard that tail the recovery log" in flat
