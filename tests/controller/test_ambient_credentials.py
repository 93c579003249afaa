"""Ambient credentials for real: a StorageMapping with no Secret and a web identity, as IRSA.

The environment's API server is an OpenID Connect issuer that MinIO's STS trusts (see
shardkeeper_dev/oidc.py): each shard pod gets a projected service-account token with the
STS's audience, and boto3 in the pod trades it for temporary credentials of a MinIO role.
The operator gets its own the same way, from a token of its own service account, so no
static key is anywhere in play. The example pipeline then runs with exact counts.

Three more mappings show that the role, not a key, decides: one whose role may only read,
one whose token has an audience the STS does not accept, and one with no web identity at
all (plain ambient, which finds nothing on a process node). Their shards report the error
in their status, and keep running to retry it, rather than crash. Given the role that may
write, the readonly mapping's shard gets a new pod and runs.

One namespace, bucket, operator and pipeline for the module, so the start-up is paid once.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from psycopg import sql
from tests.conftest import fresh_bucket, fresh_namespace
from tests.controller.conftest import operator_starter
from tests.controller.support import (
    EXAMPLE_TASKS,
    GROUP,
    Kubectl,
    apply,
    examples_in_a_schema,
    get,
    wait_ready,
)
from tests.controller.test_flow import ORDERS, TOTALS, capture_url, post, totals
from tests.support.wait import NOT_YET, wait_for

from shardkeeper.controller.specs.workload import WEB_IDENTITY_DIR, WEB_IDENTITY_VOLUME
from shardkeeper_dev import oidc
from shardkeeper_dev.environment import EnvInfo

ROLE = oidc.role_arn(oidc.AUDIENCE)
READONLY_ROLE = oidc.role_arn(oidc.READONLY_AUDIENCE)
STATIC_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# mapping -> (its web identity, what the status of its capture's shard must say)
REFUSED: dict[str, tuple[dict[str, str] | None, str]] = {
    "readonly": (
        {"roleArn": READONLY_ROLE, "audience": oidc.READONLY_AUDIENCE},
        "was denied (AccessDenied)",
    ),
    "wrong-audience": (
        {"roleArn": ROLE, "audience": "not-the-sts"},
        "the STS refused AssumeRoleWithWebIdentity (InvalidParameterValue: STS JWT Token has "
        "`azp` claim invalid",
    ),
    # plain ambient: a process-node pod has no AWS_* variables, and the machines the tests
    # run on have no EC2 instance metadata service (on one that has, this case would find
    # the machine's instance profile)
    "plain": (None, "has no credentials (Unable to locate credentials)"),
}


@dataclasses.dataclass(frozen=True)
class Pipeline:
    dev_env: EnvInfo
    namespace: str
    bucket: str
    schema: str


def web_identity(dev_env: EnvInfo, **fields: str) -> dict[str, str]:
    endpoint = dev_env.s3_endpoint
    return {"roleArn": ROLE, "audience": oidc.AUDIENCE, "stsEndpoint": endpoint, **fields}


def ambient(docs: list[dict[str, Any]], dev_env: EnvInfo) -> list[dict[str, Any]]:
    """The examples with no S3 Secret: the mapping's store has no credentialsSecretRef and
    the mapping a web identity (and an annotation, as for an identity webhook)."""
    kept = []
    for doc in docs:
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "s3-credentials":
            continue
        if doc["kind"] == "StorageMapping":
            del doc["spec"]["stores"][0]["credentialsSecretRef"]
            doc["spec"]["webIdentity"] = web_identity(dev_env)
            doc["spec"]["serviceAccountAnnotations"] = {"eks.amazonaws.com/role-arn": ROLE}
        kept.append(doc)
    return kept


def refused_docs(docs: list[dict[str, Any]], dev_env: EnvInfo) -> list[dict[str, Any]]:
    """For each of REFUSED: a mapping on the same bucket, and a capture (with a collection of
    its own) whose recovery log is there."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    made = []
    for name, (identity, _) in REFUSED.items():
        mapping = copy.deepcopy(by_name[("StorageMapping", "local")])
        mapping["metadata"]["name"] = name
        if identity is None:
            del mapping["spec"]["webIdentity"]
        else:
            mapping["spec"]["webIdentity"] = web_identity(dev_env, **identity)
        del mapping["spec"]["serviceAccountAnnotations"]
        collection = copy.deepcopy(by_name[("Collection", "orders")])
        collection["metadata"]["name"] = f"orders-{name}"
        task = copy.deepcopy(by_name[("Task", "ingest-orders")])
        task["metadata"]["name"] = f"ingest-{name}"
        task["spec"]["storageMapping"] = name
        task["spec"]["outputs"] = [f"orders-{name}"]
        made += [mapping, collection, task]
    return made


