"""The example pipeline on the real node: the chart's operator and the shard pods run as
containers of the image under kubelet, containerd and runc, with the security context the
operator gives them. One pipeline, installed with `helm install`, serves every test here,
in order: it runs, orders flow to PostgreSQL, a shard's store on its volume is the image
user's, the read-only root refuses a write, and killing the derivation's primary's
container fails it over with nothing lost or written twice."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from tests.conftest import fresh_bucket, fresh_namespace
from tests.controller.support import (
    EXAMPLE_TASKS,
    GROUP,
    Kubectl,
    apply,
    examples_in_a_schema,
    get,
    wait_ready,
)
from tests.controller.test_chart import helm, install
from tests.controller.test_faults import Pipeline, check_exact, feed, flows_again, primary_pod
from tests.controller.test_flow import ORDERS, TOTALS, capture_url, post, totals
from tests.controller.test_splits import TASK
from tests.support.wait import NOT_YET, wait_for

from shardkeeper.controller.specs import names
from shardkeeper.controller.specs.workload import TMP_DIR
from shardkeeper_dev import image
from shardkeeper_dev.environment import EnvInfo, Environment
from shardkeeper_dev.realnode import config, host

pytestmark = pytest.mark.realnode

IMAGE = f"docker.io/library/shardkeeper:{image.project_version()}"


@dataclasses.dataclass
class Posted:
    """Orders posted once, acknowledged: a feeder whose posting is over."""

    acked: list[str]
    unsure: list[str] = dataclasses.field(default_factory=list)

    def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def pipeline(
    crds: list[str], dev_env: EnvInfo, kube_api: Any, s3: Any, kubectl: Kubectl
) -> Iterator[Pipeline]:
    """The chart installed into a namespace of its own, watching it; the examples applied
    there, every Task Ready."""
    with (
        fresh_namespace(kube_api, "realnode") as namespace,
        fresh_bucket(s3, "realnode") as bucket,
    ):
        release = f"sk{secrets.token_hex(3)}"
        install(dev_env, release, namespace)
        docs, schema = examples_in_a_schema(dev_env, bucket)
        apply(kubectl, namespace, docs)
        wait_ready(kubectl, namespace, timeout=240)
        url = wait_for(lambda: capture_url(kubectl, namespace), timeout=60, what="the capture")
        yield Pipeline(dev_env, namespace, bucket, schema, url)
        kubectl("delete", "tasks.shardkeeper.io", "--all", "-n", namespace, "--timeout=120s")
        helm(dev_env, "uninstall", release, "--namespace", namespace, "--wait")
        with psycopg.connect(dev_env.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get(kubectl, namespace, "pods")
    return found


def container_id(pod: dict[str, Any], container: str) -> str:
    (status,) = [s for s in pod["status"]["containerStatuses"] if s["name"] == container]
    runtime, cid = str(status["containerID"]).split("://")
    assert runtime == "containerd"
    return cid


def task_pid(dev_environment: Environment, cid: str) -> int:
    """The PID, on this machine, of a running container's process (``ctr task ls``)."""
    out = subprocess.run(
        host.ctr(dev_environment.real_node, "tasks", "ls"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines()[1:]:
        task, pid, status = line.split()
        if task == cid:
            assert status == "RUNNING", line
            return int(pid)
    raise AssertionError(f"no task {cid} in:\n{out}")


def exec_in(kubectl: Kubectl, namespace: str, pod: str, code: str) -> Any:
    """What ``code`` (Python, printing JSON) printed, run in the pod's shard container."""
    argv = ["exec", "-n", namespace, pod, "-c", names.CONTAINER, "--", "python3", "-c", code]
    return json.loads(kubectl(*argv).stdout)


def test_the_chart_runs_the_pipeline_in_containers_of_the_image(
    pipeline: Pipeline, kubectl: Kubectl, dev_environment: Environment
) -> None:
    def all_ready() -> list[dict[str, Any]] | None:
        found = pods(kubectl, pipeline.namespace)
        statuses = [s for p in found for s in p["status"].get("containerStatuses", [])]
        return found if len(statuses) == len(found) and all(s["ready"] for s in statuses) else None

    # the derivation's hot standby is not needed for its Task to be Ready
    running = wait_for(all_ready, timeout=120, what="every pod ready")
    operators = [p for p in running if "-operator-" in p["metadata"]["name"]]
    shards = [p for p in running if p not in operators]
    assert len(operators) == 2
    assert {p["metadata"]["name"].rsplit("-", 1)[0] for p in shards} == {
        f"{task}-00000000-00000000" for task in EXAMPLE_TASKS
    }
    for pod in running:
        assert pod["spec"]["nodeName"] == config.NODE_NAME
        assert pod["status"]["podIP"] in {str(ip) for ip in config.POD_SUBNET.hosts()}
        for status in pod["status"]["containerStatuses"]:
            assert status["image"] == IMAGE, status
            assert status["ready"], status
    # every pod in its own network namespace, each with an address of its own
    assert len({p["status"]["podIP"] for p in running}) == len(running)
    # containerd runs them: a task for each container
    for pod in running:
        for status in pod["status"]["containerStatuses"]:
            assert task_pid(dev_environment, container_id(pod, status["name"])) > 1


def test_orders_flow_from_the_capture_through_the_derivation_to_postgres(
    pipeline: Pipeline,
) -> None:
    status, body = post(pipeline.url, ORDERS)
    assert status == 200, body
    pipeline.feeders.append(Posted([o["id"] for o in ORDERS]))
    found = wait_for(
        lambda: (
            totals(pipeline.dev_env, pipeline.schema) == TOTALS
            and totals(pipeline.dev_env, pipeline.schema)
        ),
        timeout=120,
        what="the totals in PostgreSQL",
        interval=0.5,
        retry=(*NOT_YET, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName),
    )
    assert found == TOTALS


def volume_dir(kubectl: Kubectl, namespace: str, pod: dict[str, Any]) -> Path:
    """Where a pod's data volume (a local PersistentVolume) is on this machine."""
    (claim,) = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if v["name"] == names.DATA_VOLUME
    ]
    bound = get(kubectl, namespace, "persistentvolumeclaim", claim)
    volume = get(kubectl, "", "persistentvolume", bound["spec"]["volumeName"])
    return Path(volume["spec"]["local"]["path"])


def test_a_shards_store_on_its_volume_is_written_by_the_image_user(
    pipeline: Pipeline, kubectl: Kubectl
) -> None:
    pod = get(kubectl, pipeline.namespace, "pod", primary_pod(kubectl, pipeline.namespace, TASK))
    root = volume_dir(kubectl, pipeline.namespace, pod)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, f"nothing in {root}"
    # what the shard wrote is the image user's
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in root.rglob("*")}
    assert owners == {(image.UID, image.UID)}, owners
    # the provisioner made the directory as root; fsGroup made it writable to the pod:
    # kubelet gave it the group, setgid and group-writable
    assert (root.stat().st_uid, root.stat().st_gid) == (0, image.UID)
    mode = root.stat().st_mode
    assert mode & 0o2070 == 0o2070, oct(mode)
    seen = exec_in(
        kubectl,
        pipeline.namespace,
        pod["metadata"]["name"],
        "import json, os; print(json.dumps([os.getuid(), os.getgid(), os.getgroups(), "
        "[l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]]))",
    )
    assert seen == [image.UID, image.UID, [image.UID], "0000000000000000"]


