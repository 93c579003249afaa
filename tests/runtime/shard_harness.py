"""Running real ``shardkeeper shard`` processes against the real API server and MinIO.

:func:`counting_shard` creates what the operator would have made for a derivation that
counts documents per key: the credentials Secret, a StorageMapping on the test's bucket,
the source and output Collections, the Task and its Shard. :class:`ReplicaProcess` starts
one replica with the pod's environment (docs/shard-pod.md) and kills it by its own PID.
Documents are fed to and read from the collections' journals with the processing core's
own framing (:mod:`shardkeeper.runtime.core.documents`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from prometheus_client import CollectorRegistry
from tests.support.wait import wait_for

from shardkeeper.api.meta import GROUP, VERSION
from shardkeeper.api.shard import shard_name
from shardkeeper.kube.lease import identity_name
from shardkeeper.kube.transport import LightClient
from shardkeeper.runtime.core.documents import encode_line, parse_line, split_lines
from shardkeeper.runtime.core.hints import HintBoard, WriterAddress
from shardkeeper.runtime.shell.admin_http import AdminServer
from shardkeeper.storage.client import make_s3_client
from shardkeeper.storage.fragment import FragmentKind, writer_key
from shardkeeper.storage.journal import Journal
from shardkeeper.storage.layout import collection_journal, object_key, recovery_log_name
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper_dev.environment import EnvInfo

TASK = "counter"
SOURCE = "events"
OUTPUT = "counts"
SECRET = "s3-creds"
MAPPING = "store"
PREFIX = "sk/"
LEASE_DURATION = 3

# per key: one row whose n grows by one with each document; every change is published
COUNT_MIGRATIONS = ("CREATE TABLE counts (key TEXT PRIMARY KEY, n INTEGER NOT NULL)",)
COUNT_SQL = (
    "INSERT INTO counts (key, n) VALUES ($key, 1) "
    "ON CONFLICT (key) DO UPDATE SET n = n + 1 RETURNING key, n"
)


@dataclasses.dataclass(frozen=True)
class ShardSetup:
    namespace: str
    shard: str
    bucket: str
    objects: ObjectStore
    kube_api: Any  # the official client, for the test's own setup and checks
    dev_env: EnvInfo
    runtime_kube: LightClient  # what a replica talks to the API server with

    def get_shard(self) -> dict[str, Any]:
        obj: dict[str, Any] = client.CustomObjectsApi(self.kube_api).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "shards", self.shard
        )
        return obj

    def replicas(self) -> dict[str, dict[str, Any]]:
        """The Shard's status entries, by pod."""
        status = self.get_shard().get("status") or {}
        return {entry["pod"]: entry for entry in status.get("replicas") or []}

    def replica(self, pod: str) -> dict[str, Any]:
        return self.replicas().get(pod) or {}

    def lease_holder(self) -> str | None:
        """The pod whose replica holds the Lease (its identity is the pod's name and a
        per-process suffix, see kube.lease.process_identity)."""
        lease = client.CoordinationV1Api(self.kube_api).read_namespaced_lease(
            self.shard, self.namespace
        )
        holder: str | None = lease.spec.holder_identity
        return None if holder is None else identity_name(holder)

    def journal(self, collection: str, writer: str) -> Journal:
        name = collection_journal(self.namespace, collection, writer)
        return Journal(self.objects, object_key(PREFIX, name))


def apply(kube_api: Any, namespace: str, obj: dict[str, Any]) -> None:
    """Create or update ``obj`` with server-side apply, as kubectl apply --server-side."""
    plural = {"StorageMapping": "storagemappings", "Collection": "collections"}.get(
        obj["kind"], obj["kind"].lower() + "s"
    )
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        plural,
        obj["metadata"]["name"],
        obj,
        field_manager="test",
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def create_secret(kube_api: Any, namespace: str, dev_env: EnvInfo) -> None:
    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET),
            string_data={
                "accessKeyId": dev_env.s3_access_key,
                "secretAccessKey": dev_env.s3_secret_key,
            },
        ),
    )