def operator_identity(
    kubectl: Kubectl, namespace: str, dev_env: EnvInfo, directory: Path
) -> dict[str, str]:
    """The operator's credential chain: a token of its own service account, for the same
    role (docs/credentials.md: the operator checks, prunes and deletes with its own)."""
    kubectl("create", "serviceaccount", "shardkeeper-operator", "-n", namespace)
    token = kubectl(
        "create", "token", "shardkeeper-operator", "-n", namespace,
        f"--audience={oidc.AUDIENCE}", "--duration=2h",
    ).stdout.strip()  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "operator-web-identity-token"
    path.write_text(token)
    return {
        "AWS_ROLE_ARN": ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(path),
        "AWS_ROLE_SESSION_NAME": "operator",
        "AWS_ENDPOINT_URL_STS": dev_env.s3_endpoint,
        # empty is unset to boto3: no static key the test's environment may hold is used
        **dict.fromkeys(STATIC_KEYS, ""),
    }


@pytest.fixture(scope="module")
def pipeline(
    crds: list[str], dev_env: EnvInfo, kube_api: Any, s3: Any, kubectl: Kubectl
) -> Iterator[Pipeline]:
    with (
        fresh_namespace(kube_api, "ambient") as namespace,
        fresh_bucket(s3, "ambient") as bucket,
        operator_starter(dev_env, namespace, kubectl) as start,
    ):
        log_dir = dev_env.state_dir / "logs" / "operator-tests" / namespace
        start(env=operator_identity(kubectl, namespace, dev_env, log_dir)).wait_leading()
        docs, schema = examples_in_a_schema(dev_env, bucket)
        docs = ambient(docs, dev_env)
        apply(kubectl, namespace, docs + refused_docs(docs, dev_env))
        try:
            wait_ready(kubectl, namespace)
            yield Pipeline(dev_env, namespace, bucket, schema)
        finally:
            with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                conn.execute(drop.format(sql.Identifier(schema)))


def shard_pods(kubectl: Kubectl, namespace: str, task: str) -> list[dict[str, Any]]:
    out = kubectl("get", "pods", "-n", namespace, "-l", f"{GROUP}/task={task}", "-o", "json")
    pods: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return pods


