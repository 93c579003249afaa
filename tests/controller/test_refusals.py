"""What the API server refuses of a Task's derived objects, the user sees: the Shard's and the
Task's conditions and a Warning Event carry the API server's own words; a Task next to them
runs unaffected; and fixing the spec, or removing the rule that refused, clears it all."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from tests.controller.support import (
    GROUP,
    Kubectl,
    OperatorProcess,
    admission_policy,
    apply,
    events,
    examples,
    get,
    remove_admission_policy,
    wait_condition,
)
from tests.support.argocd import health
from tests.support.wait import wait_for

from shardkeeper.controller.specs.refusals import REFUSED
from shardkeeper_dev.environment import EnvInfo

HEALTHY, BAD, ODD, GATED = "ingest-orders", "bad-affinity", "odd-affinity", "gated"
# affinities the CRD passes on as they are: the API server's validation refuses the first
# (422), server-side apply the second, a field a pod's affinity does not have (500)
AFFINITIES = {
    BAD: {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "d", "operator": "Bogus"}]}]
            }
        }
    },
    ODD: {"nodeAffinity": {"preferred": "soon"}},
}
SAYS = {
    BAD: ("422", 'Invalid value: "Bogus": not a valid selector operator'),
    ODD: ("500", ".spec.template.spec.affinity.nodeAffinity.preferred: field not declared"),
}
DENIED = "this namespace takes no Role or Service of the task gated"
PROBE = "refusal-gate-probe"


def shard_of(task: str) -> str:
    return f"{task}-00000000-00000000"


class Gate:
    """A ValidatingAdmissionPolicy that refuses the Roles and Services of the Task GATED, a
    rule no CRD can foresee. It refuses a labelled ConfigMap too (a dry run), which tells
    when the API server enforces it."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.name = f"refusals-{namespace}"[:63]
        self.namespace = namespace

    def _refused(self) -> bool:
        probe = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PROBE, "labels": {"shardkeeper.io/task": GATED}},
        }
        done = self.kubectl(
            "create", "--dry-run=server", "-n", self.namespace, "-f", "-",
            input=json.dumps(probe), check=False,
        )  # fmt: skip
        return done.returncode != 0

    def close(self) -> None:
        rules = [
            {
                "apiGroups": [group],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": [resource],
            }
            for group, resource in (
                ("rbac.authorization.k8s.io", "roles"),
                ("", "services"),
                ("", "configmaps"),
            )
        ]
        expression = (
            "!has(object.metadata.labels) || "
            "!('shardkeeper.io/task' in object.metadata.labels) || "
            f"object.metadata.labels['shardkeeper.io/task'] != '{GATED}'"
        )
        docs = admission_policy(self.name, self.namespace, rules, expression, DENIED)
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
        wait_for(self._refused, timeout=30, what="the policy in force")

    def open(self) -> None:
        remove_admission_policy(self.kubectl, self.name)


def refusal_events(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in events(kubectl, namespace, name) if e["reason"] == REFUSED]


def named(task: dict[str, Any], name: str, **shards: Any) -> dict[str, Any]:
    copied = copy.deepcopy(task)
    copied["metadata"]["name"] = name
    copied["spec"]["shards"] = {**copied["spec"].get("shards", {}), **shards}
    return copied


def test_refused_objects_show_on_their_tasks_and_clear_once_fixed(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    gate = Gate(kubectl, namespace)
    gate.close()
    try:
        docs = examples(
            dev_env,
            bucket,
            ("Secret", "s3-credentials"),
            ("StorageMapping", "local"),
            ("Collection", "orders"),
            ("Task", HEALTHY),
        )
        capture = docs[-1]
        odd = [named(capture, name, affinity=affinity) for name, affinity in AFFINITIES.items()]
        apply(kubectl, namespace, [*docs, *odd, named(capture, GATED)])

        # the API server refuses two tasks' StatefulSets...
        for name, (status, words) in SAYS.items():
            shard = wait_condition(
                kubectl, namespace, f"shard/{shard_of(name)}", "Ready=False", reason=REFUSED
            )
            assert f"StatefulSet {shard_of(name)} ({status})" in shard["message"]
            assert words in shard["message"]
            for condition in ("Degraded=True", "Ready=False"):
                task = wait_condition(kubectl, namespace, f"task/{name}", condition, reason=REFUSED)
                assert words in task["message"]
            # what Argo CD's health check (docs/argocd/health.lua) makes of it
            state, message = health(get(kubectl, namespace, f"tasks.{GROUP}", name))
            assert (state, message.split(":")[0]) == ("Degraded", REFUSED)

        # ...and the policy another's Role (so its StatefulSet waits) and capture Service
        shard = wait_condition(
            kubectl, namespace, f"shard/{shard_of(GATED)}", "Ready=False", reason=REFUSED
        )
        assert f"Role {shard_of(GATED)}-runtime" in shard["message"]
        assert DENIED in shard["message"]
        task = wait_condition(kubectl, namespace, f"task/{GATED}", "Degraded=True", reason=REFUSED)
        assert f"Service {GATED}-ingest" in task["message"]
        assert DENIED in task["message"]
        for name, words in ((BAD, SAYS[BAD][1]), (ODD, SAYS[ODD][1]), (GATED, DENIED)):
            wait_for(
                lambda name=name, words=words: [
                    e for e in refusal_events(kubectl, namespace, name) if words in e["message"]
                ],
                timeout=30,
                what=f"a Warning Event on {name} with the API server's words",
            )
            assert get(kubectl, namespace, "statefulset", shard_of(name)) is None
    finally:
        # removed now: the refused objects are tried again by themselves, after a back-off
        gate.open()

    # the specs fixed: applied at once
    apply(kubectl, namespace, [named(capture, name) for name in AFFINITIES])
    for name in (*AFFINITIES, GATED):
        wait_for(
            lambda name=name: get(kubectl, namespace, "statefulset", shard_of(name)),
            timeout=90,
            what=f"the StatefulSet of {name}",
        )
        wait_condition(kubectl, namespace, f"task/{name}", "Degraded=False", timeout=60)
        wait_condition(kubectl, namespace, f"shard/{shard_of(name)}", "Degraded=False")
        # one Event per distinct refusal, not one per retry (GATED's Task may have shown
        # its Service's refusal, then its shard's Role's)
        messages = [e["message"] for e in refusal_events(kubectl, namespace, name)]
        assert len(set(messages)) == len(messages) <= (2 if name == GATED else 1), messages
    assert get(kubectl, namespace, "service", f"{GATED}-ingest") is not None

    # the task next to them never knew
    wait_condition(kubectl, namespace, f"task/{HEALTHY}", "Ready=True", timeout=120)
    assert refusal_events(kubectl, namespace, HEALTHY) == []
    assert refusal_events(kubectl, namespace, shard_of(HEALTHY)) == []
