"""Fixtures of the operator's end-to-end tests: the CRDs, and one operator process per test,
watching only the test's namespace and electing its leader there, so that tests never
share an operator and a test may kill or restart its own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import pytest
from tests.controller.support import Kubectl, OperatorProcess

from shardkeeper_dev.environment import EnvInfo

StartOperator = Callable[..., OperatorProcess]


@contextlib.contextmanager
def operator_starter(dev_env: EnvInfo, namespace: str, kubectl: Kubectl) -> Iterator[StartOperator]:
    """Starts operators for ``namespace``. Afterwards its Tasks are deleted through a
    running operator (so their shards stop before the namespace and bucket go, and no
    finalizer is left behind), then every operator is stopped."""
    started: list[OperatorProcess] = []
    # next to the pods' logs, where pytest's rotation of temporary directories (shared
    # with everyone's runs) does not delete them
    log_dir = dev_env.state_dir / "logs" / "operator-tests" / namespace

    def start(
        identity: str = "operator-a", *extra: str, env: Mapping[str, str] | None = None
    ) -> OperatorProcess:
        process = OperatorProcess(
            dev_env, namespace, log_dir, identity=identity, extra=extra, env=env
        )
        started.append(process.start())
        return process

    yield start
    if not any(p.alive() for p in started):
        start("operator-cleanup")
    kubectl("delete", "tasks.shardkeeper.io", "--all", "-n", namespace, "--timeout=120s")
    for process in started:
        if process.alive():
            process.stop()


@pytest.fixture
def operators(
    crds: list[str],
    dev_env: EnvInfo,
    namespace: str,
    bucket: str,  # set up before, torn down after: no shard writes to a deleted bucket
    kubectl: Kubectl,
) -> Iterator[StartOperator]:
    """Starts operators for the test's namespace (see :func:`operator_starter`)."""
    with operator_starter(dev_env, namespace, kubectl) as start:
        yield start


@pytest.fixture
def operator(operators: StartOperator) -> OperatorProcess:
    """One operator, leading."""
    process = operators()
    process.wait_leading()
    return process
