"""Building blocks of the processing-core tests: API objects made in the test, an object
store on a fresh bucket, and shard incarnations that run a Processor in a thread.

No Kubernetes: the ShardContext is built from model objects, as the shell would build it
from the API server.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.storage.storage_helpers import client_for

from shardkeeper.api.collection import Collection
from shardkeeper.api.meta import SecretKeyRef
from shardkeeper.api.shard import Shard, shard_name
from shardkeeper.api.task import Task
from shardkeeper.runtime.core.faults import NO_RUNTIME_FAULTS, RuntimeFaultPoint, RuntimeFaults
from shardkeeper.runtime.core.metrics import RuntimeMetrics
from shardkeeper.runtime.core.processor import (
    DOCUMENT_TIME_LIMIT,
    Processor,
    ProcessorOptions,
    ShardContext,
    TransactionSummary,
)
from shardkeeper.runtime.core.sources import ReaderOptions
from shardkeeper.runtime.core.timer import MONOTONIC, StopSignal, Timer
from shardkeeper.runtime.shell.collectionio import (
    CollectionWriter,
    JournalDocument,
    read_collection,
)
from shardkeeper.storage.faults import NO_FAULTS, FaultPoint, Faults
from shardkeeper.storage.layout import object_key, recovery_log_name
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.retry import PollPolicy
from shardkeeper.storage.store import ShardStore, StoreOptions
from shardkeeper_dev.environment import EnvInfo

NAMESPACE = "core"
PREFIX = "data/"
STORE_OPTIONS = StoreOptions(background_snapshots=False)
# tests poll tightly: nothing in them may wait on a slow poll
FAST_READS = ReaderOptions(poll=PollPolicy(min_delay=0.005, max_delay=0.05), discover_every=0.2)


@pytest.fixture
def objects(dev_env: EnvInfo, bucket: str) -> ObjectStore:
    return ObjectStore(client_for(dev_env), bucket)


def collection(
    name: str, key: Sequence[str] = ("/id",), schema: Mapping[str, Any] | None = None
) -> Collection:
    spec: dict[str, Any] = {"key": list(key), "storageMapping": "store"}
    if schema is not None:
        spec["schema"] = dict(schema)
    return Collection.model_validate({"metadata": {"name": name}, "spec": spec})


def task(name: str, spec: Mapping[str, Any]) -> Task:
    return Task.model_validate(
        {
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"storageMapping": "store", **spec},
        }
    )


def shard_for(
    task_name: str,
    *,
    key: tuple[int, int] = (0, 0xFFFFFFFF),
    r_clock: tuple[int, int] = (0, 0xFFFFFFFF),
) -> Shard:
    return Shard.model_validate(
        {
            "metadata": {"name": shard_name(task_name, key[0], r_clock[0]), "namespace": NAMESPACE},
            "spec": {
                "task": task_name,
                "keyBegin": key[0],
                "keyEnd": key[1],
                "rClockBegin": r_clock[0],
                "rClockEnd": r_clock[1],
                "recoveryLog": recovery_log_name(NAMESPACE, task_name, key[0], r_clock[0]),
            },
        }
    )


def no_secrets(ref: SecretKeyRef) -> str:
    raise AssertionError(f"this test resolves no secret, yet {ref} was asked for")


def context(
    objects: ObjectStore,
    task_: Task,
    shard: Shard,
    collections: Sequence[Collection],
    *,
    resolve_secret: Callable[[SecretKeyRef], str] = no_secrets,
    bind_host: str = "127.0.0.1",
) -> ShardContext:
    return ShardContext(
        namespace=NAMESPACE,
        task=task_,
        shard=shard,
        collections={c.metadata.name or "": c for c in collections},
        objects=objects,
        prefix=PREFIX,
        resolve_secret=resolve_secret,
        bind_host=bind_host,
    )


def writer(
    objects: ObjectStore, collection_name: str, name: str = "source-writer"
) -> CollectionWriter:
    return CollectionWriter(
        objects, PREFIX, namespace=NAMESPACE, collection=collection_name, writer=name
    )


def read(objects: ObjectStore, collection_name: str) -> list[JournalDocument]:
    return read_collection(objects, PREFIX, NAMESPACE, collection_name)


class Crash(BaseException):
    """Stands for the process dying: nothing in the runtime catches it."""


@dataclasses.dataclass
class Tripwire:
    """Fault hook (runtime or storage points) that dies at ``point`` once armed."""

    point: RuntimeFaultPoint | FaultPoint
    armed: bool = False
    tripped: bool = False

    def reached(self, point: Any) -> None:
        if self.armed and point is self.point:
            self.armed = False
            self.tripped = True
            raise Crash(self.point.value)


@dataclasses.dataclass
class Incarnation:
    """One run of a shard's primary: its store, processor and thread."""

    store: ShardStore
    processor: Processor
    metrics: RuntimeMetrics
    registry: CollectorRegistry
    stop: StopSignal
    thread: threading.Thread
    error: list[BaseException]
    commits: list[TransactionSummary]

    def finish(self) -> BaseException | None:
        """Ask it to stop and wait; the error it ended with, if any."""
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the processor did not stop within 60s"
        return self.error[0] if self.error else None

    def ended(self) -> BaseException | None:
        """Wait for it to end by itself (a failure or a crash); the error it ended with."""
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the processor did not end within 60s"
        return self.error[0] if self.error else None


class ShardRunner:
    """Runs incarnations of one shard, each with a newer epoch, on fresh or kept volumes."""

    def __init__(self, tmp_path: Path, ctx: ShardContext) -> None:
        self.tmp_path = tmp_path
        self.ctx = ctx
        self.log = RecoveryLog(ctx.objects, object_key(ctx.prefix, ctx.shard.spec.recovery_log))
        self._epochs = itertools.count(1)
        self._volumes = itertools.count()

    def new_volume(self) -> Path:
        return self.tmp_path / f"volume-{next(self._volumes)}"

    def start(
        self,
        *,
        faults: RuntimeFaults = NO_RUNTIME_FAULTS,
        log_faults: Faults = NO_FAULTS,
        volume: Path | None = None,
        ctx: ShardContext | None = None,
        document_time_limit: float = DOCUMENT_TIME_LIMIT,
        timer: Timer = MONOTONIC,
        store_options: StoreOptions = STORE_OPTIONS,
    ) -> Incarnation:
        log = RecoveryLog(self.log.store, self.log.name, faults=log_faults)
        store = ShardStore.open(
            volume or self.new_volume(), log, next(self._epochs), options=store_options
        )
        store.fence()
        registry = CollectorRegistry()
        metrics = RuntimeMetrics(registry, self.ctx.shard_name)
        commits: list[TransactionSummary] = []
        options = ProcessorOptions(
            reader=FAST_READS,
            faults=faults,
            on_commit=commits.append,
            document_time_limit=document_time_limit,
            timer=timer,
        )
        processor = Processor(ctx or self.ctx, store, metrics, options)
        stop = StopSignal()
        error: list[BaseException] = []

        def run() -> None:
            try:
                processor.run(stop)
            except BaseException as exc:
                error.append(exc)
            finally:
                # as the shell does: the store closes when its primary's run ends
                store.close()

        thread = threading.Thread(target=run, name="processor", daemon=True)
        thread.start()
        return Incarnation(store, processor, metrics, registry, stop, thread, error, commits)


def documents_of(found: Sequence[JournalDocument]) -> list[dict[str, Any]]:
    """The documents without their ``_meta``."""
    return [{k: v for k, v in d.document.items() if k != "_meta"} for d in found]
