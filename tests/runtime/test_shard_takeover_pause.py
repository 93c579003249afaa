"""A replica paused between winning the Lease and fencing the recovery log (issue 11).

The replica stops itself at a takeover step (``SHARDKEEPER_PAUSE_AT``), another replica
takes the Lease over when it runs out, fences with the same "newest + 1" the paused one
chose, and commits; then the paused one resumes. It must never fence nor commit, and the
counts stay exact:

- paused as it won (``TAKEOVER_BEGUN``): it finds the Lease gone before fencing;
- paused with its epoch chosen and the Lease checked (``FENCE_DUE``): its fence carries
  the epoch the other replica already fenced with, and fails.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import (
    LEASE_DURATION,
    PREFIX,
    TASK,
    Feeder,
    ReplicaProcess,
    ShardSetup,
    check_counts_exact,
    committed_after,
    output_documents,
    wait_outputs,
)
from tests.support.wait import wait_for

from shardkeeper.storage.fragment import FragmentKind
from shardkeeper.storage.layout import object_key, recovery_log_name
from shardkeeper.storage.recoverylog import RecoveryLog


def paused(replica: ReplicaProcess) -> bool:
    """The process is stopped (state ``T`` in /proc), as SIGSTOP leaves it."""
    stat = Path(f"/proc/{replica.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def fences(setup: ShardSetup) -> list[tuple[int, str]]:
    """``(epoch, note)`` of every fence of the shard's recovery log; the note names the
    data directory of the replica that wrote it."""
    log = RecoveryLog(
        setup.objects, object_key(PREFIX, recovery_log_name(setup.namespace, TASK, 0, 0))
    )
    found = []
    for fragment in log.journal.read(0):
        if fragment.kind is FragmentKind.FENCE:
            found.append((fragment.epoch, str(json.loads(fragment.payload)["note"])))
    return found


def states(replica: ReplicaProcess) -> list[str]:
    """The replica's state changes, as it logged them (``PRIMARY``, ``FAILED: ...``)."""
    return [line["msg"] for line in replica.log_lines() if line["logger"].endswith(".replica")]


def reacted(replica: ReplicaProcess) -> bool:
    """The resumed replica has moved on from the step it paused at: it exited, or it
    logged a change of state after it logged its wake-up."""
    if not replica.running():
        return True
    lines = replica.log_lines()
    woke = [i for i, line in enumerate(lines) if line["msg"].startswith("resumed at")]
    return bool(woke) and any(line["logger"].endswith(".replica") for line in lines[woke[0] :])


@pytest.mark.parametrize("point", ["TAKEOVER_BEGUN", "FENCE_DUE"])
def test_a_replica_paused_before_fencing_never_commits(
    new_shard: NewShard, spawn: Spawn, point: str
) -> None:
    setup = new_shard(hot_standbys=1)
    feeder = Feeder(setup)
    feeder.send([f"k{i % 5}" for i in range(20)])
    # alone, it wins the Lease at once, then stops itself before fencing
    sleeper = spawn(setup, "replica-0", SHARDKEEPER_PAUSE_AT=point)
    wait_for(lambda: paused(sleeper), timeout=60, what=f"replica-0 to pause at {point}")
    paused_at = time.time()
    other = spawn(setup, "replica-1")
    with feeder.sending([f"k{i % 5}" for i in range(5)]):
        # the Lease runs out on replica-1's clock; it fences and commits
        wait_for(
            lambda: committed_after(other, paused_at),
            timeout=LEASE_DURATION + 60,
            what="replica-1 to take over and commit",
        )
        epoch = setup.replica(other.pod)["epoch"]
        sleeper.signal(signal.SIGCONT)
        wait_for(lambda: reacted(sleeper), timeout=30, what="replica-0 to react to its wake-up")
        # replica-1 goes on committing as PRIMARY: nobody fenced it
        resumed_at = time.time()
        wait_for(
            lambda: committed_after(other, resumed_at),
            timeout=30,
            what="replica-1 to commit after replica-0 resumed",
        )
    changes = states(sleeper)
    assert not any(state.startswith("PRIMARY") for state in changes), changes
    written = fences(setup)
    assert [note for _, note in written if str(sleeper.data_dir) in note] == [], written
    assert [e for e, _ in written] == [epoch], written
    status = setup.get_shard()["status"]
    assert (status["primary"], status["epoch"]) == (other.pod, epoch)
    entry = setup.replica(sleeper.pod)
    if point == "TAKEOVER_BEGUN":
        assert sleeper.wait(30) == 1
        assert "lost the Lease before fencing" in entry["message"], entry
    else:
        assert any("not older than epoch" in state for state in changes), changes
    wait_outputs(setup, sum(feeder.sent.values()), timeout=60)
    check_counts_exact(setup, feeder.sent)
    assert len(output_documents(setup)) == sum(feeder.sent.values())
