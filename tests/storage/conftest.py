"""Fixtures of the storage tests: an ObjectStore on a fresh MinIO bucket, logs in it."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from tests.storage.storage_helpers import client_for

from shardkeeper.storage.faults import NO_FAULTS, Faults
from shardkeeper.storage.objectstore import ObjectStore
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper_dev.environment import EnvInfo

NewLog = Callable[..., RecoveryLog]


@pytest.fixture
def objects(dev_env: EnvInfo, bucket: str) -> ObjectStore:
    return ObjectStore(client_for(dev_env), bucket)


@pytest.fixture
def new_log(objects: ObjectStore) -> NewLog:
    def make(name: str | None = None, faults: Faults = NO_FAULTS) -> RecoveryLog:
        return RecoveryLog(objects, name or f"recovery/{secrets.token_hex(4)}", faults=faults)

    return make
