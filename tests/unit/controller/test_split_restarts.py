"""The operator killed right after each write that a split makes, over the fake API server:
a new operator, with nothing of the old one but what the API server holds, resumes the
split where the old one stopped.

Each operator process is driven by its watch events alone (its own triggers over the
changes it has not seen yet; a new process lists everything first), with no timers, so a
step whose next write no event asks for stalls the test. The kill points are every write
the operator makes while the split runs (the parent's, the child's and the Task's
reconciles: workload applies, status writes, the split's spec writes), so the
steps that make several writes (Plan: create the child, set splitTargets, enter
Children; HandOff: narrow, enter Finish; Finish: clear splitSource, clear the request,
enter Done; Abort: delete the child, clear the request, enter Aborted) are cut between
every two of them. A kill before a write lands leaves the API server as a kill right
after the one before, so it needs no case of its own. The child's status is faked as the
runtime reports it: STANDBY tailing the parent's log once its workload exists, PRIMARY
once the parent is narrowed.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from tests.support.fake_api import FakeKube, Request, Watch
from tests.unit.controller.seeded import NAMESPACE, SHARD, Cluster, run
from tests.unit.controller.test_split_io import CHILD, Clock, ask, live, running_parent, split_of

from shardkeeper.controller.engine import events
from shardkeeper.controller.engine.kube import AsyncKube
from shardkeeper.controller.engine.queue import Key, WorkQueue
from shardkeeper.controller.engine.triggers import Seen, WatchEvent, keys_for
from shardkeeper.controller.reconcilers.base import Deps
from shardkeeper.controller.reconcilers.shard import ShardReconciler
from shardkeeper.controller.reconcilers.task import TaskReconciler

STEPS = ["Plan", "Children", "CatchUp", "HandOff", "Finish", "Done"]
STANDBY = {"pod": f"{CHILD}-0", "state": "STANDBY", "recoveryLogHead": 10, "lag": 0}
PRIMARY = {"pod": f"{CHILD}-0", "state": "PRIMARY"}


class Killed(BaseException):
    """The operator's process ends here (kill -9): nothing after it runs."""


