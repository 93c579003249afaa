"""The Helm chart: it renders, installs with helm into the local cluster, and its operator
(two replicas, in-cluster, with only the chart's RBAC) elects a leader and runs the example
pipeline, creating the runtime Roles its rights allow it to grant; it upgrades (CRDs first)
and uninstalls leaving the CRDs, the Tasks and their data."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.controller.support import Kubectl, apply, bucket_keys, examples, get
from tests.support.metrics import product_metrics
from tests.support.wait import wait_for

from shardkeeper_dev import tools
from shardkeeper_dev.environment import EnvInfo

CHART = Path(__file__).resolve().parents[2] / "charts" / "shardkeeper"


def helm(dev_env: EnvInfo, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(dev_env.kubeconfig)}
    proc = subprocess.run(
        [str(tools.binary_path("helm")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 or not check, (
        f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def rendered(dev_env: EnvInfo, *values: str) -> dict[str, dict[str, Any]]:
    out = helm(dev_env, "template", "sk", str(CHART), "--namespace", "sk-system", *values)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {d["kind"]: d for d in docs}


def test_chart_renders_the_operator_with_leader_election_and_rbac(dev_env: EnvInfo) -> None:
    found = rendered(dev_env)
    assert set(found) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }
    deployment = found["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["shardkeeper", "operator"]
    assert "--leader-election-namespace=sk-system" in container["args"]
    assert "--shard-image=shardkeeper:0.1.0" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--namespace=")]
    env = {e["name"] for e in container["env"]}
    assert env == {"POD_NAME", "POD_NAMESPACE", "POD_IP"}
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "sk-operator"
    assert "annotations" not in found["ServiceAccount"]["metadata"]
    # the operator's own role for stores without a Secret (docs/credentials.md)
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/shards"}
    annotated = rendered(dev_env, "--set-json", f"serviceAccount.annotations={json.dumps(role)}")
    assert annotated["ServiceAccount"]["metadata"]["annotations"] == role
    binding = found["ClusterRoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sk-operator", "namespace": "sk-system"}
    ]

    scoped = rendered(dev_env, "--set", "operator.watchNamespaces={a,b}", "--set", "image.tag=9")
    args = scoped["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--namespace=a", "--namespace=b", "--shard-image=shardkeeper:9"} <= set(args)
    # watching some namespaces: rights there only, and leader election in its own
    out = helm(dev_env, "template", "sk", str(CHART), "--namespace", "sk-system", "--set",
               "operator.watchNamespaces={a,b}")  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert not [d for d in docs if d["kind"].startswith("Cluster")], "no cluster-wide rights"
    roles = {(d["metadata"].get("namespace", "sk-system"), d["metadata"]["name"]): d
             for d in docs if d["kind"] == "Role"}  # fmt: skip
    assert set(roles) == {
        ("a", "sk-operator"),
        ("b", "sk-operator"),
        ("sk-system", "sk-operator-leader"),
    }
    assert roles[("a", "sk-operator")]["rules"] == found["ClusterRole"]["rules"]


def test_chart_runs_the_operator_unprivileged_and_spread_over_nodes(dev_env: EnvInfo) -> None:
    found = rendered(dev_env)
    pod = found["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory", "ephemeral-storage"} <= set(container["resources"]["requests"])
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    selector = found["Deployment"]["spec"]["selector"]["matchLabels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    assert found["PodDisruptionBudget"]["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": selector},
    }

    single = rendered(dev_env, "--set", "operator.replicas=1")
    assert "PodDisruptionBudget" not in single, "a budget of one replica would block every drain"
    assert "affinity" not in single["Deployment"]["spec"]["template"]["spec"]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    chosen = rendered(dev_env, "--set-json", f"operator.affinity={json.dumps(own)}")
    assert chosen["Deployment"]["spec"]["template"]["spec"]["affinity"] == own


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("operator.replicas=0", "/operator/replicas"),
        ("operator.replcas=2", "replcas"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("operator.watchNamespaces={Not_A_Namespace}", "/operator/watchNamespaces/0"),
        ("operator.splitCatchUpTimeout=soon", "/operator/splitCatchUpTimeout"),
        ("metrics.service.port=70000", "/metrics/service/port"),
    ],
)
def test_chart_refuses_bad_values_naming_them(dev_env: EnvInfo, value: str, named: str) -> None:
    proc = helm(dev_env, "template", "sk", str(CHART), "--set", value, check=False)
    assert proc.returncode != 0, f"helm rendered {value}"
    assert named in proc.stderr, proc.stderr


def install(dev_env: EnvInfo, name: str, namespace: str) -> None:
    """The chart as release ``name``, watching only ``namespace`` (the CRDs are the
    session's)."""
    watched = f"operator.watchNamespaces={{{namespace}}}"
    helm(dev_env, "install", name, str(CHART), "--namespace", namespace, "--skip-crds",
         "--set", watched, "--wait", "--timeout=180s")  # fmt: skip


@pytest.fixture
def restores_crds(crds: list[str], kubectl: Kubectl) -> Iterator[None]:
    """Whatever a test did to the CRDs, the session's are back afterwards."""
    yield
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))


