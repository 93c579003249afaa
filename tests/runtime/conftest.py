"""Fixtures of the shard runtime tests against the real API server and MinIO."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.runtime.shard_harness import ReplicaProcess, ShardSetup, counting_shard, pod_network

from shardkeeper.kube.transport import LightClient
from shardkeeper_dev.environment import EnvInfo

NewShard = Callable[..., ShardSetup]
Spawn = Callable[..., ReplicaProcess]


@pytest.fixture(scope="session")
def runtime_kube(dev_env: EnvInfo) -> LightClient:
    """The light client a replica uses, as cluster admin (the env's kubeconfig)."""
    return LightClient.from_kubeconfig(dev_env.kubeconfig)


@pytest.fixture
def new_shard(
    crds: list[str], kube_api: Any, dev_env: EnvInfo, namespace: str, bucket: str
) -> NewShard:
    """Creates the objects of a derivation counting per key; see counting_shard."""

    def make(**options: Any) -> ShardSetup:
        return counting_shard(kube_api, dev_env, namespace, bucket, **options)

    return make


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Starts replica processes on addresses of their own; ends them all afterwards."""
    network = pod_network()
    started: list[ReplicaProcess] = []

    def start(setup: ShardSetup, pod: str, **env: str) -> ReplicaProcess:
        replica = ReplicaProcess(setup, pod, f"{network}.{len(started) + 1}", tmp_path, **env)
        replica.start()
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()