def storage_mapping(dev_env: EnvInfo, bucket: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StorageMapping",
        "metadata": {"name": MAPPING},
        "spec": {
            "stores": [
                {
                    "bucket": bucket,
                    "prefix": PREFIX,
                    "region": dev_env.s3_region,
                    "endpoint": dev_env.s3_endpoint,
                    "forcePathStyle": True,
                    "credentialsSecretRef": {"name": SECRET},
                }
            ]
        },
    }


def _collection(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Collection",
        "metadata": {"name": name},
        "spec": {"key": ["/key"], "storageMapping": MAPPING},
    }


def counting_task(
    hot_standbys: int,
    *,
    max_txn: str = "200ms",
    min_txn: str = "0s",
    sql: str = COUNT_SQL,
    migrations: tuple[str, ...] = COUNT_MIGRATIONS,
    max_shards: int | None = None,
    shard_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``shard_settings``: more fields of spec.shards (snapshotEvery, pruneEvery, ...)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Task",
        "metadata": {"name": TASK},
        "spec": {
            "type": "derivation",
            "storageMapping": MAPPING,
            "sources": [SOURCE],
            "outputs": [OUTPUT],
            "derive": {
                "sql": {
                    "migrations": list(migrations),
                    "lambdas": {SOURCE: sql},
                }
            },
            "shards": {
                "hotStandbys": hot_standbys,
                "minTxnDuration": min_txn,
                "maxTxnDuration": max_txn,
                **({"scaling": {"maxShards": max_shards}} if max_shards else {}),
                **(shard_settings or {}),
            },
        },
    }


def shard_object(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Shard",
        "metadata": {"name": shard_name(TASK, 0, 0)},
        "spec": {
            "task": TASK,
            "keyBegin": "00000000",
            "keyEnd": "ffffffff",
            "rClockBegin": "00000000",
            "rClockEnd": "ffffffff",
            "recoveryLog": recovery_log_name(namespace, TASK, 0, 0),
        },
    }


def counting_shard(
    kube_api: Any,
    dev_env: EnvInfo,
    namespace: str,
    bucket: str,
    *,
    hot_standbys: int = 0,
    secret: bool = True,
    shard: bool = True,
    **task: Any,
) -> ShardSetup:
    """Everything the operator would create for a derivation counting ``events`` by key
    (without the Shard, ``shard=False``, when an operator runs and creates it)."""
    if secret:
        create_secret(kube_api, namespace, dev_env)
    apply(kube_api, namespace, storage_mapping(dev_env, bucket))
    apply(kube_api, namespace, _collection(SOURCE))
    apply(kube_api, namespace, _collection(OUTPUT))
    apply(kube_api, namespace, counting_task(hot_standbys, **task))
    if shard:
        apply(kube_api, namespace, shard_object(namespace))
    s3 = make_s3_client(
        endpoint=dev_env.s3_endpoint,
        access_key=dev_env.s3_access_key,
        secret_key=dev_env.s3_secret_key,
        region=dev_env.s3_region,
    )
    return ShardSetup(
        namespace,
        shard_name(TASK, 0, 0),
        bucket,
        ObjectStore(s3, bucket),
        kube_api,
        dev_env,
        LightClient.from_kubeconfig(dev_env.kubeconfig),
    )


# --- the operator's writes of a split, by hand ----------------------------------------------