@pytest.fixture
def release(
    crds: list[str], dev_env: EnvInfo, namespace: str, kubectl: Kubectl, bucket: str
) -> Iterator[str]:
    name = f"sk{secrets.token_hex(3)}"
    install(dev_env, name, namespace)
    yield name
    if helm(dev_env, "status", name, "--namespace", namespace, check=False).returncode:
        install(dev_env, name, namespace)  # a test that uninstalled it failed before reinstalling
    # the Tasks go while their operator still runs, so no finalizer is left behind
    kubectl("delete", "tasks.shardkeeper.io", "--all", "-n", namespace, "--timeout=120s")
    helm(dev_env, "uninstall", name, "--namespace", namespace, "--wait")


@pytest.mark.usefixtures("restores_crds")
def test_chart_installs_upgrades_and_uninstalls_around_the_examples(
    *,
    release: str,
    dev_env: EnvInfo,
    namespace: str,
    kubectl: Kubectl,
    bucket: str,
    s3: Any,
    crds: list[str],
) -> None:
    operator_pods = {
        p["metadata"]["name"]
        for p in get(kubectl, namespace, "pods")
        if p["metadata"]["name"].startswith(f"{release}-operator-")
    }
    assert len(operator_pods) == 2
    lease = wait_for(
        lambda: (
            (get(kubectl, namespace, "lease", f"{release}-operator") or {})
            .get("spec", {})
            .get("holderIdentity")
        ),
        timeout=60,
        what="a leader",
    )
    assert lease in operator_pods

    apply(kubectl, namespace, examples(dev_env, bucket))
    for task in ("ingest-orders", "customer-totals", "totals-to-postgres"):
        kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=180s", f"task/{task}")
    # the operator's service account could grant the runtime its Role (no escalation)
    role = get(kubectl, namespace, "role", "customer-totals-00000000-00000000-runtime")
    granted = {r["resources"][0]: r.get("resourceNames") for r in role["rules"]}
    assert granted["secrets"] == ["s3-credentials"]

    # a release that adds a CRD field: until its CRDs are applied, the API server refuses
    # a Task that sets it, rather than keep a field the schema does not declare
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump(task_crd_without("snapshotEvery")))  # fmt: skip
    totals = examples(dev_env, bucket, ("Task", "customer-totals"))
    totals[0]["spec"].setdefault("shards", {})["snapshotEvery"] = "64Mi"
    totals_yaml = yaml.safe_dump_all(totals)
    refused = kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                      input=totals_yaml, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "snapshotEvery" in refused.stderr, refused.stderr

    # an upgrade that changes a value: the CRDs first (Helm never upgrades them), then
    # the release; the operator rolls, leads again, and the pipeline stays Ready
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    helm(dev_env, "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
         "--set", "operator.workers=4", "--wait", "--timeout=180s")  # fmt: skip
    deployment = get(kubectl, namespace, "deployment", f"{release}-operator")
    assert "--workers=4" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["metadata"]["generation"] == 2
    wait_for(
        lambda: (
            (get(kubectl, namespace, "lease", f"{release}-operator") or {})
            .get("spec", {})
            .get("holderIdentity")
            not in (None, *operator_pods)
        ),
        timeout=120,
        what="a leader among the upgraded replicas",
    )
    for task in ("ingest-orders", "customer-totals", "totals-to-postgres"):
        kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", f"task/{task}")
    # with the new CRDs the field is kept, and the upgraded operator saw the change
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=totals_yaml)
    task = get(kubectl, namespace, "task", "customer-totals")
    assert task["spec"]["shards"]["snapshotEvery"] == "64Mi"
    wait_for(
        lambda: (
            (t := get(kubectl, namespace, "task", "customer-totals"))["status"].get(
                "observedGeneration"
            )
            == t["metadata"]["generation"]
        ),
        timeout=60,
        what="the operator to observe the Task that sets snapshotEvery",
    )
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/customer-totals"
    )

    # uninstalling the release takes the operator and its rights and leaves the CRDs, the
    # Tasks, their running shards and volumes, and the recovery logs (docs/operator.md)
    logs_before = set(bucket_keys(s3, bucket))
    assert any(f"recovery/{namespace}/" in key for key in logs_before), logs_before
    helm(dev_env, "uninstall", release, "--namespace", namespace, "--wait")
    assert get(kubectl, namespace, "deployment", f"{release}-operator") is None
    assert sorted(kubectl("get", "-o", "name", *crds).stdout.split()) == sorted(crds)
    statefulsets = get(kubectl, namespace, "statefulsets")
    assert len(statefulsets) == 3
    assert all(s["status"].get("readyReplicas") == s["spec"]["replicas"] for s in statefulsets), (
        statefulsets
    )
    claims = {c["metadata"]["name"] for c in get(kubectl, namespace, "persistentvolumeclaims")}
    assert claims == {
        f"data-{s['metadata']['name']}-{i}"
        for s in statefulsets
        for i in range(s["spec"]["replicas"])
    }
    assert logs_before <= set(bucket_keys(s3, bucket))

    # installed again, the operator takes the Tasks up where they are
    install(dev_env, release, namespace)
    for task in ("ingest-orders", "customer-totals", "totals-to-postgres"):
        kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", f"task/{task}")


