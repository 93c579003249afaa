"""The runtime's light Kubernetes client: kubeconfig and in-cluster settings, TLS material,
token re-reads, the one request/ApiError path of kube_json, and no official client."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import urllib3

from shardkeeper.kube.client import ApiError, call, request
from shardkeeper.kube.config import KubeconfigError
from shardkeeper.kube.transport import (
    Access,
    Credential,
    LightClient,
    TokenFile,
    in_cluster_access,
    kubeconfig_access,
    ssl_context,
)
from shardkeeper_dev import pki


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(cluster: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "other", "cluster": {"server": "https://wrong"}},
            {"name": "c", "cluster": cluster},
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "other", "context": {"cluster": "other", "user": "u"}},
            {"name": "ctx", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "ctx",
    }


def test_inline_certificates_are_decoded_from_base64() -> None:
    config = kubeconfig(
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(b"CA")},
        {"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")},
    )
    access = kubeconfig_access(config, Path("/etc/kube"))
    assert access == Access(
        server="https://127.0.0.1:6443",
        ca=Credential(pem=b"CA"),
        client_cert=Credential(pem=b"CERT"),
        client_key=Credential(pem=b"KEY"),
    )


def test_file_paths_are_relative_to_the_kubeconfig_and_a_token_is_taken() -> None:
    config = kubeconfig(
        {"server": "https://api:443", "certificate-authority": "pki/ca.crt"},
        {"client-certificate": "/abs/client.crt", "client-key": "client.key", "token": "t0k"},
    )
    access = kubeconfig_access(config, Path("/etc/kube"))
    assert access.ca == Credential(path=Path("/etc/kube/pki/ca.crt"))
    assert access.client_cert == Credential(path=Path("/abs/client.crt"))
    assert access.client_key == Credential(path=Path("/etc/kube/client.key"))
    assert access.token == "t0k"


def test_a_token_file_and_tls_options_are_taken() -> None:
    config = kubeconfig(
        {"server": "https://api", "insecure-skip-tls-verify": True, "tls-server-name": "k"},
        {"tokenFile": "token"},
    )
    access = kubeconfig_access(config, Path("/run"))
    assert (access.token_file, access.insecure, access.tls_server_name) == (
        Path("/run/token"),
        True,
        "k",
    )


def test_a_context_named_by_the_caller_replaces_the_current_one() -> None:
    config = kubeconfig({"server": "https://api"}, {"token": "t"})
    assert kubeconfig_access(config, Path("/"), "other").server == "https://wrong"
    assert kubeconfig_access(config, Path("/"), None).server == "https://api"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c.pop("current-context"), "no current-context"),
        (lambda c: c.update({"current-context": "nope"}), "no context named 'nope'"),
        (lambda c: c["users"][0]["user"].update(exec={"command": "x"}), "authenticates with exec"),
        (lambda c: c["clusters"][1]["cluster"].pop("server"), "has no server"),
    ],
)
def test_a_kubeconfig_the_runtime_cannot_use_is_refused_with_a_reason(
    change: Any, words: str
) -> None:
    config = kubeconfig({"server": "https://api"}, {"token": "t"})
    change(config)
    with pytest.raises(KubeconfigError, match=words):
        kubeconfig_access(config, Path("/"))


def test_in_cluster_settings_come_from_the_service_account() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    access = in_cluster_access(env, Path("/sa"))
    assert access == Access(
        server="https://10.0.0.1:443",
        ca=Credential(path=Path("/sa/ca.crt")),
        token_file=Path("/sa/token"),
    )
    v6 = in_cluster_access({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, Path("/sa"))
    assert v6.server == "https://[fd00::1]:443"
    with pytest.raises(KubeconfigError, match="not in a cluster"):
        in_cluster_access({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_the_token_file_is_read_again_once_a_minute_old(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    now = [0.0]
    token = TokenFile(path, every=60, monotonic=lambda: now[0])
    assert token.get() == "first"
    path.write_text("second")
    now[0] = 59.0
    assert token.get() == "first"
    now[0] = 60.0
    assert token.get() == "second"


def test_client_certificates_load_inline_or_from_files(tmp_path: Path) -> None:
    ca = pki.new_ca()
    client = pki.issue(ca, "someone", client=True)
    inline = Access(
        server="https://x",
        ca=Credential(pem=ca.cert_pem),
        client_cert=Credential(pem=client.cert_pem),
        client_key=Credential(pem=client.key_pem),
    )
    context = ssl_context(inline)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "shardkeeper-dev-ca"),),)
    ]
    cert, key = pki.write(client, tmp_path, "client")
    ca_file, _ = pki.write(ca, tmp_path, "ca")
    ssl_context(
        Access(
            server="https://x",
            ca=Credential(path=ca_file),
            client_cert=Credential(path=cert),
            client_key=Credential(path=key),
        )
    )
    other_key = pki.issue(ca, "other", client=True).key_pem
    with pytest.raises(KubeconfigError, match="cannot load the client certificate"):
        ssl_context(
            Access(
                server="https://x",
                client_cert=Credential(pem=client.cert_pem),
                client_key=Credential(pem=other_key),
            )
        )
    with pytest.raises(KubeconfigError, match="both its certificate and its key"):
        ssl_context(Access(server="https://x", client_cert=Credential(path=cert)))
    with pytest.raises(KubeconfigError, match="CA"):
        ssl_context(Access(server="https://x", ca=Credential(path=tmp_path / "missing")))


# --- kube_json over a transport -------------------------------------------------------------


class Recorder:
    """A transport answering with one canned response and keeping what it was sent."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.answer = (status, reason, body)
        self.sent: list[tuple[str, str, dict[str, str], bytes | None, urllib3.Timeout]] = []

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: bytes | None,
        timeout: urllib3.Timeout,
    ) -> urllib3.BaseHTTPResponse:
        self.sent.append((method, path, headers, body, timeout))
        status, reason, data = self.answer
        return urllib3.HTTPResponse(body=data, status=status, reason=reason)