def child_shard(
    namespace: str, parent: dict[str, Any], pivot: int, by: str = "key"
) -> dict[str, Any]:
    """The child Shard the operator's Children step creates: ``[pivot, end]`` of the
    parent's key (or r-clock) range, the parent's other range, built from its log."""
    spec = parent["spec"]
    keys = (f"{pivot:08x}", spec["keyEnd"]) if by == "key" else (spec["keyBegin"], spec["keyEnd"])
    clocks = (
        (f"{pivot:08x}", spec["rClockEnd"])
        if by == "rClock"
        else (spec["rClockBegin"], spec["rClockEnd"])
    )
    key_begin, clock_begin = int(keys[0], 16), int(clocks[0], 16)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Shard",
        "metadata": {"name": shard_name(TASK, key_begin, clock_begin)},
        "spec": {
            "task": TASK,
            "keyBegin": keys[0],
            "keyEnd": keys[1],
            "rClockBegin": clocks[0],
            "rClockEnd": clocks[1],
            "recoveryLog": recovery_log_name(namespace, TASK, key_begin, clock_begin),
            "splitSource": parent["metadata"]["name"],
        },
    }


def patch_spec(setup: ShardSetup, name: str, spec: dict[str, Any]) -> None:
    """A merge patch of Shard ``name``'s spec (``None`` removes a field)."""
    client.CustomObjectsApi(setup.kube_api).patch_namespaced_custom_object(
        GROUP, VERSION, setup.namespace, "shards", name, {"spec": spec}
    )


def caught_up(setup: ShardSetup, pod: str, within: int = 1 << 20) -> bool:
    """The replica reports a lag, and it is under ``within`` bytes (a lag of 0 counts)."""
    lag = setup.replica(pod).get("lag")
    return lag is not None and lag < within


# --- feeding and reading collections ----------------------------------------------------------


class Feeder:
    """Appends documents to a journal of the source collection, as a writing shard would."""

    def __init__(self, setup: ShardSetup, writer: str = "feeder") -> None:
        self.journal = setup.journal(SOURCE, writer)
        self.writer = self.journal.writer(1, self.journal.head())
        self.sent: collections.Counter[str] = collections.Counter()

    def send(self, keys: list[str], **fields: Any) -> None:
        """One append of a document per key; ``fields`` go into each of them."""
        payload = b"".join(
            encode_line({"key": key, "seq": self.sent[key] + i, **fields})
            for i, key in enumerate(keys)
        )
        self.writer.append(payload)
        self.sent.update(keys)

    @contextlib.contextmanager
    def sending(self, *batches: list[str], every: float = 0.1) -> Iterator[None]:
        """Send ``batches`` in turn every ``every`` seconds from a thread, until the block
        ends, however it ends (a thread left running would write into the next test)."""
        stop = threading.Event()

        def feed() -> None:
            while not stop.is_set():
                for keys in batches:
                    self.send(keys)
                stop.wait(every)

        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)


class HintingFeeder(Feeder):
    """A Feeder that, as a writing shard does, serves hints of its journal on an admin
    endpoint of its own (on ``ip``) and names it in the journal's writer object."""

    def __init__(self, setup: ShardSetup, ip: str, writer: str = "feeder") -> None:
        super().__init__(setup, writer)
        self.hints_given = 0
        self.board = HintBoard(on_hint=self._given)
        self.server = AdminServer(
            ip,
            free_port(ip),
            healthy=lambda: (True, "ok"),
            ready=lambda: (True, "ok"),
            registry=CollectorRegistry(),
            hints=self.board,
        )
        self.server.start()
        host, port = self.server.address
        self.board.serve({self.journal.prefix: self.writer.head})
        setup.objects.put(writer_key(self.journal.prefix), WriterAddress(host, port).encode())

    def _given(self) -> None:
        self.hints_given += 1

    def send(self, keys: list[str], **fields: Any) -> None:
        super().send(keys, **fields)
        self.board.serve({self.journal.prefix: self.writer.head})

    def close(self) -> None:
        self.server.stop()


def output_documents(
    setup: ShardSetup, writer: str | None = None
) -> list[tuple[int, int, dict[str, Any]]]:
    """``(begin, end, document)`` of every document of the output journal that ``writer``
    (the setup's shard unless named) writes, in order."""
    found = []
    for fragment in setup.journal(OUTPUT, writer or setup.shard).read(0):
        if fragment.kind is not FragmentKind.DATA:
            continue
        for line in split_lines(fragment.payload, fragment.begin):
            found.append((line.begin, line.end, parse_line(line.data)))
    return found


