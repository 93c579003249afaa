"""Lease election against the real API server: one holder at a time, takeover only after
the duration as the taker observes it, hand-over at once after a release."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client

from shardkeeper.kube.election import Elector, KubeLeaseApi
from shardkeeper.kube.lease import LeaseRecord
from shardkeeper.kube.transport import LightClient
from shardkeeper.runtime.shell.lease import LeaseKeeper

DURATION = 2


def elector(kube: LightClient, namespace: str, me: str, name: str = "shard-a") -> Elector:
    api = KubeLeaseApi(kube, namespace, name, timeout=5.0)
    return Elector(api, me, DURATION)


def lease_spec(kube_api: Any, namespace: str, name: str = "shard-a") -> Any:
    """What the official client sees: an observer independent of the replicas' client."""
    return client.CoordinationV1Api(kube_api).read_namespaced_lease(name, namespace).spec


def test_racing_replicas_elect_exactly_one(
    kube_api: Any, runtime_kube: LightClient, namespace: str
) -> None:
    electors = [elector(runtime_kube, namespace, f"replica-{i}") for i in range(4)]
    barrier = threading.Barrier(len(electors))
    results: dict[str, bool] = {}

    def race(e: Elector) -> None:
        barrier.wait()
        results[e.me] = e.step(want=True).mine

    threads = [threading.Thread(target=race, args=(e,)) for e in electors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [me for me, won in results.items() if won]
    assert len(winners) == 1
    spec = lease_spec(kube_api, namespace)
    assert spec.holder_identity == winners[0]
    assert spec.lease_duration_seconds == DURATION
    # MicroTime round-trips through the API server
    assert spec.renew_time is not None


def test_takeover_waits_a_duration_after_the_last_renewal_seen(
    kube_api: Any, runtime_kube: LightClient, namespace: str
) -> None:
    a, b = elector(runtime_kube, namespace, "a"), elector(runtime_kube, namespace, "b")
    assert a.step(want=True).mine
    assert not b.step(want=True).mine
    first_seen = time.monotonic()
    # a keeps renewing for a while (paced like a keeper): b must not take over, however
    # long it has waited in all
    while True:
        assert a.step(want=True).mine
        assert not b.step(want=True).mine
        last_renewal = time.monotonic()  # b has just seen a's renewal
        if last_renewal - first_seen > DURATION * 1.5:
            break
        time.sleep(DURATION / 4)
    while not b.step(want=True).mine:
        time.sleep(0.05)
    waited = time.monotonic() - last_renewal
    assert waited >= DURATION - 0.1
    assert waited < DURATION + 1.0
    spec = lease_spec(kube_api, namespace)
    assert spec.holder_identity == "b"
    assert spec.lease_transitions == 1
    assert not a.step(want=True).mine


def test_release_hands_over_at_once(
    kube_api: Any, runtime_kube: LightClient, namespace: str
) -> None:
    a, b = elector(runtime_kube, namespace, "a"), elector(runtime_kube, namespace, "b")
    a.step(want=True)
    b.step(want=True)
    assert not b.release()
    assert a.release()
    assert lease_spec(kube_api, namespace).holder_identity is None
    assert b.step(want=True).mine


def test_keeper_renews_and_a_stale_replace_is_refused(
    kube_api: Any, runtime_kube: LightClient, namespace: str
) -> None:
    api = KubeLeaseApi(runtime_kube, namespace, "shard-a", timeout=5.0)
    keeper = LeaseKeeper(Elector(api, "a", DURATION), poll=0.1)
    keeper.start()
    keeper.stand()
    try:
        assert keeper.acquired.wait(5)
        first = lease_spec(kube_api, namespace).renew_time
        deadline = time.monotonic() + 5
        while lease_spec(kube_api, namespace).renew_time == first:
            assert time.monotonic() < deadline, "the keeper never renewed"
            time.sleep(0.05)
        assert keeper.held()
        # optimistic concurrency: a write based on an old read loses
        stale: dict[str, Any] = api.read()  # type: ignore[assignment]
        spec = LeaseRecord("x", 1, None, None, 0).to_spec()
        assert api.replace({**stale, "spec": spec}) is not None
        spec = LeaseRecord("y", 1, None, None, 0).to_spec()
        assert api.replace({**stale, "spec": spec}) is None
        assert lease_spec(kube_api, namespace).holder_identity == "x"
        assert keeper.lost.wait(5)
    finally:
        keeper.stop()
    assert not keeper.held()
