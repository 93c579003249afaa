"""A paused primary (a zombie) cannot commit after a standby took over: SIGSTOP it until
the standby commits, SIGCONT it, and it must fail, step down and exit, while the counts
stay exact."""

from __future__ import annotations

import signal
import time

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import (
    LEASE_DURATION,
    Feeder,
    check_counts_exact,
    committed_after,
    output_documents,
    roles,
    wait_outputs,
)
from tests.support.wait import wait_for


def test_a_paused_primary_can_never_commit_again(new_shard: NewShard, spawn: Spawn) -> None:
    # transactions last at least a second: the zombie is paused with one open
    setup = new_shard(hot_standbys=1, min_txn="1s", max_txn="2s")
    a, b = spawn(setup, "replica-0"), spawn(setup, "replica-1")
    zombie, standby = wait_for(lambda: roles(a, b), timeout=60, what="one PRIMARY and one STANDBY")
    feeder = Feeder(setup)
    feeder.send([f"k{i % 5}" for i in range(50)])
    wait_outputs(setup, 50, timeout=30)
    zombie_epoch = setup.replica(zombie.pod)["epoch"]
    with feeder.sending([f"k{i % 5}" for i in range(5)]):
        # documents keep arriving: the zombie is in the middle of a transaction
        wait_for(lambda: len(output_documents(setup)) > 60, timeout=30, what="processing to go on")
        zombie.signal(signal.SIGSTOP)
        paused_at = time.time()
        wait_for(
            lambda: committed_after(standby, paused_at),
            timeout=LEASE_DURATION + 30,
            what=f"{standby.pod} to take over and commit",
        )
        zombie.signal(signal.SIGCONT)
        # it wakes up mid-transaction, finds the Lease gone and its commit fenced
        assert zombie.wait(30) == 1
    entry = setup.replica(zombie.pod)
    assert entry["state"] == "FAILED"
    assert "fenced" in entry["message"] or "lost the Lease" in entry["message"]
    # it did not take the primary's fields back
    status = setup.get_shard()["status"]
    assert status["primary"] == standby.pod
    assert status["epoch"] == zombie_epoch + 1
    assert setup.lease_holder() == standby.pod
    wait_outputs(setup, sum(feeder.sent.values()), timeout=60)
    check_counts_exact(setup, feeder.sent)
    logged = " ".join(line["msg"] for line in zombie.log_lines())
    print(logged[-1500:])
