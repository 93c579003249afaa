"""The local embedded environment: etcd, kube-apiserver, kube-controller-manager, MinIO and
the process node, all on loopback, all started from the cached tools.

With ``node="real"`` the node is a real kubelet with containerd and runc instead
(:mod:`shardkeeper_dev.realnode`); pods then live in network namespaces of their own, so
the API server, MinIO and PostgreSQL listen on the pods' bridge address instead of
127.0.0.1 (etcd and the controller-manager stay on loopback).

Everything lives in one state directory: certificates, data, logs, the kubeconfig, an env
file, and ``state.json`` with the PID (and start time) of every process ``up`` started, so
that ``down`` stops exactly those. Data, certificates and the chosen ports (``ports.json``)
survive ``down``: a later ``up`` finds its objects and volumes again, on the same ports, so
what was applied with the old endpoints still reaches them; ``down --purge`` removes them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shardkeeper.kube.paths import resource_path
from shardkeeper_dev import oidc, pki, processes, tools
from shardkeeper_dev.realnode import config as realconfig

DEFAULT_BUCKET = "shardkeeper"
DEFAULT_REGION = "us-east-1"
DEFAULT_DATABASE = "shardkeeper"
NODE_NAME = "process-node"
# what runs the pods: the process node (pods as local processes) or the real node
NODE_KINDS = ("process", "real")
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
START_TIMEOUT = 120.0
# how a component is asked to stop, if not by SIGTERM. PostgreSQL's SIGTERM is a "smart"
# shutdown that waits for every client to disconnect (and its sessions, each in a session
# of its own, never see the signal to its group): SIGINT, the fast shutdown, ends them
STOP_SIGNALS = {"postgres": signal.SIGINT}
# the cached tools a user runs against the environment; ``dev env`` puts them on PATH
CLIENT_TOOLS = ("kubectl", "helm")


class EnvironmentError_(RuntimeError):
    """The environment cannot start or is not running; the message says why and what to do."""


def default_state_dir() -> Path:
    explicit = os.environ.get("SHARDKEEPER_DEV_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "shardkeeper" / "dev"


@dataclasses.dataclass(frozen=True)
class EnvInfo:
    """How clients reach a running environment."""

    state_dir: Path
    kubeconfig: Path
    server: str
    node_name: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    s3_bucket: str
    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str
    postgres_database: str

    @property
    def postgres_dsn(self) -> str:
        return (
            f"postgresql://{self.postgres_user}:{self.postgres_password}"
            f"@{self.postgres_host}:{self.postgres_port}/{self.postgres_database}"
        )

    @property
    def bin_dir(self) -> Path:
        """Links to the cached kubectl and helm (see :func:`link_client_tools`)."""
        return self.state_dir / "bin"

    def variables(self) -> dict[str, str]:
        """The variables written to the env file and printed by ``shardkeeper dev env``."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "SHARDKEEPER_DEV_DIR": str(self.state_dir),
            "SHARDKEEPER_S3_ENDPOINT": self.s3_endpoint,
            "SHARDKEEPER_S3_ACCESS_KEY": self.s3_access_key,
            "SHARDKEEPER_S3_SECRET_KEY": self.s3_secret_key,
            "SHARDKEEPER_S3_REGION": self.s3_region,
            "SHARDKEEPER_S3_BUCKET": self.s3_bucket,
            "SHARDKEEPER_POSTGRES_DSN": self.postgres_dsn,
        }

    def shell_exports(self) -> str:
        """What ``shardkeeper dev env`` prints and the env file holds: the variables, and
        PATH with the environment's own kubectl and helm first, so that ``kubectl get ...``
        works on a machine that has none."""
        lines = [f"export {k}={shlex.quote(v)}\n" for k, v in self.variables().items()]
        lines.append(f'export PATH={shlex.quote(str(self.bin_dir))}:"$PATH"\n')
        return "".join(lines)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state_dir"], data["kubeconfig"] = str(self.state_dir), str(self.kubeconfig)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnvInfo:
        return cls(
            **{**data, "state_dir": Path(data["state_dir"]), "kubeconfig": Path(data["kubeconfig"])}
        )


@dataclasses.dataclass(frozen=True)
class Ports:
    """Loopback ports; 0 means pick a free one."""

    apiserver: int = 0
    etcd: int = 0
    etcd_peer: int = 0
    controller_manager: int = 0
    s3: int = 0
    s3_console: int = 0
    postgres: int = 0
    operator_metrics: int = 0


