"""A task that fails on a document stops there: the primary reports FAILED with the
journal and offset, keeps the Lease so no standby goes past the document either, and
starts over once the Task is fixed."""

from __future__ import annotations

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import (
    Feeder,
    apply,
    check_counts_exact,
    counting_task,
    output_documents,
    roles,
    wait_outputs,
)
from tests.support.wait import wait_for

# n is NOT NULL: every document fails
BROKEN_SQL = "INSERT INTO counts (key, n) VALUES ($key, NULL) RETURNING key, n"


def test_a_failed_task_holds_until_the_task_changes(new_shard: NewShard, spawn: Spawn) -> None:
    setup = new_shard(hot_standbys=1, sql=BROKEN_SQL)
    a, b = spawn(setup, "replica-0"), spawn(setup, "replica-1")
    primary, standby = wait_for(lambda: roles(a, b), timeout=60, what="one PRIMARY and one STANDBY")
    feeder = Feeder(setup)
    feeder.send(["a", "b", "a"])
    entry = primary.wait_state("FAILED", timeout=30)
    journal = feeder.journal.name.removeprefix("sk/")
    assert f"offset 0 of journal {journal!r}" in entry["message"]
    assert "NOT NULL" in entry["message"]
    assert primary.running(), "a failed task is reported, not a reason to exit"
    assert primary.get("/readyz")[0] == 503
    # nobody went past the document: the failed replica keeps the Lease
    assert setup.lease_holder() == primary.pod
    assert standby.state() == "STANDBY"
    assert output_documents(setup) == []
    old_epoch = entry["epoch"]

    apply(setup.kube_api, setup.namespace, counting_task(1))
    wait_for(
        lambda: primary.state() == "PRIMARY" and setup.replica(primary.pod)["epoch"] > old_epoch,
        timeout=30,
        what="the replica to start over after the Task changed",
    )
    wait_outputs(setup, 3, timeout=30)
    check_counts_exact(setup, feeder.sent)
    assert standby.state() == "STANDBY"
