"""A light transport to the API server for :mod:`shardkeeper.kube.client`: urllib3 and the
pod's service account or a kubeconfig, without the official client.

Importing ``kubernetes.client`` loads every generated model (tens of MB and most of a
second per process); the shard runtime only needs a few JSON requests, so it talks to the
API server through this module, and so does the ``shards`` command, which should start
fast. It understands what shard pods and the dev environment use: the in-cluster service
account (its token re-read every minute, since projected tokens rotate) and kubeconfigs
with a CA, client certificates and bearer tokens, inline or as files. Other kinds of
kubeconfig auth (exec plugins, auth providers) are refused with a message saying so.
"""

from __future__ import annotations

import base64
import dataclasses
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import urllib3

from shardkeeper.kube.config import KubeconfigError, Source, named, select_context

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
USER_AGENT = "shardkeeper-runtime"


@dataclasses.dataclass(frozen=True)
class Credential:
    """PEM data, given inline or as a file (a kubeconfig has both forms)."""

    pem: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        if self.pem is not None:
            return self.pem
        assert self.path is not None
        return self.path.read_bytes()


@dataclasses.dataclass(frozen=True)
class Access:
    """Where the API server is and how to prove who we are."""

    server: str
    ca: Credential | None = None  # None: the system's trusted CAs
    client_cert: Credential | None = None
    client_key: Credential | None = None
    token: str | None = None
    token_file: Path | None = None  # re-read every TOKEN_REREAD_SECONDS
    insecure: bool = False
    tls_server_name: str | None = None


# --- pure: reading a kubeconfig and the in-cluster environment ------------------------------


def kubeconfig_access(
    config: Mapping[str, Any], base: Path, context_name: str | None = None
) -> Access:
    """The cluster and user of the context ``context_name`` (else the current context);
    relative file paths are taken from ``base``, the kubeconfig's directory, as kubectl
    does."""
    context = select_context(config, context_name)
    cluster = named(config, "clusters", context.get("cluster"), "cluster")
    user = named(config, "users", context.get("user"), "user") if context.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise KubeconfigError(f"cluster {context.get('cluster')!r} has no server")
    unsupported = sorted(set(user) & {"exec", "auth-provider", "username", "password"})
    if unsupported:
        raise KubeconfigError(
            f"user {context.get('user')!r} authenticates with {', '.join(unsupported)}: the "
            "light client (shard runtime, shards CLI) supports client certificates and bearer "
            "tokens only"
        )

    def credential(entry: Mapping[str, Any], key: str) -> Credential | None:
        if entry.get(f"{key}-data"):
            return Credential(pem=base64.b64decode(entry[f"{key}-data"]))
        if entry.get(key):
            return Credential(path=base / Path(entry[key]).expanduser())
        return None

    token_file = user.get("tokenFile")
    return Access(
        server=str(server).rstrip("/"),
        ca=credential(cluster, "certificate-authority"),
        client_cert=credential(user, "client-certificate"),
        client_key=credential(user, "client-key"),
        token=user.get("token") or None,
        token_file=base / Path(token_file).expanduser() if token_file else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
    )


def in_cluster_access(env: Mapping[str, str], root: Path = SERVICE_ACCOUNT_DIR) -> Access:
    """The pod's service account, as every Kubernetes client finds it."""
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeconfigError(
            "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set"
        )
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return Access(
        server=f"https://{host}:{port}",
        ca=Credential(path=root / "ca.crt"),
        token_file=root / "token",
    )


# --- I/O: the transport ---------------------------------------------------------------------


def read_kubeconfig(path: Path) -> dict[str, Any]:
    """A kubeconfig file's contents, or :class:`KubeconfigError` saying why not."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"cannot read the kubeconfig {path}: {exc}") from None
    if not isinstance(config, dict):
        raise KubeconfigError(f"the kubeconfig {path} is not a mapping")
    return config


class TokenFile:
    """A token read from a file, read again once it is ``every`` seconds old."""

    def __init__(
        self,
        path: Path,
        *,
        every: float = TOKEN_REREAD_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.every = every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._token = ""
        self._read_at: float | None = None

    def get(self) -> str:
        with self._lock:
            now = self._monotonic()
            if self._read_at is None or now - self._read_at >= self.every:
                self._token = self.path.read_text().strip()
                self._read_at = now
            return self._token


class LightClient:
    """A :class:`shardkeeper.kube.client.Transport` on one urllib3 pool."""

    def __init__(self, access: Access, *, pool_size: int = 4, user_agent: str = USER_AGENT) -> None:
        self.server = access.server
        self.user_agent = user_agent
        self._token = access.token
        self._token_file = TokenFile(access.token_file) if access.token_file else None
        pool: dict[str, Any] = {"maxsize": pool_size}
        if self.server.startswith("https:"):
            pool["ssl_context"] = ssl_context(access)
            if access.tls_server_name:
                pool["server_hostname"] = access.tls_server_name
        self._pool = urllib3.PoolManager(num_pools=2, **pool)

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> LightClient:
        return cls(kubeconfig_access(read_kubeconfig(path), path.parent, context))

    @classmethod
    def in_cluster(cls, env: Mapping[str, str], root: Path = SERVICE_ACCOUNT_DIR) -> LightClient:
        return cls(in_cluster_access(env, root))

    @classmethod
    def connect(cls, source: Source, env: Mapping[str, str]) -> LightClient:
        """A client with the credentials :func:`shardkeeper.kube.config.locate` chose."""
        if source.kubeconfig is None:
            return cls.in_cluster(env)
        return cls.from_kubeconfig(source.kubeconfig, source.context)

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: bytes | None,
        timeout: urllib3.Timeout,
    ) -> urllib3.BaseHTTPResponse:
        headers = {**headers, "User-Agent": self.user_agent}
        token = self._token_file.get() if self._token_file else self._token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self._pool.request(
            method,
            self.server + path,
            body=body,
            headers=headers,
            timeout=timeout,
            preload_content=False,
        )

    def close(self) -> None:
        self._pool.clear()


def ssl_context(access: Access) -> ssl.SSLContext:
    """TLS as the access says: its CA (or the system's), its client certificate."""
    if access.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif access.ca is not None:
        try:
            context = ssl.create_default_context(cadata=access.ca.read().decode())
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise KubeconfigError(f"cannot load the API server's CA: {exc}") from None
    else:
        context = ssl.create_default_context()
    if access.client_cert is not None or access.client_key is not None:
        if access.client_cert is None or access.client_key is None:
            raise KubeconfigError("a client certificate needs both its certificate and its key")
        _load_client_cert(context, access.client_cert, access.client_key)
    return context


def _load_client_cert(context: ssl.SSLContext, cert: Credential, key: Credential) -> None:
    try:
        if cert.path is not None and key.path is not None:
            context.load_cert_chain(cert.path, key.path)
            return
        # ssl loads a certificate chain from files only: hand it a private one, gone at once
        with tempfile.TemporaryDirectory(prefix="shardkeeper-tls-") as tmp:
            pem = Path(tmp) / "client.pem"
            pem.touch(mode=0o600)
            pem.write_bytes(cert.read().rstrip(b"\n") + b"\n" + key.read())
            context.load_cert_chain(pem)
    except (OSError, ssl.SSLError) as exc:
        raise KubeconfigError(f"cannot load the client certificate: {exc}") from None