def test_the_read_only_root_refuses_a_write_outside_the_volumes(
    pipeline: Pipeline, kubectl: Kubectl
) -> None:
    pod = primary_pod(kubectl, pipeline.namespace, TASK)
    code = (
        "import json\n"
        "def write(path):\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        return 'written'\n"
        "    except OSError as err:\n"
        "        return err.strerror\n"
        f"print(json.dumps([write(p) for p in ('/opt/shardkeeper/x', '/x', "
        f"'/tmp/probe', '{names.DATA_DIR}/probe', '{TMP_DIR}/probe')]))"
    )
    found = exec_in(kubectl, pipeline.namespace, pod, code)
    # the image's files, its root and /tmp are not writable; the data and temporary
    # volumes the operator mounts are
    readonly = "Read-only file system"
    assert found == [readonly, readonly, readonly, "written", "written"]
    kubectl("exec", "-n", pipeline.namespace, pod, "-c", names.CONTAINER, "--",
            "rm", f"{names.DATA_DIR}/probe", f"{TMP_DIR}/probe")  # fmt: skip


def test_the_primary_container_killed_fails_over_with_exact_counts(
    pipeline: Pipeline, kubectl: Kubectl, dev_environment: Environment
) -> None:
    orders = feed(pipeline, "k")
    primary = primary_pod(kubectl, pipeline.namespace, TASK)
    pod = get(kubectl, pipeline.namespace, "pod", primary)
    (status,) = pod["status"]["containerStatuses"]
    pid = task_pid(dev_environment, container_id(pod, names.CONTAINER))
    os.kill(pid, signal.SIGKILL)

    primaries: set[str | None] = set()

    def restarted() -> dict[str, Any] | None:
        shard = get(kubectl, pipeline.namespace, f"shards.{GROUP}", f"{TASK}-00000000-00000000")
        primaries.add((shard.get("status") or {}).get("primary"))
        now = get(kubectl, pipeline.namespace, "pod", primary)
        (current,) = now["status"]["containerStatuses"]
        if current["restartCount"] == status["restartCount"] + 1 and current["ready"]:
            return dict(current)
        return None

    current = wait_for(restarted, timeout=180, what="kubelet to restart the killed container")
    # kubelet saw the kill, and containerd runs a new process
    assert current["lastState"]["terminated"]["exitCode"] == 128 + signal.SIGKILL
    assert task_pid(dev_environment, container_id({"status": {"containerStatuses": [current]}},
                                                  names.CONTAINER)) != pid  # fmt: skip
    print(f"primary {primary} killed; primaries seen until it restarted: {primaries}")
    flows_again(orders, "the primary's container was killed")
    count = check_exact(pipeline, kubectl)
    assert count >= len(ORDERS) + 2 * 200
    print(f"primary at the end: {primary_pod(kubectl, pipeline.namespace, TASK)}")