@dataclasses.dataclass(frozen=True)
class Component:
    """One process of the environment and how to tell that it serves."""

    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    endpoint: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    # runs once the component is healthy, before the next one starts
    then: Callable[[], None] | None = None


@dataclasses.dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    alive: bool
    healthy: bool
    detail: str


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-") + "-port"


def resolve_ports(
    requested: Ports,
    recorded: Ports | None = None,
    *,
    in_use: Callable[[int], bool] = _port_in_use,
    free_port: Callable[[set[int]], int] = _free_port,
) -> Ports:
    """The ports to start on: each requested one, else the one this state directory used
    last time (``recorded``), else a free one. A requested or recorded port that is taken
    is refused, naming it: a recorded port is what the kubeconfig, the env file and the
    objects applied to the environment (a StorageMapping's MinIO endpoint, a PostgreSQL
    DSN) point at, so silently moving it would leave them pointing at nothing."""
    chosen: dict[str, int] = {}
    for field in dataclasses.fields(Ports):
        port = getattr(requested, field.name)
        if not port:
            continue
        if in_use(port):
            raise EnvironmentError_(
                f"port {port} on 127.0.0.1 is already in use ({_flag(field.name)}); "
                f"stop what listens there or choose another port"
            )
        if port in chosen.values():
            raise EnvironmentError_(f"port {port} is requested for two components")
        chosen[field.name] = port
    for field in dataclasses.fields(Ports):
        port = getattr(recorded, field.name) if recorded is not None else 0
        if field.name in chosen or not port or port in chosen.values():
            continue
        if in_use(port):
            raise EnvironmentError_(
                f"port {port} on 127.0.0.1, where this state directory's "
                f"{field.name.replace('_', ' ')} listened before, is in use; stop what "
                f"listens there, or choose another port with {_flag(field.name)} (what was "
                f"applied to the environment with the old endpoint then needs updating)"
            )
        chosen[field.name] = port
    for field in dataclasses.fields(Ports):
        if field.name not in chosen:
            chosen[field.name] = free_port(set(chosen.values()))
    return Ports(**chosen)


def _kubeconfig(server: str, ca_pem: bytes, user: str, client: pki.KeyPair) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "shardkeeper-dev",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert_pem),
                    "client-key-data": b64(client.key_pem),
                },
            }
        ],
        "contexts": [
            {"name": "shardkeeper-dev", "context": {"cluster": "shardkeeper-dev", "user": user}}
        ],
        "current-context": "shardkeeper-dev",
    }


