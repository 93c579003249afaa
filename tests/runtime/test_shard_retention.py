"""Collection retention against MinIO and the API server: with the positions a real shard
reports in its Shard's status.checkpoint, retention deletes the source journal's fragments
the shard read and keeps those it has not; a task created afterwards reads from the oldest
retained document with exact counts, and the first shard, restarted, resumes without
losing one."""

from __future__ import annotations

import collections
import dataclasses
import datetime
from typing import Any

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import (
    GROUP,
    MAPPING,
    PREFIX,
    SOURCE,
    TASK,
    VERSION,
    Feeder,
    ShardSetup,
    apply,
    check_counts_exact,
    counting_task,
    shard_object,
    wait_outputs,
)
from tests.support.wait import wait_for

from shardkeeper.api.shard import Shard, shard_name
from shardkeeper.controller.specs.retention import reader_positions
from shardkeeper.storage import retention
from shardkeeper.storage.layout import collection_journal, recovery_log_name

LATER = "later"
BATCHES = [["a", "b"], ["a", "c"], ["b"], ["a", "d"], ["d", "d", "e"]]
ENV = {"SHARDKEEPER_STATUS_INTERVAL": "0.5"}


def position(setup: ShardSetup, journal: str) -> int | None:
    checkpoint = (setup.get_shard().get("status") or {}).get("checkpoint") or {}
    found: int | None = (checkpoint.get("sources") or {}).get(journal)
    return found


def later_task(setup: ShardSetup) -> ShardSetup:
    """A second counting Task over the same source, created now, and its one Shard."""
    task: dict[str, Any] = counting_task(0)
    task["metadata"]["name"] = LATER
    apply(setup.kube_api, setup.namespace, task)
    shard = shard_object(setup.namespace)
    shard["metadata"]["name"] = shard_name(LATER, 0, 0)
    shard["spec"]["task"] = LATER
    shard["spec"]["recoveryLog"] = recovery_log_name(setup.namespace, LATER, 0, 0)
    apply(setup.kube_api, setup.namespace, shard)
    return dataclasses.replace(setup, shard=shard_name(LATER, 0, 0))


def test_retention_deletes_what_readers_passed_and_a_later_task_starts_after_it(
    new_shard: NewShard, spawn: Spawn
) -> None:
    setup = new_shard()
    # the source sets a retention: only then may its readers start past a journal's start
    apply(setup.kube_api, setup.namespace, {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Collection",
        "metadata": {"name": SOURCE},
        "spec": {"key": ["/key"], "storageMapping": MAPPING, "retention": {"maxBytes": 1}},
    })  # fmt: skip
    feeder = Feeder(setup)
    journal = collection_journal(setup.namespace, SOURCE, "feeder")
    first = spawn(setup, "replica-0", **ENV)
    first.wait_state("PRIMARY", timeout=60)
    for keys in BATCHES[:3]:
        feeder.send(keys)
    read_three = feeder.journal.head()
    wait_for(
        lambda: position(setup, journal) == read_three,
        timeout=60,
        what="the shard's checkpoint at the end of the first three fragments",
    )
    first.kill()
    # two more fragments the stopped shard has not read
    for keys in BATCHES[3:]:
        feeder.send(keys)
    fragments = feeder.journal.list_fragments()
    assert len(fragments) == 5

    readers = reader_positions({TASK: [Shard.model_validate(setup.get_shard())]})
    run = retention.apply(
        setup.objects,
        PREFIX,
        setup.namespace,
        SOURCE,
        readers=readers,
        limits=retention.Limits(max_bytes=1),
        now=datetime.datetime.now(datetime.UTC),
    )
    # every fragment is beyond 1 byte of newer data; the shard passed the first three
    assert [f.begin for f in run.plans[0].delete] == [f.begin for f in fragments[:3]]
    assert run.removed_fragments == 3
    assert (
        run.plans[0].held_back
        == f"Shard {setup.shard} has read {journal} only up to {read_three:#x}"
    )
    kept = feeder.journal.list_fragments()
    assert [f.begin for f in kept] == [f.begin for f in fragments[3:]]
    assert kept[0].begin == read_three
    assert run.retained_bytes == kept[-1].end - kept[0].begin

    # a task created now reads from the oldest retained document: batches 4 and 5 only
    later = later_task(setup)
    second = spawn(later, "later-0", **ENV)
    second.wait_state("PRIMARY", timeout=60)
    after = collections.Counter(key for keys in BATCHES[3:] for key in keys)
    wait_outputs(later, sum(after.values()), timeout=60)
    check_counts_exact(later, after)
    started = [
        line
        for line in second.log_lines()
        if line["msg"] == "reading a journal from its first retained fragment"
    ]
    assert [(line["journal"], line["offset"]) for line in started] == [(journal, read_three)]
    wait_for(
        lambda: position(later, journal) == kept[-1].end,
        timeout=30,
        what="the later shard's checkpoint at the head",
    )

    # the first shard, restarted, resumes at its checkpoint (retained) and loses nothing
    first.start()
    first.wait_state("PRIMARY", timeout=60)
    wait_outputs(setup, sum(feeder.sent.values()), timeout=60)
    check_counts_exact(setup, feeder.sent)
