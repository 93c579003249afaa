"""Write hints end to end: after a long idle spell, when readers poll the bucket only every
several seconds, a document is still read at once, because its writer's hint wakes the
primary's reader, and the primary's own hint wakes the standby tailing its log."""

from __future__ import annotations

import threading
import time

from tests.runtime.conftest import NewShard, Spawn
from tests.runtime.shard_harness import HintingFeeder, pod_network, roles, wait_outputs
from tests.runtime.test_shard_failover import metric
from tests.support.wait import wait_for

# long enough that both readers wait 8-16 s between polls (10 s at up to 0.5 s, then
# doubling: runtime/core/sources.py SOURCE_POLL, runtime/shell/replica.py TAIL_POLL)
IDLE = 25.0
# well under the polls' waits by then: only a hint gets the document through this soon
PROMPTLY = 4.0


def test_a_document_after_a_long_idle_spell_is_read_at_once_thanks_to_hints(
    new_shard: NewShard, spawn: Spawn
) -> None:
    setup = new_shard(hot_standbys=1, max_txn="200ms")
    a = spawn(setup, "replica-0", SHARDKEEPER_STATUS_INTERVAL="0.2")
    b = spawn(setup, "replica-1", SHARDKEEPER_STATUS_INTERVAL="0.2")
    primary, standby = wait_for(lambda: roles(a, b), timeout=60, what="one PRIMARY and one STANDBY")
    feeder = HintingFeeder(setup, f"{pod_network()}.1")
    try:
        feeder.send(["k0"])
        wait_outputs(setup, 1, timeout=60)
        # the idle spell is the scenario itself, not a wait for a condition
        threading.Event().wait(IDLE)
        given = feeder.hints_given
        primary_hints = metric(
            primary.get("/metrics")[1], "shardkeeper_hints_given_total", setup.shard
        )

        sent = time.monotonic()
        feeder.send(["k1"])
        wait_outputs(setup, 2, timeout=60)
        read_in = time.monotonic() - sent
        head = setup.get_shard()["status"]["recoveryLogHead"]
        wait_for(
            lambda: (setup.replica(standby.pod).get("recoveryLogHead") or 0) >= head,
            timeout=60,
            what=f"{standby.pod} to tail up to {head:#x}",
        )
        tailed_in = time.monotonic() - sent
        print(f"after {IDLE:.0f}s idle: derived in {read_in:.2f}s, tailed in {tailed_in:.2f}s")
        assert feeder.hints_given > given, "the primary's reader never took the feeder's hint"
        assert read_in < PROMPTLY
        after = metric(primary.get("/metrics")[1], "shardkeeper_hints_given_total", setup.shard)
        assert after > primary_hints, "the standby never took the primary's hint"
        assert tailed_in < PROMPTLY + 1  # its status report follows within 0.2 s
    finally:
        feeder.close()