def check_counts_exact(setup: ShardSetup, sent: collections.Counter[str]) -> None:
    """Each key's outputs count 1, 2, ... up to the documents sent for it, each once, in a
    journal whose documents sit end to end."""
    documents = output_documents(setup)
    previous_end = documents[0][0] if documents else 0
    seen: dict[str, list[int]] = collections.defaultdict(list)
    for begin, end, document in documents:
        assert begin == previous_end, f"gap or overlap at offset {begin} (expected {previous_end})"
        previous_end = end
        seen[document["key"]].append(document["n"])
    uuids = [d["_meta"]["uuid"] for _, _, d in documents]
    assert len(set(uuids)) == len(uuids), "a document was written twice"
    assert set(seen) == set(sent), f"keys differ: {set(seen) ^ set(sent)}"
    for key, counts in seen.items():
        assert counts == list(range(1, sent[key] + 1)), (
            f"key {key}: {counts[:10]}... of {sent[key]}"
        )


# --- replica processes --------------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def pod_network() -> str:
    """A /24 of loopback addresses for one test's replicas, away from 127.0.0.0/16."""
    return f"127.{random.randint(100, 250)}.{random.randint(1, 254)}"


class ReplicaProcess:
    """One replica: ``shardkeeper shard`` with the pod's environment, run by hand."""

    def __init__(self, setup: ShardSetup, pod: str, ip: str, base: Path, **env: str) -> None:
        self.setup = setup
        self.pod = pod
        self.ip = ip
        self.port = free_port(ip)
        self.data_dir = base / pod / "data"
        self.log_path = base / pod / "shard.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
            "KUBECONFIG": str(setup.dev_env.kubeconfig),
            "SHARDKEEPER_SHARD": setup.shard,
            "POD_NAME": pod,
            "POD_NAMESPACE": setup.namespace,
            "POD_IP": ip,
            "SHARDKEEPER_DATA_DIR": str(self.data_dir),
            "SHARDKEEPER_ADMIN_PORT": str(self.port),
            "SHARDKEEPER_LEASE_DURATION": str(LEASE_DURATION),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardkeeper", "shard"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Test teardown: end the process however it is (stopped, running, gone)."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            os.kill(self.pid, signal.SIGCONT)
            self.wait(10)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.ip}:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def state(self) -> str | None:
        state: str | None = self.setup.replica(self.pod).get("state")
        return state

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            assert self.running(), f"{self.pod} exited with {self.proc and self.proc.returncode}"
            entry = self.setup.replica(self.pod)
            return entry if entry.get("state") == state else None

        return wait_for(reached, timeout=timeout, what=f"{self.pod} to report {state}")


def roles(*replicas: ReplicaProcess) -> tuple[ReplicaProcess, ReplicaProcess] | None:
    """``(primary, a standby)`` once one replica reports PRIMARY and another STANDBY."""
    states = {r.pod: r.state() for r in replicas}
    primaries = [r for r in replicas if states[r.pod] == "PRIMARY"]
    standbys = [r for r in replicas if states[r.pod] == "STANDBY"]
    return (primaries[0], standbys[0]) if len(primaries) == 1 and standbys else None


def committed_after(replica: ReplicaProcess, moment: float) -> float | None:
    """When this replica, as PRIMARY, last committed, if that was after ``moment``
    (a wall-clock time): the status carries the commit's own time, so the figure does
    not depend on how soon the status was applied."""
    entry = replica.setup.replica(replica.pod)
    when = (entry.get("lastCommit") or {}).get("time")
    if entry.get("state") != "PRIMARY" or when is None:
        return None
    at = datetime.fromisoformat(when).timestamp()
    return at if at > moment else None


def wait_outputs(setup: ShardSetup, total: int, timeout: float) -> None:
    wait_for(
        lambda: len(output_documents(setup)) >= total,
        timeout=timeout,
        what=f"{total} output documents",
        interval=0.5,
    )
