"""One pod's life on the node, on a thread of its own.

The worker sets the pod up (address, volumes, service-account token), runs its init
containers in order and then its containers, restarts them per ``restartPolicy`` with
back-off, runs their probes, reports the pod's status when it changes, and on deletion
stops the processes (SIGTERM, SIGKILL after the grace period) and deletes the pod object
as a kubelet does. The thread that starts a container's process is the one that ends
it, and it never exits while one runs: the processes are tied to it (parent-death
signal).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shardkeeper_dev.node import probes, timing
from shardkeeper_dev.node.clock import rfc3339
from shardkeeper_dev.node.container import ContainerRunner
from shardkeeper_dev.node.events import Events
from shardkeeper_dev.node.expansion import expand
from shardkeeper_dev.node.informer import ObjectsByKey
from shardkeeper_dev.node.ipam import HOST_IP, IpAllocator
from shardkeeper_dev.node.kube import STRATEGIC_MERGE_PATCH, ApiError, Kube, ServerInfo, namespaced
from shardkeeper_dev.node.layout import Layout
from shardkeeper_dev.node.logruns import marker_line
from shardkeeper_dev.node.podcontext import ConfigError, Obj, PodContext
from shardkeeper_dev.node.podenv import Objects, env_references, resolve_env
from shardkeeper_dev.node.process import (
    ContainerProcess,
    LaunchSpec,
    Tools,
    exec_in,
    hostname_for,
)
from shardkeeper_dev.node.process import start as start_process
from shardkeeper_dev.node.provisioner import volume_path
from shardkeeper_dev.node.status import TERMINAL_PHASES, pod_status
from shardkeeper_dev.node.volumes import (
    FILE_KINDS,
    SUPPORTED_KINDS,
    TokenSource,
    claim_name,
    container_mounts,
    token_sources,
    volume_files,
    volume_kind,
    volume_references,
)
from shardkeeper_dev.node.volumewriter import write_volume_files

log = logging.getLogger(__name__)

ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
# how long to wait for processes that were SIGKILLed to be gone
KILL_WAIT = 5.0
# how long a pod may wait for its volumes before the node records an event about it
SETUP_COMPLAINT_AFTER = 10.0


class SetupPending(Exception):
    """The pod cannot be set up yet (its claim is not bound): retried shortly."""


@dataclasses.dataclass(frozen=True)
class NodeServices:
    """What every pod worker shares."""

    kube: Kube
    node_name: str
    layout: Layout
    ips: IpAllocator
    claims: ObjectsByKey
    volumes: ObjectsByKey
    server: ServerInfo
    base_env: Mapping[str, str]
    allocatable: Mapping[str, str]
    tools: Tools
    as_root: bool
    events: Events

    def service_env(self) -> dict[str, str]:
        """The API server's service variables, which every container gets."""
        host, port = self.server.host, self.server.port
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }


def termination_grace(pod: Obj) -> float:
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    if grace is None:
        grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
    return float(timing.DEFAULT_TERMINATION_GRACE if grace is None else grace)


