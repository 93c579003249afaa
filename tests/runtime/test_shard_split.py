"""The runtime's half of a split, with real shard processes, the real API server and
MinIO, and the operator's writes made by hand: a child that a split builds follows its
parent's log while the parent commits; when the parent's Shard narrows, the parent fences
its log claiming the lower half and goes on, the child forks at exactly that fence and
becomes PRIMARY of its own log; documents keep arriving throughout, and every key's
count ends exact, each count written once, across both output journals."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import (
    PREFIX,
    TASK,
    Feeder,
    ReplicaProcess,
    ShardSetup,
    apply,
    caught_up,
    child_shard,
    output_documents,
    patch_spec,
)
from tests.support.wait import wait_for

from shardkeeper.api.shard import shard_name
from shardkeeper.runtime.core.routing import Ranges, key_hash, pack_key
from shardkeeper.storage.layout import object_key, recovery_log_name, task_recovery_dir
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper_dev.ownership import check_ownership

PIVOT = 0x80000000
KEYS = [f"key-{i:02d}" for i in range(40)]


def upper(key: str) -> bool:
    return key_hash(pack_key([key])) >= PIVOT


def start_child(
    setup: ShardSetup, spawn: Spawn, spec: dict[str, Any]
) -> tuple[ShardSetup, ReplicaProcess, dict[str, Any]]:
    """The operator's Children step by hand: the child Shard, the parent's splitTargets,
    and the child's replica, once it follows the parent's log (its status entry)."""
    child = spec["metadata"]["name"]
    apply(setup.kube_api, setup.namespace, spec)
    patch_spec(setup, setup.shard, {"splitTargets": [child]})
    child_setup = dataclasses.replace(setup, shard=child)
    replica = spawn(child_setup, "child-0")
    return child_setup, replica, replica.wait_state("STANDBY", timeout=60)


def wait_all_counted(setup: ShardSetup, writers: tuple[str, ...], total: int) -> None:
    wait_for(
        lambda: sum(len(output_documents(setup, w)) for w in writers) >= total,
        timeout=90,
        what="every document counted",
        interval=0.5,
    )


def check_split_counts(
    setup: ShardSetup, parent: str, child: str, sent: collections.Counter[str]
) -> None:
    """Each journal end to end; each document once; per key, the counts 1..n in order,
    the parent's before the child's, and after the hand-off only the owner writes."""
    per_key: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    uuids: list[str] = []
    for writer in (parent, child):
        documents = output_documents(setup, writer)
        end = documents[0][0] if documents else 0
        for begin, stop, document in documents:
            assert begin == end, f"{writer}: gap or overlap at {begin} (expected {end})"
            end = stop
            uuids.append(document["_meta"]["uuid"])
            per_key[document["key"]].append((writer, document["n"]))
    assert len(set(uuids)) == len(uuids), "a document was written twice"
    assert set(per_key) == set(sent)
    for key, entries in per_key.items():
        counts = [n for _, n in entries]
        assert counts == list(range(1, sent[key] + 1)), f"{key}: {entries}"
        if not upper(key):
            assert {w for w, _ in entries} == {parent}, f"{key} (lower half): {entries}"


def test_a_child_takes_over_the_upper_half_at_the_parents_fence(
    new_shard: NewShard, spawn: Spawn
) -> None:
    setup = new_shard(hot_standbys=0, max_txn="300ms")
    parent = setup.shard
    child = shard_name(TASK, PIVOT, 0)
    assert {upper(k) for k in KEYS} == {True, False}
    feeder = Feeder(setup)
    parent_replica = spawn(setup, "parent-0")
    parent_replica.wait_state("PRIMARY", timeout=60)
    with feeder.sending(KEYS[:20], KEYS[20:]):
        wait_for(
            lambda: len(output_documents(setup, parent)) > 200, timeout=60, what="parent outputs"
        )
        # the operator's Children step: the child Shard, and the parent's splitTargets
        child_setup, child_replica, following = start_child(
            setup, spawn, child_shard(setup.namespace, setup.get_shard(), PIVOT)
        )
        assert following["message"].startswith("split from "), following
        wait_for(
            lambda: caught_up(child_setup, "child-0"), timeout=60, what="the child to catch up"
        )
        # it must not have taken its own log over before the hand-off
        own = RecoveryLog(
            setup.objects, object_key(PREFIX, recovery_log_name(setup.namespace, TASK, PIVOT, 0))
        )
        assert own.journal.list_fragments() == []

        # the operator's HandOff step: narrow the parent
        patch_spec(setup, parent, {"keyEnd": f"{PIVOT - 1:08x}"})
        child_replica.wait_state("PRIMARY", timeout=60)
        wait_for(
            lambda: len(output_documents(setup, child)) > 100, timeout=60, what="child outputs"
        )
    sent = feeder.sent
    wait_all_counted(setup, (parent, child), sum(sent.values()))
    check_split_counts(setup, parent, child, sent)
    check_ownership(setup.objects, PREFIX + task_recovery_dir(setup.namespace, TASK))

    # the parent claimed its whole range, then the lower half; the child forked exactly
    # at that fence and claims the upper half
    parent_log = RecoveryLog(
        setup.objects, object_key(PREFIX, recovery_log_name(setup.namespace, TASK, 0, 0))
    )
    claims = [(c.offset, Ranges.from_claim(c.owns)) for c in parent_log.claims()]
    full = Ranges()
    lower = Ranges(key_end=PIVOT - 1)
    assert claims[0][1] == full
    assert claims[-1][1] == lower
    hand_off = next(offset for offset, ranges in claims if ranges == lower)
    fork = own.fork_record()
    assert fork is not None
    assert (fork[1].parent, fork[1].fence_offset) == (parent_log.name, hand_off)
    assert [Ranges.from_claim(c.owns) for c in own.claims()] == [Ranges(key_begin=PIVOT)]
    registration = parent_log.read_fork_registration(own.name)
    assert registration is not None
    assert registration.fence_offset == hand_off
    assert parent_replica.state() == "PRIMARY"


def test_kills_around_the_hand_off_lose_nothing(new_shard: NewShard, spawn: Spawn) -> None:
    """The child killed while it catches up and again right after it forked, and the
    parent killed right after it narrowed: each restarts where the split left it."""
    setup = new_shard(hot_standbys=0, max_txn="300ms")
    parent = setup.shard
    child = shard_name(TASK, PIVOT, 0)
    feeder = Feeder(setup)
    parent_replica = spawn(setup, "parent-0")
    parent_replica.wait_state("PRIMARY", timeout=60)
    with feeder.sending(KEYS):
        _, child_replica, _ = start_child(
            setup, spawn, child_shard(setup.namespace, setup.get_shard(), PIVOT)
        )
        child_replica.kill()
        child_replica.start()
        child_replica.wait_state("STANDBY", timeout=60)

        patch_spec(setup, parent, {"keyEnd": f"{PIVOT - 1:08x}"})
        child_replica.wait_state("PRIMARY", timeout=60)
        child_replica.kill()
        parent_replica.kill()
        child_replica.start()
        parent_replica.start()
        child_replica.wait_state("PRIMARY", timeout=60)
        parent_replica.wait_state("PRIMARY", timeout=60)
        wait_for(
            lambda: len(output_documents(setup, child)) > 100, timeout=60, what="child outputs"
        )
    sent = feeder.sent
    wait_all_counted(setup, (parent, child), sum(sent.values()))
    check_split_counts(setup, parent, child, sent)
    check_ownership(setup.objects, PREFIX + task_recovery_dir(setup.namespace, TASK))


def test_a_parent_killed_before_the_hand_off_narrows_when_it_comes_back(
    new_shard: NewShard, spawn: Spawn
) -> None:
    """The parent is down when its Shard narrows: its next primary fences claiming the
    lower half straight away, and that fence is the hand-off."""
    setup = new_shard(hot_standbys=0, max_txn="300ms")
    parent, child = setup.shard, shard_name(TASK, PIVOT, 0)
    feeder = Feeder(setup)
    parent_replica = spawn(setup, "parent-0")
    parent_replica.wait_state("PRIMARY", timeout=60)
    feeder.send(KEYS)
    _, child_replica, _ = start_child(
        setup, spawn, child_shard(setup.namespace, setup.get_shard(), PIVOT)
    )
    parent_replica.kill()
    feeder.send(KEYS)
    patch_spec(setup, parent, {"keyEnd": f"{PIVOT - 1:08x}"})
    parent_replica.start()
    child_replica.wait_state("PRIMARY", timeout=60)
    parent_replica.wait_state("PRIMARY", timeout=60)
    feeder.send(KEYS)
    sent = feeder.sent
    wait_all_counted(setup, (parent, child), sum(sent.values()))
    check_split_counts(setup, parent, child, sent)
    check_ownership(setup.objects, PREFIX + task_recovery_dir(setup.namespace, TASK))


def test_an_r_clock_split_processes_every_document_once(new_shard: NewShard, spawn: Spawn) -> None:
    """By r-clock, both halves see every key; each document is still processed by exactly
    one of them, and each half's counts go on from the parent's."""
    setup = new_shard(hot_standbys=0, max_txn="300ms")
    parent = setup.shard
    child = shard_name(TASK, 0, PIVOT)
    feeder = Feeder(setup)
    parent_replica = spawn(setup, "parent-0")
    parent_replica.wait_state("PRIMARY", timeout=60)
    for _ in range(5):
        feeder.send(KEYS)
    spec = child_shard(setup.namespace, setup.get_shard(), PIVOT, by="rClock")
    assert spec["metadata"]["name"] == child
    _, child_replica, _ = start_child(setup, spawn, spec)
    patch_spec(setup, parent, {"rClockEnd": f"{PIVOT - 1:08x}"})
    child_replica.wait_state("PRIMARY", timeout=60)
    for _ in range(5):
        feeder.send(KEYS)
    total = sum(feeder.sent.values())
    wait_all_counted(setup, (parent, child), total)
    documents = [d for w in (parent, child) for _, _, d in output_documents(setup, w)]
    assert len(documents) == total
    assert len({d["_meta"]["uuid"] for d in documents}) == total
    for writer in (parent, child):
        per_key: dict[str, list[int]] = collections.defaultdict(list)
        for _, _, document in output_documents(setup, writer):
            per_key[document["key"]].append(document["n"])
        for key, counts in per_key.items():
            # each side counts on from what it inherited, one by one
            assert counts == list(range(counts[0], counts[0] + len(counts))), (writer, key)
    check_ownership(setup.objects, PREFIX + task_recovery_dir(setup.namespace, TASK))