def test_a_request_sends_json_with_its_query_and_reads_json() -> None:
    transport = Recorder(200, "OK", b'{"kind": "Shard"}')
    answer = request(
        transport,
        "PATCH",
        "/apis/x/shards/a/status",
        query={"fieldManager": "me", "force": True},
        body={"status": {"epoch": 2}},
        content_type="application/apply-patch+yaml",
        timeout=5.0,
    )
    assert answer == {"kind": "Shard"}
    method, path, headers, body, timeout = transport.sent[0]
    assert (method, path) == ("PATCH", "/apis/x/shards/a/status?fieldManager=me&force=true")
    assert headers["Content-Type"] == "application/apply-patch+yaml"
    assert json.loads(body or b"") == {"status": {"epoch": 2}}
    assert timeout.total == 5.0
    call(transport, "GET", "/watch", timeout=(1.0, 30.0))
    assert (transport.sent[1][3], transport.sent[1][4].connect_timeout) == (None, 1.0)


def test_a_refusal_is_an_api_error_with_the_apis_message() -> None:
    status = {"kind": "Status", "message": 'leases "a" already exists', "code": 409}
    transport = Recorder(409, "Conflict", json.dumps(status).encode())
    with pytest.raises(ApiError) as refused:
        request(transport, "POST", "/leases", body={})
    assert (refused.value.status, refused.value.reason) == (409, "Conflict")
    assert refused.value.message == 'leases "a" already exists'
    assert str(refused.value) == '409 Conflict: leases "a" already exists'
    with pytest.raises(ApiError, match="503 Service Unavailable: upstream down"):
        request(Recorder(503, "Service Unavailable", b"upstream down"), "GET", "/x")


def test_the_light_client_sends_its_token_and_user_agent() -> None:
    client = LightClient(Access(server="http://127.0.0.1:1", token="secret"))
    seen: list[dict[str, str]] = []

    def fake_request(method: str, url: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        seen.append(kwargs["headers"])
        assert url == "http://127.0.0.1:1/api/v1/namespaces"
        return urllib3.HTTPResponse(body=b"{}", status=200)

    client._pool.request = fake_request  # type: ignore[method-assign,assignment]
    assert request(client, "GET", "/api/v1/namespaces") == {}
    assert seen[0]["Authorization"] == "Bearer secret"
    assert seen[0]["User-Agent"].startswith("shardkeeper-runtime")


def test_the_shard_runtime_never_imports_the_official_client() -> None:
    """Everything ``shardkeeper shard`` can load, building its client from a kubeconfig."""
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys, tempfile, pathlib, yaml
        import shardkeeper.runtime
        from shardkeeper.runtime.shell.main import kube_client
        from shardkeeper.runtime.shell.settings import settings_from_env

        for module in pkgutil.walk_packages(shardkeeper.runtime.__path__, "shardkeeper.runtime."):
            importlib.import_module(module.name)
        config = {
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        }
        path = pathlib.Path(tempfile.mkdtemp()) / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        env = {"SHARDKEEPER_SHARD": "s", "POD_NAME": "p", "POD_NAMESPACE": "n",
               "KUBECONFIG": str(path)}
        kube_client(settings_from_env(env))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes")
        print(len([m for m in sys.modules if m.startswith("shardkeeper.runtime.")]), loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert int(out[0]) > 20, "the walk did not load the runtime's modules"
    assert out[1].strip() == "[]"
