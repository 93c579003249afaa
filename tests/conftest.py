"""Session fixtures: one real local environment (etcd, kube-apiserver, controller-manager,
MinIO, process node) per test session, a fresh namespace or bucket per test.

Set SHARDKEEPER_TEST_ENV_DIR to the state directory of an environment started with
``shardkeeper dev up --state-dir DIR`` to reuse it instead of starting one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shardkeeper_dev import environment, tools

Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def dev_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[environment.Environment]:
    """The environment itself, for the tests that stop and start its components."""
    reuse = os.environ.get("SHARDKEEPER_TEST_ENV_DIR")
    if reuse:
        yield environment.Environment(Path(reuse))
        return
    env = environment.Environment(tmp_path_factory.mktemp("env"))
    # die_with_parent: an interrupted or killed test run leaves no process behind
    env.up(die_with_parent=True)
    try:
        yield env
    finally:
        env.down()


@pytest.fixture(scope="session")
def dev_env(dev_environment: environment.Environment) -> environment.EnvInfo:
    return dev_environment.info()


@pytest.fixture(scope="session")
def kube_api(dev_env: environment.EnvInfo) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(dev_env.kubeconfig))


@pytest.fixture(scope="session")
def kubectl(dev_env: environment.EnvInfo) -> Kubectl:
    binary = str(tools.binary_path("kubectl"))
    env = {**os.environ, "KUBECONFIG": str(dev_env.kubeconfig)}

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [binary, *args], input=input, env=env, capture_output=True, text=True, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    return run


CRD_DIR = Path(__file__).resolve().parents[1] / "crds"


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> list[str]:
    """Apply crds/ with server-side apply, the way a user applies them; wait until the API
    server serves every kind."""
    applied = kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR), "-o", "name"
    )
    names = applied.stdout.split()
    assert len(names) == len(list(CRD_DIR.glob("*.yaml"))), applied.stdout
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")


@contextlib.contextmanager
def fresh_namespace(kube_api: Any, label: str) -> Iterator[str]:
    """A new namespace named after ``label`` (a test's or a module's), deleted afterwards."""
    from kubernetes import client

    name = f"t-{_slug(label, 40)}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_api: Any) -> Iterator[str]:
    with fresh_namespace(kube_api, request.node.name) as name:
        yield name


@pytest.fixture(scope="session")
def s3(dev_env: environment.EnvInfo) -> Any:
    return environment.s3_client(dev_env)


@contextlib.contextmanager
def fresh_bucket(s3: Any, label: str) -> Iterator[str]:
    """A new bucket named after ``label``, emptied and deleted afterwards."""
    name = f"t-{_slug(label, 40)}-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=name)
    yield name
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def bucket(request: pytest.FixtureRequest, s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, request.node.name) as name:
        yield name
