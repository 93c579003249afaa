"""The runtime's service account may do what docs/shard-pod.md lists, for its own shard
only: it cannot read Secrets other than its credentials, nor touch other shards."""

from __future__ import annotations

import pytest
from tests.controller.support import GROUP, Kubectl, OperatorProcess, apply, examples, get
from tests.support.wait import wait_for

from shardkeeper_dev.environment import EnvInfo

DERIVATION = "customer-totals-00000000-00000000"
MATERIALIZATION = "totals-to-postgres-00000000-00000000"


def can(kubectl: Kubectl, namespace: str, shard: str, *request: str) -> bool:
    proc = kubectl(
        "auth",
        "can-i",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:{shard}-runtime",
        *request,
        check=False,
    )
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


ALLOWED = [
    ("get", f"shards.{GROUP}/{DERIVATION}"),
    ("watch", f"shards.{GROUP}/{DERIVATION}"),
    ("patch", f"shards.{GROUP}/{DERIVATION}", "--subresource=status"),
    ("get", f"tasks.{GROUP}"),
    ("list", f"collections.{GROUP}"),
    ("watch", f"storagemappings.{GROUP}"),
    ("get", "secrets/s3-credentials"),
    ("get", f"leases.coordination.k8s.io/{DERIVATION}"),
    ("update", f"leases.coordination.k8s.io/{DERIVATION}"),
    ("create", "leases.coordination.k8s.io"),
    ("create", "events"),
    ("patch", f"pods/{DERIVATION}-0"),
]
DENIED = [
    # other shards' objects and Leases
    ("get", f"shards.{GROUP}/{MATERIALIZATION}"),
    ("patch", f"shards.{GROUP}/{MATERIALIZATION}", "--subresource=status"),
    ("update", f"leases.coordination.k8s.io/{MATERIALIZATION}"),
    ("list", f"shards.{GROUP}"),
    # its own Shard's spec is the operator's, and so are Tasks
    ("patch", f"shards.{GROUP}/{DERIVATION}"),
    ("delete", f"shards.{GROUP}/{DERIVATION}"),
    ("create", f"shards.{GROUP}"),
    ("patch", f"tasks.{GROUP}/customer-totals"),
    # Secrets other than its credentials, including the materialization's password
    ("get", "secrets/postgres-password"),
    ("get", "secrets/unrelated"),
    ("list", "secrets"),
    ("watch", "secrets"),
    # nothing else of the namespace
    ("get", "pods"),
    ("create", "pods"),
    ("patch", f"pods/{MATERIALIZATION}-0"),
    ("delete", "statefulsets"),
]


@pytest.fixture
def pipeline(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dev_env: EnvInfo, bucket: str
) -> None:
    apply(kubectl, namespace, examples(dev_env, bucket))
    kubectl("create", "secret", "generic", "unrelated", "-n", namespace, "--from-literal=k=v")
    for shard in (DERIVATION, MATERIALIZATION):
        wait_for(
            lambda shard=shard: get(kubectl, namespace, "rolebinding", f"{shard}-runtime"),
            timeout=60,
            what=f"the RoleBinding of {shard}",
        )


@pytest.mark.usefixtures("pipeline")
def test_the_runtime_may_do_what_the_contract_lists_for_its_own_shard_and_nothing_more(
    kubectl: Kubectl, namespace: str
) -> None:
    refused = [r for r in ALLOWED if not can(kubectl, namespace, DERIVATION, *r)]
    assert refused == []
    granted = [r for r in DENIED if can(kubectl, namespace, DERIVATION, *r)]
    assert granted == [], "other Secrets and other shards are out of reach"
    # a task that names a Secret gets exactly that one too
    assert can(kubectl, namespace, MATERIALIZATION, "get", "secrets/postgres-password")
    assert can(kubectl, namespace, MATERIALIZATION, "get", "secrets/s3-credentials")
    assert not can(kubectl, namespace, MATERIALIZATION, "get", "secrets/unrelated")
