"""Exactly-once under kill -9: a derivation counting per key is killed at random moments,
over and over, while documents arrive; every key's count ends exact, and the output
journal holds each count once, end to end."""

from __future__ import annotations

import random
import threading
import time

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import Feeder, ReplicaProcess, check_counts_exact, output_documents
from tests.support.wait import wait_for

DOCUMENTS = 2000
KEYS = 50
BATCH = 25
# kills of a primary that is processing, and kills during start-up and restore
PRIMARY_KILLS = 5
EARLY_KILLS = 2


def primary_at_epoch_above(replica: ReplicaProcess, epoch: int) -> int:
    """Wait until this incarnation of the replica has fenced the log; its epoch."""

    def reached() -> int | None:
        assert replica.running(), f"exited with {replica.wait(0)}"
        entry = replica.setup.replica(replica.pod)
        if entry.get("state") == "PRIMARY" and entry.get("epoch", 0) > epoch:
            return int(entry["epoch"])
        return None

    return wait_for(reached, timeout=60, what=f"PRIMARY with an epoch above {epoch}")


def test_counts_are_exact_across_repeated_kill_9(new_shard: NewShard, spawn: Spawn) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    setup = new_shard(hot_standbys=0, max_txn="300ms")
    keys = [f"key-{i:02d}" for i in range(KEYS)] * (DOCUMENTS // KEYS)
    rng.shuffle(keys)
    feeder = Feeder(setup)
    fed = threading.Event()
    kills = ["primary"] * PRIMARY_KILLS + ["early"] * EARLY_KILLS
    rng.shuffle(kills)

    def feed() -> None:
        for start in range(0, DOCUMENTS, BATCH):
            feeder.send(keys[start : start + BATCH])
            # spread the input over all the kills, so that they land mid-transaction
            time.sleep(0.4)
        fed.set()

    replica = spawn(setup, "replica-0")
    feeding = threading.Thread(target=feed, daemon=True)
    feeding.start()
    epoch = 0
    for kind in kills:
        if kind == "primary":
            epoch = primary_at_epoch_above(replica, epoch)
            time.sleep(rng.uniform(0.05, 1.5))  # a random moment of its transactions
        else:
            time.sleep(rng.uniform(0.2, 3.0))  # start-up, restore, or the first commits
        replica.kill()
        print(f"killed {kind} at epoch {epoch}: {len(output_documents(setup))} outputs so far")
        replica.start()
    assert fed.wait(60)
    final_epoch = primary_at_epoch_above(replica, epoch)
    assert final_epoch >= PRIMARY_KILLS + 1
    wait_for(
        lambda: len(output_documents(setup)) >= DOCUMENTS,
        timeout=90,
        what=f"all {DOCUMENTS} documents counted",
        interval=0.5,
    )
    assert sum(feeder.sent.values()) == DOCUMENTS
    check_counts_exact(setup, feeder.sent)
    status = setup.get_shard()["status"]
    assert status["epoch"] == final_epoch
    assert status["primary"] == "replica-0"