class DyingKube:
    """The API server as one operator process sees it: its ``lives``-th write lands, and
    the process dies before it sees the answer. Writes refused by the API server do not
    count; a dead process writes nothing. Each landed write is logged in ``landed``."""

    def __init__(self, kube: FakeKube, lives: int | None) -> None:
        self.kube = kube
        self.lives = lives
        self.dead = False
        self.landed: list[Request] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)

    async def _write(self, request: Request, landing: Callable[[], Awaitable[Any]]) -> Any:
        if self.dead:
            raise Killed(request)
        result = await landing()
        self.landed.append(request)
        if self.lives is not None and len(self.landed) == self.lives:
            self.dead = True
            raise Killed(request)
        return result

    async def apply(self, obj: Mapping[str, Any], *, subresource: str = "") -> Any:
        verb = "apply/status" if subresource == "status" else "apply"
        request = Request(verb, obj["kind"], obj["metadata"]["name"])
        return await self._write(request, lambda: self.kube.apply(obj, subresource=subresource))

    async def create(self, obj: Mapping[str, Any]) -> Any:
        request = Request("create", obj["kind"], obj["metadata"]["name"])
        return await self._write(request, lambda: self.kube.create(obj))

    async def json_patch(
        self, api_version: str, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> Any:
        def landing() -> Awaitable[Any]:
            return self.kube.json_patch(api_version, kind, namespace, name, ops)

        return await self._write(Request("patch", kind, name), landing)

    async def replace(self, obj: Mapping[str, Any]) -> Any:
        request = Request("update", obj["kind"], obj["metadata"]["name"])
        return await self._write(request, lambda: self.kube.replace(obj))

    async def delete(
        self, api_version: str, kind: str, namespace: str, name: str, **kw: Any
    ) -> Any:
        def landing() -> Awaitable[Any]:
            return self.kube.delete(api_version, kind, namespace, name, **kw)

        return await self._write(Request("delete", kind, name), landing)


class Watches:
    """An operator process's watches: every change of a watched kind since the last
    :meth:`deliver` is an event, whose keys (the operator's own triggers) are queued. A
    new process lists everything first, so it queues every object once. Timers are left
    out on purpose: a split must be carried on by events alone."""

    KINDS = ("Task", "Shard", "StatefulSet", "StorageMapping", "Collection", "Secret")

    def __init__(self) -> None:
        self.seen = Seen()
        self.bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self.queue: list[Key] = []

    def deliver(self, cluster: Cluster) -> None:
        cluster.sync()  # the cache is the watches' index: it holds what the events carry
        current = {
            (kind, obj["metadata"]["name"]): obj
            for kind in self.KINDS
            for obj in cluster.kube.of_kind(kind)
        }
        happened = []
        for key, obj in current.items():
            before = self.bodies.get(key)
            if (
                before is None
                or before["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]
            ):
                happened.append((key, "MODIFIED" if before is not None else None, obj))
        happened += [(k, "DELETED", b) for k, b in self.bodies.items() if k not in current]
        self.bodies = copy.deepcopy(current)
        for (kind, name), type_, body in happened:
            event = WatchEvent(kind, type_, NAMESPACE, name, body)
            for queued in keys_for(cluster.watch.cache, self.seen, event):
                if queued not in self.queue:
                    self.queue.append(queued)


class Process:
    """One operator process: what it writes (and when it dies) and what it watches."""

    def __init__(self, kube: DyingKube) -> None:
        self.kube = kube
        self.watches = Watches()

    @property
    def dead(self) -> bool:
        return self.kube.dead

    @property
    def landed(self) -> list[Request]:
        return self.kube.landed


def start_operator(cluster: Cluster, clock: Clock, lives: int | None = None) -> Process:
    """A new operator process over the same API server: its own cache listed afresh, its
    own queue, recorder and reconcilers (no memory of earlier passes)."""
    kube = DyingKube(cluster.kube, lives)
    cluster.watch = Watch(cluster.kube)
    cluster.recorder = events.Recorder(cluster.kube, "test-operator")
    cluster.deps = Deps(
        cache=cluster.watch.cache,
        kube=cast(AsyncKube, kube),
        recorder=cluster.recorder,
        queue=WorkQueue(),
        defaults=cluster.deps.defaults,
        splits=cluster.deps.splits,
    )
    cluster.tasks = TaskReconciler(cluster.deps)
    cluster.shards = ShardReconciler(cluster.deps)
    cluster.shards.splits.clock = clock
    return Process(kube)


def report(cluster: Cluster, lag: int = 0) -> None:
    """The child's replicas report as the runtime's would: STANDBY in the parent's log
    (``lag`` bytes behind) once its workload exists, PRIMARY once the parent has been
    narrowed (it forks at the parent's narrowed fence)."""
    child = cluster.kube.find("Shard", NAMESPACE, CHILD)
    if child is None or cluster.kube.find("StatefulSet", NAMESPACE, CHILD) is None:
        return
    narrowed = cluster.find("Shard", SHARD)["spec"]["keyEnd"] == "7fffffff"
    entry = PRIMARY if narrowed else {**STANDBY, "lag": lag}
    if child.get("status", {}).get("replicas") != [entry]:
        live(cluster, CHILD, entry, primary=f"{CHILD}-0" if narrowed else None)


async def drive(
    cluster: Cluster, process: Process, until: str, lag: int = 0, passes: int = 300
) -> None:
    """Reconcile what the operator's watch events queue, one key at a time, the runtime
    reporting in between, until nothing is queued; the split must then be at ``until``
    (nothing else would move it on)."""
    for _ in range(passes):
        report(cluster, lag)
        process.watches.deliver(cluster)
        if not process.watches.queue:
            step = split_of(cluster).get("step")
            assert step == until, f"stalled at {step}: no event queues what it waits for"
            return
        key = process.watches.queue.pop(0)
        if key.kind == "Shard":
            await cluster.reconcile_shard(key.name)
        elif key.kind == "Task":
            await cluster.reconcile_task(key.name)
    raise AssertionError(f"the split did not settle at {until}: {split_of(cluster)}")


async def split_asked() -> tuple[Cluster, Clock]:
    cluster = Cluster()
    clock = await running_parent(cluster)
    ask(cluster)
    return cluster, clock


def spec_writes(requests: list[Request]) -> list[Request]:
    """The split's writes of the parent's and the child's specs (and the child itself)."""
    return [r for r in requests if r.kind == "Shard" and r.verb not in ("apply/status", "get")]


def stepped(cluster: Cluster) -> list[str]:
    """The steps that the operator's status writes of the parent entered, in order."""
    entered: list[str] = []
    for request, body in cluster.kube.sent:
        if request != Request("apply/status", "Shard", SHARD):
            continue
        step = (body["status"].get("split") or {}).get("step")
        if step is not None and (not entered or entered[-1] != step):
            entered.append(step)
    return entered


async def killed_after(lives: int) -> tuple[Cluster, Request, list[Request]]:
    """A split with its operator killed right after its ``lives``-th write and a new one
    started; the write it died after, and the split's spec writes of both."""
    cluster, clock = await split_asked()
    cluster.kube.clear_log()
    first = start_operator(cluster, clock, lives)
    with contextlib.suppress(Killed):
        await drive(cluster, first, "Done")
    assert first.dead, f"the operator made fewer than {lives} writes"
    await drive(cluster, start_operator(cluster, clock), "Done")
    return cluster, first.landed[-1], spec_writes(cluster.kube.writes(events=False))


def test_a_split_resumes_exactly_where_a_killed_operator_stopped_at_every_write() -> None:
    async def body() -> None:
        cluster, clock = await split_asked()
        cluster.kube.clear_log()
        whole = start_operator(cluster, clock)
        await drive(cluster, whole, "Done")
        baseline = spec_writes(whole.landed)
        assert baseline == [
            Request("create", "Shard", CHILD),
            Request("patch", "Shard", SHARD),  # splitTargets
            Request("patch", "Shard", SHARD),  # keyEnd narrowed
            Request("patch", "Shard", CHILD),  # splitSource removed
            Request("patch", "Shard", SHARD),  # splitTargets and spec.split removed
        ]
        assert stepped(cluster) == STEPS
        kill_points = len(whole.landed)

        for lives in range(1, kill_points + 1):
            cluster, died_after, writes = await killed_after(lives)
            where = f"killed after write {lives} ({died_after})"
            split = split_of(cluster)
            assert split["step"] == "Done", where
            # every step entered once, in order: none repeated, none skipped
            assert [s["step"] for s in split["steps"]] == STEPS, where
            assert stepped(cluster) == STEPS, where
            # nothing written twice: the child created once, the parent narrowed once
            assert writes == baseline, where
            assert len(cluster.kube.of_kind("Shard")) == 2, where
            parent, child = cluster.find("Shard", SHARD), cluster.find("Shard", CHILD)
            assert (parent["spec"]["keyBegin"], parent["spec"]["keyEnd"]) == (
                "00000000",
                "7fffffff",
            ), where
            assert (child["spec"]["keyBegin"], child["spec"]["keyEnd"]) == (
                "80000000",
                "ffffffff",
            ), where
            for field in ("split", "splitTargets", "splitSource"):
                assert field not in parent["spec"], where
                assert field not in child["spec"], where
            assert len(cluster.kube.of_kind("StatefulSet")) == 2, where

    run(body)


def test_an_abort_resumes_exactly_where_a_killed_operator_stopped_at_every_write() -> None:
    async def body() -> None:
        async def to_abort(lives: int | None) -> tuple[Cluster, Process]:
            cluster = Cluster()
            clock = await running_parent(cluster)
            cluster.shards.splits.clock = clock
            ask(cluster)
            # the child tails the parent's log, far behind: the parent is not narrowed
            await drive(cluster, start_operator(cluster, clock), "CatchUp", lag=50 << 20)
            ask(cluster, by=None)
            cluster.kube.clear_log()
            operator = start_operator(cluster, clock, lives)
            try:
                await drive(cluster, operator, "Aborted", lag=50 << 20)
            except Killed:
                assert lives is not None
                await drive(cluster, start_operator(cluster, clock), "Aborted", lag=50 << 20)
            return cluster, operator

        cluster, whole = await to_abort(None)
        baseline = spec_writes(whole.landed)
        assert baseline == [
            Request("delete", "Shard", CHILD),
            Request("patch", "Shard", SHARD),  # splitTargets removed
        ]
        for lives in range(1, len(whole.landed) + 1):
            cluster, first = await to_abort(lives)
            where = f"killed after write {lives} ({first.landed[-1]})"
            assert first.dead, where
            split = split_of(cluster)
            assert split["step"] == "Aborted", where
            assert [s["step"] for s in split["steps"]][-2:] == ["Abort", "Aborted"], where
            assert spec_writes(cluster.kube.writes(events=False)) == baseline, where
            parent = cluster.find("Shard", SHARD)
            assert parent["spec"]["keyEnd"] == "ffffffff", where
            assert "splitTargets" not in parent["spec"], where
            assert cluster.kube.find("Shard", NAMESPACE, CHILD) is None, where
            assert cluster.kube.find("StatefulSet", NAMESPACE, CHILD) is None, where

    run(body)
