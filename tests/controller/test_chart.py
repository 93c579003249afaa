"""The Helm chart: it renders, installs with helm into the local cluster, and its operator
(two replicas, in-cluster, with only the chart's RBAC) elects a leader and runs the example
pipeline, creating the runtime Roles its ClusterRole allows it to grant."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.controller.support import Kubectl, apply, examples, get
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
    binding = found["ClusterRoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sk-operator", "namespace": "sk-system"}
    ]

    scoped = rendered(dev_env, "--set", "operator.watchNamespaces={a,b}", "--set", "image.tag=9")
    args = scoped["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--namespace=a", "--namespace=b", "--shard-image=shardkeeper:9"} <= set(args)


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


@pytest.fixture
def release(
    crds: list[str], dev_env: EnvInfo, namespace: str, kubectl: Kubectl, bucket: str
) -> Iterator[str]:
    name = f"sk{secrets.token_hex(3)}"
    helm(
        dev_env,
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--skip-crds",
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--wait",
        "--timeout=180s",
    )
    yield name
    # the Tasks go while their operator still runs, so no finalizer is left behind
    kubectl("delete", "tasks.shardkeeper.io", "--all", "-n", namespace, "--timeout=120s")
    helm(dev_env, "uninstall", name, "--namespace", namespace, "--wait")


def test_chart_installs_and_its_operator_runs_the_examples(
    release: str, dev_env: EnvInfo, namespace: str, kubectl: Kubectl, bucket: str
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