def task_crd_without(field: str) -> dict[str, Any]:
    """The Task CRD as a release before ``field`` of spec.shards would have it."""
    crd = yaml.safe_load((CHART / "crds" / "shardkeeper.io_tasks.yaml").read_text())
    for version in crd["spec"]["versions"]:
        shards = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["shards"]
        del shards["properties"][field]
        shards["x-kubernetes-validations"] = [
            rule for rule in shards["x-kubernetes-validations"] if field not in rule["rule"]
        ]
    return crd


def test_chart_alerts_and_dashboard_query_only_what_the_product_exports(
    dev_env: EnvInfo,
) -> None:
    out = helm(
        dev_env,
        "template",
        "sk",
        str(CHART),
        "--namespace",
        "sk-system",
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true,operator.watchNamespaces={a,b}",
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodMonitor"}
    assert monitors["sk-operator"]["podMetricsEndpoints"][0]["port"] == "metrics"
    shards = monitors["sk-operator-shards"]
    assert shards["podMetricsEndpoints"][0]["port"] == "admin"
    assert shards["namespaceSelector"] == {"matchNames": ["a", "b"]}
    assert shards["selector"]["matchLabels"]["app.kubernetes.io/name"] == "shardkeeper-shard"
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "ShardkeeperShardFailed",
        "ShardkeeperNoPrimary",
        "ShardkeeperSplitStuck",
        "ShardkeeperLagGrowing",
        "ShardkeeperObjectStoreErrors",
        "ShardkeeperOperatorNotLeading",
    }
    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap"]
    panels = json.loads(dashboard["data"]["shardkeeper.json"])["panels"]
    queries = [t["expr"] for p in panels for t in p["targets"]]

    exported = product_metrics()
    for expr in [*alerts.values(), *queries]:
        for name, selector in re.findall(r"(shardkeeper_\w+)(?:\{([^}]*)\})?", expr):
            assert name in exported, f"{name} (in {expr!r}) is exported by nothing"
            for label in re.findall(r"(\w+)\s*=", selector):
                # namespace is the target's, added by the scrape
                assert label in exported[name] | {"namespace"}, f"{name} has no label {label}"


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "operator.replicas=1,serviceAccount.name=sk-own"],
        [
            "--set",
            "networkPolicy.enabled=true,operator.verbose=true",
            "--set-json",
            'networkPolicy.monitoringFrom=[{"namespaceSelector":{"matchLabels":'
            '{"kubernetes.io/metadata.name":"monitoring"}}}]',
        ],
    ],
    ids=["defaults", "one-replica", "network-policies"],
)
def test_chart_renders_what_the_api_server_accepts(
    dev_env: EnvInfo, kubectl: Kubectl, namespace: str, values: list[str]
) -> None:
    out = helm(
        dev_env,
        "template",
        "sk",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        *values,
    )
    applied = kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=out.stdout
    ).stdout
    kinds = {line.split("/")[0] for line in applied.splitlines()}
    assert "deployment.apps" in kinds
    if "networkPolicy.enabled=true,operator.verbose=true" in values:
        assert applied.count("networkpolicy.networking.k8s.io/") == 2