class PodWorker:
    def __init__(
        self, node: NodeServices, pod: dict[str, Any], on_done: Callable[[str], None]
    ) -> None:
        self._node = node
        self._pod = pod
        self._on_done = on_done
        meta = pod["metadata"]
        spec = pod["spec"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self._restart_policy: str = spec.get("restartPolicy", "Always")
        self._init = [
            ContainerRunner(c, init=True, waiting_reason="PodInitializing")
            for c in spec.get("initContainers") or []
        ]
        first_reason = "PodInitializing" if self._init else "ContainerCreating"
        self._containers = [
            ContainerRunner(c, init=False, waiting_reason=first_reason)
            for c in spec.get("containers") or []
        ]
        status = pod.get("status") or {}
        # a pod that ended before this node process started: nothing to run or report
        self._finished_before = status.get("phase") in TERMINAL_PHASES
        self._terminal = self._finished_before
        self._adopt(status)

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self._shutdown = False
        self._sandbox_ready = False
        self._setup_message = ""
        self._setup_retry_at = 0.0
        self._setup_failing_since: float | None = None
        self._setup_attempts = 0
        self._pod_ip = ""
        self._sources: dict[str, str] = {}
        self._tokens: dict[TokenSource, tuple[str, float]] = {}
        self._files_refresh_at = 0.0
        self._start_time = time.time()
        self._last_status: dict[str, Any] | None = None
        self._report_retry_at = 0.0
        self._deadlines: list[float] = []
        self._probe_pool = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix=f"probe-{self.name}"
        )
        self._probe_runs: dict[tuple[str, str], tuple[int, Future[tuple[bool, str]]]] = {}
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.key}", daemon=True)

    def _adopt(self, status: Obj) -> None:
        """A pod bound here before this node process started: its processes died with
        the previous one. Restart counts carry on; finished containers stay finished."""
        for runners, field in (
            (self._init, "initContainerStatuses"),
            (self._containers, "containerStatuses"),
        ):
            previous = {s["name"]: s for s in status.get(field) or []}
            for runner in runners:
                if runner.name in previous:
                    runner.adopt(previous[runner.name], self._restart_policy)

    # --- called from other threads -------------------------------------------------------

    def start(self) -> None:
        self._write_manifest()
        self._thread.start()

    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def gone(self) -> None:
        """The pod object was deleted without us (force deletion): stop at once."""
        with self._lock:
            self._gone = True
        self._wake.set()

    def shutdown(self) -> None:
        """The node is stopping: stop the processes, leave the pod object alone."""
        with self._lock:
            self._shutdown = True
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # --- the worker thread ---------------------------------------------------------------

    @property
    def _runners(self) -> list[ContainerRunner]:
        return [*self._init, *self._containers]

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("pod %s: worker failed", self.key)
        finally:
            self._kill_remaining()
            self._probe_pool.shutdown(wait=False, cancel_futures=True)
            self._on_done(self.uid)

    def _loop(self) -> None:
        while True:
            self._wake.clear()
            now = time.time()
            with self._lock:
                pod, gone, shutdown = self._pod, self._gone, self._shutdown
            self._deadlines = []
            deleting = bool(pod["metadata"].get("deletionTimestamp"))
            self._collect_probes(pod, now)
            for runner in self._runners:
                ended = runner.reap(
                    now, self._restart_policy, allow_restart=not (shutdown or gone or deleting)
                )
                if ended is not None:
                    self._log_line(runner, f"container exited with code {ended.exit_code}")
                    if runner.next_start > now:
                        message = (
                            f"Back-off restarting failed container {runner.name} in pod "
                            f"{self.name}_{self.namespace}({self.uid})"
                        )
                        self._event("Warning", "BackOff", message, runner.name)
            if shutdown:
                grace = min(timing.NODE_SHUTDOWN_GRACE, termination_grace(pod))
                # no events: the API server may be going down with the node
                if self._stop_all(grace, now, announce=False):
                    return
            elif gone:
                grace = min(timing.FORCED_DELETION_GRACE, termination_grace(pod))
                if self._stop_all(grace, now):
                    self._cleanup()
                    return
            elif deleting:
                if self._stop_all(termination_grace(pod), now):
                    self._delete_pod()
                    self._cleanup()
                    return
                self._report(pod, now)
            else:
                if not self._terminal:
                    self._sync(pod, now)
                self._report(pod, now)
            self._wake.wait(self._sleep_time(now))

    def _sleep_time(self, now: float) -> float:
        if not self._deadlines:
            return timing.WORKER_IDLE
        # never spin: a deadline already passed is retried after a short pause
        return min(max(min(self._deadlines) - now, 0.05), timing.WORKER_IDLE)

    def _at(self, when: float | None) -> None:
        if when is not None:
            self._deadlines.append(when)

    def _stop_all(self, grace: float, now: float, *, announce: bool = True) -> bool:
        """Stop every process; True once none is left."""
        for runner in self._runners:
            if runner.process is not None:
                if runner.kill_deadline is None and announce:
                    message = f"Stopping container {runner.name}"
                    self._event("Normal", "Killing", message, runner.name)
                runner.stop(grace, now)
                self._at(runner.kill_deadline)
        return all(runner.process is None for runner in self._runners)

    def _kill_remaining(self) -> None:
        """Last resort (the worker failed): no process may outlive its worker thread."""
        for runner in self._runners:
            if runner.process is not None:
                runner.process.signal(signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT
        for runner in self._runners:
            while runner.process is not None and runner.process.poll() is None:
                if time.monotonic() > deadline:
                    break
                self._wake.wait(0.05)

    # --- running -------------------------------------------------------------------------

    def _sync(self, pod: dict[str, Any], now: float) -> None:
        if not self._sandbox_ready:
            if now >= self._setup_retry_at:
                self._setup(pod, now)
            if not self._sandbox_ready:
                self._at(self._setup_retry_at)
                return
        elif now >= self._files_refresh_at:
            self._refresh_files(pod, now)
        self._at(self._files_refresh_at)
        for runner in self._init:
            if runner.succeeded:
                continue
            if not runner.done and runner.may_start(now):
                self._start(pod, runner, now)
            self._at(runner.next_event())
            return  # init containers run one at a time, in order
        for runner in self._containers:
            if runner.may_start(now):
                self._start(pod, runner, now)
            self._at(runner.next_event())
        self._schedule_probes(now)

    def _setup(self, pod: dict[str, Any], now: float) -> None:
        """The pod's sandbox: its address and its volumes."""
        try:
            if not self._pod_ip:
                self._pod_ip = self._allocate_ip(pod)
            sources = {}
            for volume in pod["spec"].get("volumes") or []:
                sources[volume["name"]] = self._volume_source(pod, volume)
            self._write_file_volumes(pod, now)
        except (SetupPending, ConfigError, ApiError, OSError) as err:
            self._setup_message = str(err)
            self._setup_retry_at = now + timing.setup_retry_delay(self._setup_attempts)
            self._setup_attempts += 1
            for runner in self._runners:
                if runner.process is None and not runner.done and not runner.has_run:
                    runner.hold("ContainerCreating", self._setup_message, self._setup_retry_at)
            log.info("pod %s: not ready to start: %s", self.key, err)
            if self._setup_failing_since is None:
                self._setup_failing_since = now
            elif now - self._setup_failing_since >= SETUP_COMPLAINT_AFTER:
                # a claim normally binds within a second or two: only a wait that lasts
                # is worth an event
                self._event("Warning", "FailedMount", self._setup_message)
            return
        self._sources = sources
        self._sandbox_ready = True
        log.info("pod %s: set up with address %s", self.key, self._pod_ip)

    def _allocate_ip(self, pod: Obj) -> str:
        if pod["spec"].get("hostNetwork"):
            return HOST_IP
        previous = pod.get("status", {}).get("podIP")
        if previous and self._node.ips.reserve(self.uid, previous):
            return str(previous)
        return self._node.ips.allocate(self.uid)

    def _volume_source(self, pod: Obj, volume: Obj) -> str:
        name, kind = volume["name"], volume_kind(volume)
        if kind not in SUPPORTED_KINDS:
            raise ConfigError(f'volume "{name}": {kind} volumes are not supported here')
        claim = claim_name(pod, volume)
        if claim is not None:
            return self._claim_path(claim)
        if kind == "hostPath":
            return self._host_path(volume["hostPath"])
        directory = self._node.layout.volume_dir(self.uid, name)
        directory.mkdir(parents=True, exist_ok=True)
        return str(directory)

    def _claim_path(self, claim_name: str) -> str:
        claim = self._node.claims.get(f"{self.namespace}/{claim_name}")
        if claim is None:
            raise SetupPending(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = claim.get("spec", {}).get("volumeName")
        if not volume_name or claim.get("status", {}).get("phase") != "Bound":
            raise SetupPending(f'persistentvolumeclaim "{claim_name}" is not bound yet')
        volume = self._node.volumes.get(volume_name)
        if volume is None:
            raise SetupPending(f'persistentvolume "{volume_name}" not found')
        path = volume_path(volume)
        if path is None:
            raise ConfigError(f'persistentvolume "{volume_name}" is neither hostPath nor local')
        Path(path).mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _host_path(spec: Obj) -> str:
        path = Path(spec["path"])
        kind = spec.get("type", "")
        if kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        elif kind in ("", "DirectoryOrCreate"):
            if not path.exists():
                path.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise SetupPending(f"hostPath {path} does not exist")
        return str(path)

    def _get(self, resource: str, name: str) -> Obj | None:
        obj: Obj | None = self._node.kube.get(namespaced(resource, self.namespace, name))
        return obj

    def _fetch(self, resource: str, names: frozenset[str]) -> dict[str, Obj | None]:
        return {name: self._get(resource, name) for name in sorted(names)}

    def _write_file_volumes(self, pod: Obj, now: float) -> None:
        volumes = [v for v in pod["spec"].get("volumes") or [] if volume_kind(v) in FILE_KINDS]
        self._files_refresh_at = now + timing.VOLUME_REFRESH
        if not volumes:
            return
        refs = volume_references(pod)
        config_maps = self._fetch("configmaps", refs.config_maps)
        if config_maps.get(ROOT_CA_CONFIG_MAP, {}) is None and self._node.server.ca_pem:
            # published by the controller manager; until it is, the kubeconfig's CA is it
            config_maps[ROOT_CA_CONFIG_MAP] = {"data": {"ca.crt": self._node.server.ca_pem}}
        secrets = self._fetch("secrets", refs.secrets)
        tokens = self._ensure_tokens(pod, now)
        context = self._context(pod)
        for volume in volumes:
            files = volume_files(
                context, volume, config_maps=config_maps, secrets=secrets, tokens=tokens
            )
            write_volume_files(self._node.layout.volume_dir(self.uid, volume["name"]), files)
        for _, refresh_at in self._tokens.values():
            self._files_refresh_at = min(self._files_refresh_at, refresh_at)

    def _ensure_tokens(self, pod: Obj, now: float) -> dict[TokenSource, str]:
        account = pod["spec"].get("serviceAccountName") or "default"
        for source in token_sources(pod):
            current = self._tokens.get(source)
            if current is not None and now < current[1]:
                continue
            request = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [source.audience] if source.audience else [],
                    "expirationSeconds": source.expiration_seconds,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": self.name,
                        "uid": self.uid,
                    },
                },
            }
            path = namespaced("serviceaccounts", self.namespace, account, "token")
            result = self._node.kube.create(path, request)
            life = min(
                source.expiration_seconds * timing.TOKEN_REFRESH_FRACTION, timing.TOKEN_MAX_AGE
            )
            self._tokens[source] = (result["status"]["token"], now + life)
        return {source: token for source, (token, _) in self._tokens.items()}

    def _refresh_files(self, pod: Obj, now: float) -> None:
        try:
            self._write_file_volumes(pod, now)
        except (ConfigError, ApiError, OSError) as err:
            log.warning("pod %s: refreshing volumes: %s", self.key, err)
            self._files_refresh_at = now + timing.SETUP_RETRY * 5

    def _context(self, pod: Obj) -> PodContext:
        return PodContext(pod, self._pod_ip, HOST_IP, self._node.allocatable)

    def _start(self, pod: Obj, runner: ContainerRunner, now: float) -> None:
        if not runner.spec.get("command"):
            message = "the process node runs a container's command and has no image to run"
            runner.hold("CreateContainerError", message, now + timing.SETUP_RETRY)
            self._event("Warning", "Failed", f"Error: {message}", runner.name)
            return
        try:
            launch = self._launch_spec(pod, runner)
        except (ConfigError, ApiError) as err:
            runner.hold("CreateContainerConfigError", str(err), now + timing.SETUP_RETRY)
            self._event("Warning", "Failed", f"Error: {err}", runner.name)
            return
        self._log_line(runner, f"starting container (restart count {runner.restart_count})")
        try:
            process = start_process(
                launch, self._node.tools, self._wake.set, as_root=self._node.as_root
            )
        except OSError as err:
            runner.hold("RunContainerError", str(err), now + timing.SETUP_RETRY)
            self._event("Warning", "Failed", f"Error: {err}", runner.name)
            return
        runner.started(process, dict(launch.env), now)
        self._event("Normal", "Started", f"Started container {runner.name}", runner.name)

    def _launch_spec(self, pod: Obj, runner: ContainerRunner) -> LaunchSpec:
        spec = runner.spec
        refs = env_references(spec)
        config_maps: Objects = self._fetch("configmaps", refs.config_maps)
        secrets: Objects = self._fetch("secrets", refs.secrets)
        env = resolve_env(
            self._context(pod),
            spec,
            config_maps=config_maps,
            secrets=secrets,
            service_env=self._node.service_env(),
        )
        argv = [expand(str(a), env) for a in [*spec.get("command", []), *spec.get("args", [])]]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = container_mounts(spec, volumes, self._sources, env)
        hostname = hostname_for(self.name, pod["spec"].get("hostname"))
        working_dir = spec.get("workingDir") or str(self._node.layout.work_dir(self.uid))
        return LaunchSpec(
            name=f"{self.key}/{runner.name}",
            argv=argv,
            env={**self._node.base_env, "HOSTNAME": hostname, **env},
            working_dir=working_dir,
            mounts=mounts,
            hostname=hostname,
            log_path=self._node.layout.container_log(self.namespace, self.name, runner.name),
        )

    # --- probes --------------------------------------------------------------------------

    def _schedule_probes(self, now: float) -> None:
        for runner in self._containers:
            if runner.process is None:
                continue
            for kind in runner.due_probes(now):
                key = (runner.name, kind)
                if key in self._probe_runs:
                    continue
                spec = runner.probes[kind].spec
                exec_fn = functools.partial(self._exec, runner.process, dict(runner.env))
                future = self._probe_pool.submit(
                    probes.check,
                    spec.handler,
                    pod_ip=self._pod_ip,
                    ports=probes.named_ports(runner.spec),
                    timeout=spec.timeout,
                    exec_fn=exec_fn,
                )
                future.add_done_callback(lambda _: self._wake.set())
                self._probe_runs[key] = (runner.run_id, future)
            for kind, state in runner.probes.items():
                if (runner.name, kind) not in self._probe_runs:
                    self._at(state.next_due)

    def _exec(
        self, process: ContainerProcess, env: dict[str, str], argv: Sequence[str], timeout: float
    ) -> tuple[int, str]:
        return exec_in(process, argv, env, self._node.tools, timeout)

    def _collect_probes(self, pod: Obj, now: float) -> None:
        by_name = {runner.name: runner for runner in self._containers}
        for key, (run_id, future) in list(self._probe_runs.items()):
            if not future.done():
                continue
            del self._probe_runs[key]
            runner = by_name[key[0]]
            state = runner.probes.get(key[1])
            if runner.run_id != run_id or state is None or runner.process is None:
                continue  # a result for a run that has ended
            try:
                ok, message = future.result()
            except Exception as err:
                ok, message = False, repr(err)
            state.record(ok, message, now)
            kind = key[1].removesuffix("Probe").capitalize()
            if not ok:
                self._event("Warning", "Unhealthy", f"{kind} probe failed: {message}", runner.name)
            if key[1] in ("livenessProbe", "startupProbe") and state.failed_out:
                reason = f"{kind} probe failed: {message}"
                self._log_line(runner, f"{reason}; killing the container")
                self._event(
                    "Normal",
                    "Killing",
                    f"Container {runner.name} failed {kind.lower()} probe, will be restarted",
                    runner.name,
                )
                grace = state.spec.termination_grace
                runner.stop(termination_grace(pod) if grace is None else grace, now, reason)

    # --- reporting -----------------------------------------------------------------------

    def _report(self, pod: Obj, now: float) -> None:
        if self._finished_before:
            return
        previous = (
            self._last_status["conditions"]
            if self._last_status is not None
            else (pod.get("status") or {}).get("conditions") or []
        )
        status = pod_status(
            pod,
            [runner.view() for runner in self._init],
            [runner.view() for runner in self._containers],
            sandbox_ready=self._sandbox_ready,
            pod_ip=self._pod_ip,
            host_ip=HOST_IP,
            start_time=self._start_time,
            now=now,
            previous_conditions=previous,
        )
        if status["phase"] in TERMINAL_PHASES and not self._terminal:
            self._terminal = True
            self._node.ips.release(self.uid)
            log.info("pod %s: %s", self.key, status["phase"])
        if status == self._last_status:
            return
        if now < self._report_retry_at:
            self._at(self._report_retry_at)
            return
        body = {"metadata": {"uid": self.uid}, "status": status}
        try:
            self._node.kube.patch(
                namespaced("pods", self.namespace, self.name, "status"), body, STRATEGIC_MERGE_PATCH
            )
        except ApiError as err:
            if err.status in (404, 409):
                # gone, or replaced by a pod of the same name (the uid precondition)
                self.gone()
                return
            log.warning("pod %s: reporting status: %s", self.key, err)
            self._report_retry_at = now + timing.SETUP_RETRY
            self._at(self._report_retry_at)
            return
        self._last_status = status

    def _delete_pod(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            self._node.kube.delete(namespaced("pods", self.namespace, self.name), body)
        except ApiError as err:
            if err.status != 409:  # 409: already replaced by a new pod of the same name
                raise
        log.info("pod %s: stopped and deleted", self.key)

    def _cleanup(self) -> None:
        """The pod is gone for good: its address and per-pod directories go too (its logs
        and its claims' volumes stay)."""
        self._node.ips.release(self.uid)
        self._node.events.forget(self.uid)
        shutil.rmtree(self._node.layout.pod_run_dir(self.uid), ignore_errors=True)

    def _event(self, kind: str, reason: str, message: str, container: str | None = None) -> None:
        with self._lock:
            pod = self._pod
        self._node.events.pod(pod, kind, reason, message, container=container)

    # --- logs ----------------------------------------------------------------------------

    def _log_line(self, runner: ContainerRunner, text: str) -> None:
        path = self._node.layout.container_log(self.namespace, self.name, runner.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(marker_line(rfc3339(time.time()), runner.name, text))

    def _write_manifest(self) -> None:
        """Which containers the pod has, for `shardkeeper dev logs`."""
        annotations = self._pod["metadata"].get("annotations") or {}
        manifest = {
            "uid": self.uid,
            "initContainers": [runner.name for runner in self._init],
            "containers": [runner.name for runner in self._containers],
            "defaultContainer": annotations.get("kubectl.kubernetes.io/default-container")
            or (self._containers[0].name if self._containers else ""),
        }
        path = self._node.layout.pod_manifest(self.namespace, self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2) + "\n")