class Environment:
    """One environment rooted at ``state_dir``."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.pki_dir = self.state_dir / "pki"
        self.log_dir = self.state_dir / "logs"
        self.state_file = self.state_dir / "state.json"
        self.env_file = self.state_dir / "env"
        # the ports of the last ``up``; unlike state.json's copy it survives ``down``
        self.ports_file = self.state_dir / "ports.json"
        # Popen handles of processes this Python process started, to reap their exit status
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # how ``up`` started them, which a component started again (``start``) keeps
        self._die_with_parent = False
        self._node_kind = str((self._read_state() or {}).get("node") or "process")
        self._image_archive: Path | None = None

    # -- state ---------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        return data

    def records(self) -> list[processes.ProcessRecord]:
        state = self._read_state() or {}
        return [processes.ProcessRecord.from_json(r) for r in state.get("processes", [])]

    def _write_state(
        self,
        info: EnvInfo | None,
        records: list[processes.ProcessRecord],
        ports: Ports | None = None,
    ) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "info": info.as_json() if info else None,
            "ports": dataclasses.asdict(ports) if ports else None,
            "node": self._node_kind,
            "processes": [r.as_json() for r in records],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.state_file)

    def recorded_ports(self) -> Ports | None:
        """The ports the last ``up`` here chose, which the next one reuses."""
        try:
            data = json.loads(self.ports_file.read_text())
        except FileNotFoundError:
            return None
        known = {f.name for f in dataclasses.fields(Ports)}
        return Ports(**{k: int(v) for k, v in data.items() if k in known})

    def record_ports(self, ports: Ports) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(ports), indent=2))
        tmp.replace(self.ports_file)

    def running(self) -> list[processes.ProcessRecord]:
        return [r for r in self.records() if processes.is_alive(r)]

    def info(self) -> EnvInfo:
        state = self._read_state()
        if not state or not state.get("info") or not self.running():
            raise EnvironmentError_(
                f"no environment is running in {self.state_dir}; "
                "start one with `shardkeeper dev up`"
            )
        return EnvInfo.from_json(state["info"])

    # -- up ------------------------------------------------------------------------------

    def up(
        self,
        ports: Ports = Ports(),
        *,
        die_with_parent: bool = False,
        only_control_plane: bool = False,
        with_operator: bool = False,
        node: str = "process",
        image_archive: Path | None = None,
        progress: Callable[[str], None] = lambda _msg: None,
    ) -> EnvInfo:
        """Start every component and wait until each is healthy.

        ``only_control_plane`` stops after etcd and kube-apiserver (the floor that
        benchmarks compare a full start with). ``with_operator`` also installs the CRDs
        and runs ``shardkeeper operator`` against the environment. ``node="real"`` runs
        pods on kubelet, containerd and runc, from ``image_archive`` (default: the one
        ``make image`` writes, built if it is not there).

        Raises EnvironmentError_ if one is already running here, a port is taken or a tool
        is missing; a component that fails to start is stopped with the rest, and the
        error quotes the end of its log.
        """
        alive = self.running()
        self._die_with_parent = die_with_parent
        if alive:
            pids = ", ".join(f"{r.name}={r.pid}" for r in alive)
            raise AlreadyRunning(
                f"an environment is already running in {self.state_dir} ({pids}); "
                "use `shardkeeper dev status`, or `shardkeeper dev down` first"
            )
        if node not in NODE_KINDS:
            raise EnvironmentError_(f"node {node!r} is not one of {', '.join(NODE_KINDS)}")
        for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "minio"):
            tools.binary_path(binary)  # a missing tool fails before anything starts
        postgres_bin = postgres_bin_dir()
        ports = resolve_ports(ports, self.recorded_ports())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.record_ports(ports)
        creds = self._ensure_pki()
        records: list[processes.ProcessRecord] = []
        self._node_kind = node
        self._image_archive = image_archive
        host = _host_address(node)
        server = f"https://{host}:{ports.apiserver}"
        info = EnvInfo(
            state_dir=self.state_dir,
            kubeconfig=self.state_dir / "kubeconfig",
            server=server,
            node_name=realconfig.NODE_NAME if node == "real" else NODE_NAME,
            s3_endpoint=f"http://{host}:{ports.s3}",
            s3_access_key=creds["s3_access_key"],
            s3_secret_key=creds["s3_secret_key"],
            s3_region=DEFAULT_REGION,
            s3_bucket=DEFAULT_BUCKET,
            postgres_host=host,
            postgres_port=ports.postgres,
            postgres_user="postgres",
            postgres_password=creds["postgres_password"],
            postgres_database=DEFAULT_DATABASE,
        )
        if node == "real":
            self._prepare_real_node(ports)
        self._write_kubeconfigs(server)
        self._ensure_postgres_cluster(postgres_bin, creds["postgres_password"])
        if node == "real":
            _allow_postgres_from(self.state_dir / "postgres", str(realconfig.POD_SUBNET))
        components = self._components(ports, info)
        if only_control_plane:
            components = components[:2]
        elif not with_operator:
            components = [c for c in components if c.name != "operator"]
        try:
            for component in components:
                progress(f"starting {component.name}")
                record, proc = processes.spawn(
                    component.name,
                    component.argv,
                    env={**os.environ, **component.env},
                    log_path=self.log_dir / f"{component.name}.log",
                    cwd=self.state_dir,
                    die_with_parent=die_with_parent,
                )
                self._children[record.pid] = proc
                records.append(record)
                self._write_state(None, records, ports)
                self._wait(record, component.healthy)
                if component.then is not None:
                    component.then()
        except BaseException:
            self._stop_all(records, ports)
            self._write_state(None, [], ports)
            raise
        self._write_state(info, records, ports)
        link_client_tools(info.bin_dir)
        self.env_file.write_text(info.shell_exports())
        return info

    @property
    def node_kind(self) -> str:
        """``process`` or ``real``: what runs the pods of this environment."""
        return self._node_kind

    @property
    def real_node(self) -> realconfig.Layout:
        return realconfig.Layout(self.state_dir / "real-node")

    def _components(self, ports: Ports, info: EnvInfo) -> list[Component]:
        """What ``up`` starts, in order, each with the check that says it is healthy."""
        kcm_health = f"https://127.0.0.1:{ports.controller_manager}/healthz"
        host = _host_address(self._node_kind)
        nodes = self._real_node_components if self._node_kind == "real" else self._process_node
        return [
            Component(
                "etcd",
                self._etcd_argv(tools.binary_path("etcd"), ports),
                lambda: _http_ok(f"http://127.0.0.1:{ports.etcd}/health"),
                f"http://127.0.0.1:{ports.etcd}",
            ),
            Component(
                "kube-apiserver",
                self._apiserver_argv(tools.binary_path("kube-apiserver"), ports, host),
                lambda: self._api_ok(info.server, "/readyz"),
                info.server,
                # before MinIO, whose STS reads the issuer's keys
                then=lambda: oidc.allow_discovery(info.server, self._ssl_context()),
            ),
            Component(
                "kube-controller-manager",
                self._controller_manager_argv(tools.binary_path("kube-controller-manager"), ports),
                lambda: _http_ok(kcm_health, insecure=True),
                kcm_health,
            ),
            Component(
                "minio",
                self._minio_argv(tools.binary_path("minio"), ports, host),
                lambda: _http_ok(f"{info.s3_endpoint}/minio/health/live"),
                info.s3_endpoint,
                env={
                    "MINIO_ROOT_USER": info.s3_access_key,
                    "MINIO_ROOT_PASSWORD": info.s3_secret_key,
                    "MINIO_BROWSER": "off",
                    "MINIO_UPDATE": "off",
                    **oidc.minio_env(info.server),
                },
                then=lambda: _ensure_bucket(info),
            ),
            Component(
                "postgres",
                self._postgres_argv(postgres_bin_dir(), ports, host),
                lambda: _pg_ready(postgres_bin_dir(), ports.postgres),
                f"127.0.0.1:{ports.postgres}",
                then=lambda: self._ensure_database(info),
            ),
            *nodes(info),
            Component(
                "operator",
                [
                    sys.executable,
                    "-m",
                    "shardkeeper",
                    "operator",
                    "--metrics-address=127.0.0.1",
                    f"--metrics-port={ports.operator_metrics}",
                    "--leader-election-namespace=default",
                    "--identity=dev-operator",
                ],
                lambda: _http_ok(f"http://127.0.0.1:{ports.operator_metrics}/healthz"),
                f"http://127.0.0.1:{ports.operator_metrics}/metrics",
                env={"KUBECONFIG": str(info.kubeconfig)},
            ),
        ]

    def _process_node(self, info: EnvInfo) -> list[Component]:
        return [
            Component(
                "process-node",
                self._node_argv(info),
                lambda: self._node_ready(info.server, info.node_name),
                f"node/{info.node_name}",
                then=lambda: install_crds(info),
            )
        ]

    def _real_node_components(self, info: EnvInfo) -> list[Component]:
        from shardkeeper_dev.realnode import node as real

        layout = self.real_node
        kubeconfig = self.state_dir / "real-node.kubeconfig"
        archive = self._image_archive or real.default_image_archive()
        return [
            Component(
                "containerd",
                real.containerd_argv(layout),
                lambda: real.containerd_serves(layout),
                f"unix://{layout.socket}",
                then=lambda: real.import_images(layout, archive),
            ),
            Component(
                "kubelet",
                real.kubelet_argv(layout, kubeconfig),
                lambda: self._node_ready(info.server, info.node_name),
                f"node/{info.node_name}",
                then=lambda: install_crds(info),
            ),
            # binds pods (no kube-scheduler runs) and provisions local volumes
            Component(
                "real-node-standin",
                self._node_argv(info, kubeconfig.name, layout.standin, "--for-kubelet"),
                lambda: True,
                "binder and local-volume provisioner",
            ),
        ]

    def _prepare_real_node(self, ports: Ports) -> None:
        from shardkeeper_dev.realnode import host as realhost
        from shardkeeper_dev.realnode import node as real

        try:
            real.prepare(self.real_node, self.pki_dir / "ca.crt")
            realhost.route_api_service(ports.apiserver, self._route_tag())
        except realhost.HostError as err:
            raise EnvironmentError_(str(err)) from err
        self._ensure_apiserver_serves(realconfig.GATEWAY)

    def _route_tag(self) -> str:
        import hashlib

        return hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]

    def _ensure_apiserver_serves(self, address: str) -> None:
        """The API server's certificate names ``address`` (one made before the real node
        existed does not): issued again from the same CA if it does not."""
        import ipaddress

        from cryptography import x509

        cert = x509.load_pem_x509_certificate((self.pki_dir / "apiserver.crt").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if ipaddress.ip_address(address) in names.get_values_for_type(x509.IPAddress):
            return
        ca = self._pair("ca")
        serving = pki.issue(
            ca,
            "kube-apiserver",
            dns_names=tuple(names.get_values_for_type(x509.DNSName)),
            ip_addresses=(
                *(str(ip) for ip in names.get_values_for_type(x509.IPAddress)),
                address,
            ),
            server=True,
        )
        pki.write(serving, self.pki_dir, "apiserver")

    def _ensure_pki(self) -> dict[str, str]:
        """Create the CA, certificates, signing key and S3 credentials once per state dir."""
        creds_file = self.pki_dir / "credentials.json"
        if creds_file.exists():
            creds: dict[str, str] = json.loads(creds_file.read_text())
            self._ensure_real_node_client()
            return creds
        ca = pki.new_ca()
        pki.write(ca, self.pki_dir, "ca")
        sans = (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
        serving = pki.issue(
            ca,
            "kube-apiserver",
            dns_names=sans,
            ip_addresses=("127.0.0.1", "10.96.0.1"),
            server=True,
        )
        pki.write(serving, self.pki_dir, "apiserver")
        clients = {
            "admin": ("shardkeeper-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            # the process node binds pods and provisions volumes: a kubelet, scheduler and
            # provisioner in one, so it gets its own identity with full rights
            "process-node": (f"system:node:{NODE_NAME}", ("system:nodes", "system:masters")),
        }
        for name, (cn, orgs) in clients.items():
            pki.write(pki.issue(ca, cn, organizations=orgs, client=True), self.pki_dir, name)
        self._ensure_real_node_client()
        pki.write(pki.new_signing_key(), self.pki_dir, "service-account")
        # the front-proxy CA lets delegated authentication (controller-manager, webhooks)
        # trust the API server's request headers
        front_proxy = pki.new_ca("shardkeeper-dev-front-proxy-ca")
        pki.write(front_proxy, self.pki_dir, "front-proxy-ca")
        pki.write(
            pki.issue(front_proxy, "front-proxy-client", client=True),
            self.pki_dir,
            "front-proxy-client",
        )
        creds = {
            "s3_access_key": "shardkeeper",
            "s3_secret_key": secrets.token_urlsafe(24),
            "admin_token": secrets.token_urlsafe(32),
            "postgres_password": secrets.token_urlsafe(18),
        }
        (self.pki_dir / "tokens.csv").write_text(
            f'{creds["admin_token"]},shardkeeper-admin-token,admin-token,"system:masters"\n'
        )
        creds_file.touch(mode=0o600)
        creds_file.write_text(json.dumps(creds))
        return creds

    def _ensure_real_node_client(self) -> None:
        # the real node's kubelet and its stand-ins (binder, provisioner), with full rights
        # as the process node has them; issued on its own so that an older state dir gets it
        if (self.pki_dir / "real-node.crt").exists():
            return
        cn = f"system:node:{realconfig.NODE_NAME}"
        orgs = ("system:nodes", "system:masters")
        pair = pki.issue(self._pair("ca"), cn, organizations=orgs, client=True)
        pki.write(pair, self.pki_dir, "real-node")

    def _pair(self, name: str) -> pki.KeyPair:
        return pki.KeyPair(
            (self.pki_dir / f"{name}.crt").read_bytes(), (self.pki_dir / f"{name}.key").read_bytes()
        )

    def _write_kubeconfigs(self, server: str) -> None:
        import yaml

        ca = (self.pki_dir / "ca.crt").read_bytes()
        targets = {
            "kubeconfig": ("shardkeeper-admin", "admin"),
            "controller-manager.kubeconfig": (
                "system:kube-controller-manager",
                "controller-manager",
            ),
            "process-node.kubeconfig": (f"system:node:{NODE_NAME}", "process-node"),
            "real-node.kubeconfig": (f"system:node:{realconfig.NODE_NAME}", "real-node"),
        }
        for filename, (user, pair) in targets.items():
            path = self.state_dir / filename
            path.touch(mode=0o600)
            path.write_text(yaml.safe_dump(_kubeconfig(server, ca, user, self._pair(pair))))

    def _etcd_argv(self, etcd: Path, ports: Ports) -> list[str]:
        client = f"http://127.0.0.1:{ports.etcd}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        return [
            str(etcd),
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--listen-metrics-urls=",
            # a throw-away development store: durability across power loss is not needed
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self, apiserver: Path, ports: Ports, host: str = LOOPBACK) -> list[str]:
        p = self.pki_dir
        real = []
        if self._node_kind == "real":
            # kubelet asks its clients for a certificate of the CA, and the real node's
            # name resolves to nothing: reach it at its InternalIP
            real = [
                f"--kubelet-client-certificate={p / 'admin.crt'}",
                f"--kubelet-client-key={p / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        return [
            str(apiserver),
            *real,
            f"--etcd-servers=http://127.0.0.1:{ports.etcd}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={ports.apiserver}",
            f"--cert-dir={p}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--token-auth-file={p / 'tokens.csv'}",
            f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
            "--authorization-mode=RBAC",
            *oidc.apiserver_flags(f"https://{host}:{ports.apiserver}"),
            f"--service-account-key-file={p / 'service-account.crt'}",
            f"--service-account-signing-key-file={p / 'service-account.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            "--enable-priority-and-fairness=false",
            "--v=0",
        ]

    def _controller_manager_argv(self, kcm: Path, ports: Ports) -> list[str]:
        p = self.pki_dir
        kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        return [
            str(kcm),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--cert-dir={p / 'controller-manager'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'service-account.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route",
            "--v=0",
        ]

    def _minio_argv(self, minio: Path, ports: Ports, host: str = LOOPBACK) -> list[str]:
        return [
            str(minio),
            "server",
            "--quiet",
            "--address",
            f"{host}:{ports.s3}",
            "--console-address",
            f"127.0.0.1:{ports.s3_console}",
            "--certs-dir",
            str(oidc.minio_certs_dir(self.state_dir, (self.pki_dir / "ca.crt").read_bytes())),
            str(self.state_dir / "minio"),
        ]

    def _ensure_postgres_cluster(self, bin_dir: Path, password: str) -> None:
        data = self.state_dir / "postgres"
        if (data / "PG_VERSION").exists():
            return
        pwfile = self.pki_dir / "postgres.pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password + "\n")
        argv = [
            str(bin_dir / "initdb"),
            f"--pgdata={data}",
            "--username=postgres",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]
        proc = subprocess.run(_as_unprivileged(argv), capture_output=True, text=True)
        if proc.returncode != 0:
            raise EnvironmentError_(f"initdb failed:\n{proc.stdout}{proc.stderr}")

    def _postgres_argv(self, bin_dir: Path, ports: Ports, host: str = LOOPBACK) -> list[str]:
        listen = LOOPBACK if host == LOOPBACK else f"{LOOPBACK},{host}"
        return _as_unprivileged(
            [
                str(bin_dir / "postgres"),
                f"-D{self.state_dir / 'postgres'}",
                f"-h{listen}",
                f"-p{ports.postgres}",
                f"-k{self.state_dir / 'postgres'}",
                # a throw-away development database: durability across power loss is not needed
                "-cfsync=off",
                "-csynchronous_commit=off",
                "-cfull_page_writes=off",
                "-cmax_connections=200",
            ]
        )

    def _ensure_database(self, info: EnvInfo) -> None:
        env = {**os.environ, "PGPASSWORD": info.postgres_password}
        base = ["-h", LOOPBACK, "-p", str(info.postgres_port), "-U", info.postgres_user]
        exists = subprocess.run(
            [
                str(postgres_bin_dir() / "psql"),
                *base,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{info.postgres_database}'",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if exists.stdout.strip() == "1":
            return
        proc = subprocess.run(
            [str(postgres_bin_dir() / "createdb"), *base, info.postgres_database],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise EnvironmentError_(f"createdb failed: {proc.stderr.strip()}")

    def _node_argv(
        self,
        info: EnvInfo,
        kubeconfig: str = "process-node.kubeconfig",
        state_dir: Path | None = None,
        *extra: str,
    ) -> list[str]:
        return [
            sys.executable,
            "-m",
            "shardkeeper",
            "dev",
            "node",
            *extra,
            f"--kubeconfig={self.state_dir / kubeconfig}",
            f"--state-dir={state_dir or self.state_dir / 'node'}",
            f"--name={info.node_name}",
        ]

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def _api_ok(self, server: str, path: str) -> bool:
        return _http_ok(server + path, context=self._ssl_context())

    def _node_ready(self, server: str, name: str = NODE_NAME) -> bool:
        try:
            url = server + resource_path("v1", "nodes", name=name)
            with urllib.request.urlopen(url, context=self._ssl_context(), timeout=5) as resp:
                node = json.load(resp)
        except (urllib.error.URLError, OSError):
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _wait(
        self,
        record: processes.ProcessRecord,
        healthy: Callable[[], bool],
        timeout: float = START_TIMEOUT,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not healthy():
            self._reap()
            if not processes.is_alive(record):
                raise EnvironmentError_(
                    f"{record.name} exited during start-up; the end of {record.log}:\n"
                    + _tail(Path(record.log))
                )
            if time.monotonic() > deadline:
                raise EnvironmentError_(
                    f"{record.name} was not healthy after {timeout:.0f}s; "
                    f"the end of {record.log}:\n" + _tail(Path(record.log))
                )
            time.sleep(0.1)

    def _reap(self) -> None:
        for proc in self._children.values():
            proc.poll()

    # -- down / status -------------------------------------------------------------------

    def _stop_records(self, records: list[processes.ProcessRecord]) -> list[str]:
        stopped = []
        for record in reversed(records):
            child = self._children.get(record.pid)
            sig = STOP_SIGNALS.get(record.name, signal.SIGTERM)
            if processes.stop(record, reap=child.poll if child else None, sig=sig):
                stopped.append(record.name)
        return stopped

    # -- one component: the fault tests' outages --------------------------------------------

    def _record(self, name: str) -> processes.ProcessRecord:
        for record in self.records():
            if record.name == name:
                return record
        raise EnvironmentError_(f"{name} is not a component of the environment in {self.state_dir}")

    def stop(self, name: str) -> None:
        """Stop one running component as ``down`` does (SIGTERM to its process group, or
        its STOP_SIGNALS entry, so that PostgreSQL ends its sessions; SIGKILL after a
        while); ``start`` brings it back."""
        record = self._record(name)
        child = self._children.get(record.pid)
        sig = STOP_SIGNALS.get(name, signal.SIGTERM)
        processes.stop(record, reap=child.poll if child else None, sig=sig)

    def kill(self, name: str) -> None:
        """SIGKILL one component's own process, and nothing else: what a crash leaves."""
        record = self._record(name)
        if processes.kill(record):
            child = self._children.get(record.pid)
            while processes.is_alive(record):
                if child is not None:
                    child.poll()
                time.sleep(0.05)

    def start(self, name: str) -> None:
        """Start a stopped component again, as ``up`` started it (same ports, data and log),
        and wait until it is healthy. What ``up`` set up after the first start (a bucket, a
        database, the CRDs) is still there, so it is not done again."""
        state = self._read_state() or {}
        if not state.get("info") or not state.get("ports"):
            raise EnvironmentError_(f"no environment is running in {self.state_dir}")
        record = self._record(name)
        if processes.is_alive(record):
            raise EnvironmentError_(f"{name} is running already (pid {record.pid})")
        info = EnvInfo.from_json(state["info"])
        (component,) = [
            c for c in self._components(Ports(**state["ports"]), info) if c.name == name
        ]
        new, proc = processes.spawn(
            name,
            component.argv,
            env={**os.environ, **component.env},
            log_path=Path(record.log),
            cwd=self.state_dir,
            die_with_parent=self._die_with_parent,
        )
        self._children[new.pid] = proc
        records = [new if r.name == name else r for r in self.records()]
        self._write_state(info, records, Ports(**state["ports"]))
        self._wait(new, component.healthy)

    def _stop_all(self, records: list[processes.ProcessRecord], ports: Ports | None) -> list[str]:
        """Stop ``records``, newest first. On the real node, the containers go while
        containerd still runs (its shims outlive it), and what kubelet and containerd
        leave on the machine goes once everything has stopped."""
        if self._node_kind != "real":
            return self._stop_records(records)
        from shardkeeper_dev.realnode import node as real

        names = [r.name for r in records]
        cut = names.index("containerd") + 1 if "containerd" in names else len(records)
        stopped = self._stop_records(records[cut:])
        shims = real.teardown_containers(self.real_node)
        stopped += self._stop_records(records[:cut])
        if ports is not None:
            real.teardown_host(self.real_node, ports.apiserver, self._route_tag(), shims)
        return stopped

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop every process ``up`` recorded here, newest first; return their names."""
        state = self._read_state() or {}
        ports = Ports(**state["ports"]) if state.get("ports") else self.recorded_ports()
        stopped = self._stop_all(self.records(), ports)
        if self.state_file.exists():
            self._write_state(None, [])
        if purge:
            import shutil

            shutil.rmtree(self.state_dir, ignore_errors=True)
        return stopped

    def status(self) -> list[ComponentStatus]:
        """Each recorded process, alive or not, and the answer of its own health check."""
        state = self._read_state() or {}
        if not state.get("info") or not state.get("ports"):
            return [
                ComponentStatus(r.name, r.pid, processes.is_alive(r), False, "starting")
                for r in self.records()
            ]
        info = EnvInfo.from_json(state["info"])
        checks = {c.name: c for c in self._components(Ports(**state["ports"]), info)}
        result = []
        for record in self.records():
            alive = processes.is_alive(record)
            component = checks[record.name]
            healthy = alive and component.healthy()
            detail = component.endpoint if alive else "not running"
            result.append(ComponentStatus(record.name, record.pid, alive, healthy, detail))
        return result


class AlreadyRunning(EnvironmentError_):
    """``up`` found an environment already running in the same state directory."""


def _http_ok(url: str, *, context: ssl.SSLContext | None = None, insecure: bool = False) -> bool:
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def install_crds(info: EnvInfo) -> None:
    """Server-side apply the CRDs generated from the API models; wait until they are served."""
    from shardkeeper.api import KINDS
    from shardkeeper.api.crd import crds
    from shardkeeper.api.generate import render_yaml

    kubectl = str(tools.binary_path("kubectl"))
    env = {**os.environ, "KUBECONFIG": str(info.kubeconfig)}
    documents = "---\n".join(render_yaml(doc) for doc in crds(KINDS).values())
    for argv in (
        [kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-", "-o", "name"],
        [kubectl, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
    ):
        proc = subprocess.run(argv, input=documents, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EnvironmentError_(f"installing the CRDs failed: {proc.stderr.strip()}")


def link_client_tools(bin_dir: Path) -> list[str]:
    """(Re)make ``bin_dir``'s links to the cached kubectl and helm; the names linked. A tool
    not built yet is left out (helm is not needed to run the environment)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    linked = []
    for name in CLIENT_TOOLS:
        link = bin_dir / name
        try:
            target = tools.binary_path(name)
        except tools.ToolError:
            link.unlink(missing_ok=True)
            continue
        if not (link.is_symlink() and link.readlink() == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        linked.append(name)
    return linked


def postgres_bin_dir() -> Path:
    """The PostgreSQL server binaries of the Debian package (newest major version)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise EnvironmentError_(
            "PostgreSQL server binaries were not found in /usr/lib/postgresql/*/bin; "
            "install them with `apt-get install postgresql`"
        )
    return found[-1].parent


def _as_unprivileged(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; a user namespace that maps us to an ordinary uid
    # satisfies it while file access stays that of the calling user
    if os.geteuid() != 0:
        return argv
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--", *argv]


def _host_address(node: str) -> str:
    """Where the API server, MinIO and PostgreSQL listen: where the node's pods reach them."""
    return realconfig.GATEWAY if node == "real" else LOOPBACK


def _allow_postgres_from(data_dir: Path, network: str) -> None:
    """Let clients of ``network`` (the real node's pods) in with a password; initdb only
    allows loopback."""
    hba = data_dir / "pg_hba.conf"
    line = f"host all all {network} scram-sha-256"
    text = hba.read_text()
    if line not in text.splitlines():
        hba.write_text(text.rstrip("\n") + "\n" + line + "\n")


def _pg_ready(bin_dir: Path, port: int) -> bool:
    proc = subprocess.run(
        [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
        capture_output=True,
    )
    return proc.returncode == 0


def _ensure_bucket(info: EnvInfo) -> None:
    s3 = s3_client(info)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=info.s3_bucket)


def s3_client(info: EnvInfo) -> Any:
    """A boto3 S3 client for the environment's MinIO."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=info.s3_endpoint,
        aws_access_key_id=info.s3_access_key,
        aws_secret_access_key=info.s3_secret_key,
        region_name=info.s3_region,
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@contextlib.contextmanager
def running(state_dir: Path, **kwargs: Any) -> Iterator[EnvInfo]:
    """An environment for the duration of a ``with`` block, stopped on the way out."""
    env = Environment(state_dir)
    info = env.up(**kwargs)
    try:
        yield info
    finally:
        env.down()
