"""The local environment, through the same commands a newcomer uses."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from shardkeeper_dev import environment, processes, tools


def _dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardkeeper", "dev", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_every_component_is_healthy(dev_env: environment.EnvInfo) -> None:
    components = environment.Environment(dev_env.state_dir).status()
    assert {c.name for c in components} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "minio",
        "postgres",
        "process-node",
    }
    assert all(c.healthy for c in components), components


def test_kubectl_sees_a_ready_node(dev_env: environment.EnvInfo, kubectl: Any) -> None:
    out = kubectl("get", "nodes", "-o", "json").stdout
    nodes = {n["metadata"]["name"]: n for n in json.loads(out)["items"]}
    conditions = nodes[dev_env.node_name]["status"]["conditions"]
    assert {"type": "Ready", "status": "True"}.items() <= next(
        c for c in conditions if c["type"] == "Ready"
    ).items()


def test_apiserver_requires_authentication(dev_env: environment.EnvInfo) -> None:
    ctx = ssl.create_default_context(cafile=str(dev_env.state_dir / "pki" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{dev_env.server}/api/v1/namespaces", context=ctx, timeout=10)
    assert err.value.code in (401, 403)


def test_apiserver_accepts_the_admin_token(dev_env: environment.EnvInfo) -> None:
    token = json.loads((dev_env.state_dir / "pki" / "credentials.json").read_text())["admin_token"]
    ctx = ssl.create_default_context(cafile=str(dev_env.state_dir / "pki" / "ca.crt"))
    req = urllib.request.Request(
        f"{dev_env.server}/api/v1/namespaces", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        names = {ns["metadata"]["name"] for ns in json.load(resp)["items"]}
    assert {"default", "kube-system"} <= names


def test_rbac_denies_a_service_account_without_rights(kubectl: Any, namespace: str) -> None:
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    out = kubectl(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:nobody",
        check=False,
    )
    assert out.stdout.strip() == "no"


def test_service_account_tokens_are_issued(kubectl: Any, namespace: str) -> None:
    kubectl("create", "serviceaccount", "runner", "-n", namespace)
    token = kubectl("create", "token", "runner", "-n", namespace).stdout.strip()
    assert token.count(".") == 2  # a signed JWT


def test_postgres_accepts_the_advertised_credentials(dev_env: environment.EnvInfo) -> None:
    out = subprocess.run(
        [
            str(environment.postgres_bin_dir() / "psql"),
            dev_env.postgres_dsn,
            "-tAc",
            "SELECT 41 + 1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "42", out.stderr
    wrong = dev_env.postgres_dsn.replace(dev_env.postgres_password, "wrong")
    refused = subprocess.run(
        [str(environment.postgres_bin_dir() / "psql"), wrong, "-tAc", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr


def test_minio_refuses_a_second_conditional_create(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="journal/0000", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="journal/0000", Body=b"second", IfNoneMatch="*")
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="journal/0000")["Body"].read() == b"first"


def test_a_second_up_says_so_and_starts_nothing(dev_env: environment.EnvInfo) -> None:
    env = environment.Environment(dev_env.state_dir)
    before = env.records()
    with pytest.raises(environment.AlreadyRunning, match="already running"):
        env.up()
    assert env.records() == before


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        out = _dev("up", "--state-dir", str(tmp_path / "env"), "--apiserver-port", str(port))
    assert out.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use (--apiserver-port)" in out.stderr
    assert not (tmp_path / "env" / "state.json").exists()


def test_up_names_a_missing_tool(tmp_path: Path) -> None:
    out = _dev("up", "--state-dir", str(tmp_path / "env"), env={"SHARDKEEPER_CACHE": str(tmp_path)})
    assert out.returncode == 1
    assert "etcd" in out.stderr
    assert "run `make tools`" in out.stderr


def test_tools_are_reused_from_the_cache() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shardkeeper", "dev", "tools"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "minio", "helm"):
        assert binary in out.stdout
    assert "(cached)" in out.stdout
    assert "building" not in out.stdout
    assert tools.KUBERNETES_VERSION in out.stdout


def test_cli_lifecycle_leaves_nothing_behind(tmp_path: Path) -> None:
    """up from nothing, status, env, kubectl, a second up, down: every PID is gone."""
    state = tmp_path / "env"
    up = _dev("up", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    env = environment.Environment(state)
    records = env.records()
    try:
        assert [r.name for r in records] == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "minio",
            "postgres",
            "process-node",
        ]
        assert all(processes.is_alive(r) for r in records)

        status = _dev("status", "--state-dir", str(state))
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 6

        exports = _dev("env", "--state-dir", str(state)).stdout
        assert f"export KUBECONFIG={state.resolve() / 'kubeconfig'}" in exports
        # as the README has it, on a machine whose PATH has no kubectl of its own
        nodes = subprocess.run(
            ["/bin/sh", "-c", f"{exports}kubectl get nodes -o name && command -v helm"],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert nodes.returncode == 0, nodes.stderr
        assert nodes.stdout.splitlines() == [
            f"node/{environment.NODE_NAME}",
            str(state.resolve() / "bin" / "helm"),
        ]

        again = _dev("up", "--state-dir", str(state))
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert env.records() == records
    finally:
        down = _dev("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert not any(processes.is_alive(r) for r in records)
    after = _dev("status", "--state-dir", str(state))
    assert after.returncode == 3
    assert "no environment is running" in after.stdout
    assert "no environment is running" in _dev("env", "--state-dir", str(state)).stderr

    # up again after down: the same ports, so what was applied with the old endpoints (a
    # StorageMapping's MinIO URL, a PostgreSQL DSN) still reaches them
    recorded = environment.Environment(state).recorded_ports()
    assert recorded is not None
    before = info_of(up.stdout)
    assert len(before) == 3, up.stdout
    again = _dev("up", "--state-dir", str(state))
    try:
        assert again.returncode == 0, again.stderr
        assert info_of(again.stdout) == before
        assert environment.Environment(state).recorded_ports() == recorded
        assert environment.Environment(state).info().s3_endpoint == (
            f"http://127.0.0.1:{recorded.s3}"
        )
    finally:
        assert _dev("down", "--state-dir", str(state)).returncode == 0


def info_of(up_output: str) -> list[str]:
    """The endpoint lines ``up`` prints (API server, MinIO, PostgreSQL)."""
    wanted = ("API server", "MinIO", "PostgreSQL")
    return [line.strip() for line in up_output.splitlines() if line.strip().startswith(wanted)]


def test_a_stopped_component_starts_again_with_its_port_and_data(
    dev_environment: environment.Environment, s3: Any, bucket: str
) -> None:
    """What the fault tests rely on: ``stop`` ends MinIO (its clients' connections with
    it), ``start`` brings it back on the same endpoint with the same objects, recorded so
    that ``down`` stops the new process."""
    s3.put_object(Bucket=bucket, Key="kept", Body=b"still here")
    (before,) = [r for r in dev_environment.records() if r.name == "minio"]
    dev_environment.stop("minio")
    try:
        assert not processes.is_alive(before)
        with pytest.raises(EndpointConnectionError):
            s3.head_bucket(Bucket=bucket)
        with pytest.raises(environment.EnvironmentError_, match="is running already"):
            dev_environment.start("postgres")
    finally:
        dev_environment.start("minio")
    (after,) = [r for r in dev_environment.records() if r.name == "minio"]
    assert after.pid != before.pid
    assert processes.is_alive(after)
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"still here"


def test_stopping_postgres_ends_its_sessions_and_shuts_it_down_cleanly(
    dev_environment: environment.Environment, dev_env: environment.EnvInfo
) -> None:
    """A session open while PostgreSQL stops does not hold the stop up (its SIGTERM would
    wait for every client, then be cut short by SIGKILL): the stop is a fast shutdown."""
    log = dev_environment.log_dir / "postgres.log"
    seen = log.stat().st_size
    session = psycopg.connect(dev_env.postgres_dsn, autocommit=True)
    started = time.monotonic()
    try:
        dev_environment.stop("postgres")
        took = time.monotonic() - started
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    finally:
        dev_environment.start("postgres")
        session.close()
    with log.open("rb") as f:
        f.seek(seen)
        written = f.read().decode(errors="replace")
    assert "database system is shut down" in written
    assert "not properly shut down" not in written
    assert took < 10, f"{took:.1f}s to stop"
    with psycopg.connect(dev_env.postgres_dsn) as conn:
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