def test_documents_flow_with_credentials_from_the_sts(pipeline: Pipeline, kubectl: Kubectl) -> None:
    namespace, dev_env = pipeline.namespace, pipeline.dev_env
    mapping = wait_for(
        lambda: get(kubectl, namespace, "storagemapping", "local"), timeout=10, what="mapping"
    )
    assert mapping["status"]["bucketReachable"] is True, "the operator's own role reaches it"
    assert mapping["status"]["conditionalWrites"] is True

    url = wait_for(lambda: capture_url(kubectl, namespace), timeout=60, what="the capture pod")
    status, body = post(url, ORDERS)
    assert status == 200, body
    found = wait_for(
        lambda: totals(dev_env, pipeline.schema) == TOTALS and totals(dev_env, pipeline.schema),
        timeout=120,
        what="the totals in PostgreSQL",
        interval=0.5,
        retry=(*NOT_YET, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName),
    )
    assert found == TOTALS

    # no S3 key anywhere: not in a Secret, not in a pod's environment
    secrets = json.loads(kubectl("get", "secrets", "-n", namespace, "-o", "json").stdout)
    assert [s["metadata"]["name"] for s in secrets["items"]] == ["postgres-password"]
    pods = [p for task in EXAMPLE_TASKS for p in shard_pods(kubectl, namespace, task)]
    assert len(pods) == 4  # the derivation has a hot standby
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert not set(STATIC_KEYS) & set(env), pod["metadata"]["name"]
        assert env["AWS_ROLE_ARN"] == ROLE
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{WEB_IDENTITY_DIR}/token"
        assert env["AWS_ENDPOINT_URL_STS"] == dev_env.s3_endpoint
        (token,) = [v for v in pod["spec"]["volumes"] if v["name"] == WEB_IDENTITY_VOLUME]
        (source,) = token["projected"]["sources"]
        assert source["serviceAccountToken"]["audience"] == oidc.AUDIENCE
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    # what each pod does, by hand: a token of the shard's service account with the STS's
    # audience buys temporary credentials of the role, which read the shards' objects
    account = f"{EXAMPLE_TASKS[0]}-00000000-00000000-runtime"
    annotations = get(kubectl, namespace, "serviceaccount", account)["metadata"]["annotations"]
    assert annotations == {"eks.amazonaws.com/role-arn": ROLE}
    token = kubectl(
        "create", "token", account, "-n", namespace, f"--audience={oidc.AUDIENCE}"
    ).stdout.strip()
    sts = boto3.client("sts", endpoint_url=dev_env.s3_endpoint, region_name=dev_env.s3_region)
    issued = sts.assume_role_with_web_identity(
        RoleArn=ROLE, RoleSessionName="test", WebIdentityToken=token
    )["Credentials"]
    assert issued["AccessKeyId"] != dev_env.s3_access_key
    assert issued["SessionToken"]
    temporary = boto3.client(
        "s3",
        endpoint_url=dev_env.s3_endpoint,
        region_name=dev_env.s3_region,
        aws_access_key_id=issued["AccessKeyId"],
        aws_secret_access_key=issued["SecretAccessKey"],
        aws_session_token=issued["SessionToken"],
    )
    prefix = f"examples/recovery/{namespace}/"
    listed = temporary.list_objects_v2(Bucket=pipeline.bucket, Prefix=prefix)
    assert listed["KeyCount"] > 0


@pytest.mark.parametrize("mapping", sorted(REFUSED))
def test_a_role_that_cannot_write_or_no_credentials_show_in_the_shard_status(
    pipeline: Pipeline, kubectl: Kubectl, mapping: str
) -> None:
    namespace = pipeline.namespace
    expected = REFUSED[mapping][1]
    stored = get(kubectl, namespace, "storagemapping", mapping)
    # the operator's own role may write there: only the shard pods' credentials differ
    assert stored["status"]["bucketReachable"] is True
    shard = f"ingest-{mapping}-00000000-00000000"

    def refused() -> dict[str, Any] | None:
        found = get(kubectl, namespace, f"shards.{GROUP}", shard)
        conditions = (found or {}).get("status", {}).get("conditions", [])
        ready = next((c for c in conditions if c["type"] == "Ready"), None)
        return ready if ready and expected in ready.get("message", "") else None

    ready = wait_for(refused, timeout=90, what=f"{shard} to report {expected!r}")
    assert (ready["status"], ready["reason"]) == ("False", "ReplicaFailed")
    # not a crash loop: the runtime stays up, says why, and tries again
    (pod,) = shard_pods(kubectl, namespace, f"ingest-{mapping}")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_fixing_the_web_identity_replaces_the_pod_and_the_shard_runs(
    pipeline: Pipeline, kubectl: Kubectl
) -> None:
    """After the readonly case above: the mapping given the role that may write, the
    operator rolls the shard's pod to the new token audience, and the shard runs."""
    namespace = pipeline.namespace
    (before,) = shard_pods(kubectl, namespace, "ingest-readonly")
    patch = {"spec": {"webIdentity": web_identity(pipeline.dev_env)}}
    kubectl(
        "patch", "-n", namespace, f"storagemappings.{GROUP}", "readonly", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip
    kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "task/ingest-readonly"
    )
    (after,) = shard_pods(kubectl, namespace, "ingest-readonly")
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    (token,) = [v for v in after["spec"]["volumes"] if v["name"] == WEB_IDENTITY_VOLUME]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == oidc.AUDIENCE
    env = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env["AWS_ROLE_ARN"] == ROLE