# kube-score's critical findings that are accepted, each for a reason (docs/operator.md):
# a release image's tag does not move, so pulling it again gains nothing; a shard's
# pull policy and resources are its Task's (spec.shards), and examples leave them to the
# cluster's defaults; NetworkPolicies are the chart's option (networkPolicy.enabled)
ACCEPTED_CRITICAL = {
    "Deployment": {"container-image-pull-policy"},
    "StatefulSet": {
        "container-image-pull-policy",
        "container-resources",
        "container-ephemeral-storage-request-and-limit",
        "pod-networkpolicy",
    },
}


def kube_score(docs: str) -> dict[str, set[str]]:
    """The ids of kube-score's critical checks that fail, by kind of object."""
    proc = subprocess.run(
        [str(tools.binary_path("kube-score")), "score", "--output-format", "json", "-"],
        input=docs,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # kube-score exits 1 when any check is critical: the findings are in its output
    assert proc.returncode in (0, 1), proc.stderr
    found: dict[str, set[str]] = {}
    for obj in json.loads(proc.stdout):
        for check in obj["checks"]:
            if check["grade"] == 1 and not check.get("skipped"):
                found.setdefault(obj["type_meta"]["kind"], set()).add(check["check"]["id"])
    return found


def test_kube_score_finds_nothing_critical_but_what_is_accepted(dev_env: EnvInfo) -> None:
    from tests.unit.controller.models import shard_of, task

    from shardkeeper.controller.specs.workload import (
        WorkloadDefaults,
        WorkloadInputs,
        workload,
    )

    chart = helm(dev_env, "template", "sk", str(CHART), "--set", "networkPolicy.enabled=true")
    assert kube_score(chart.stdout) == {"Deployment": ACCEPTED_CRITICAL["Deployment"]}

    defaults = WorkloadDefaults(shard_image="registry.example/shardkeeper:1.2.3")
    shards = []
    for name in ("ingest-orders", "customer-totals", "totals-to-postgres"):
        owner = task(name)
        shards += workload(WorkloadInputs(shard_of(owner), owner, ["s3-credentials"], defaults))
    assert kube_score(yaml.safe_dump_all(shards)) == {
        "StatefulSet": ACCEPTED_CRITICAL["StatefulSet"]
    }
