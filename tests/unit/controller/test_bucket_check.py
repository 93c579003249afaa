"""How a bucket check reads the store's answers (a store that ignores If-None-Match cannot
be found in the local MinIO, so the answers are scripted here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from shardkeeper.api.storagemapping import S3Credentials, Store
from shardkeeper.controller.reconcilers.stores import check_store
from shardkeeper.storage import errors
from shardkeeper.storage.objectstore import ObjectStore

NOW = datetime(2024, 1, 1, tzinfo=UTC)
STORE = Store(bucket="b-1", prefix="p/", credentials_secret_ref=S3Credentials(name="keys"))


class Objects:
    """Answers like ObjectStore: ``honours`` says whether a second create is refused."""

    def __init__(self, honours: bool = True, fail: Exception | None = None) -> None:
        self.honours = honours
        self.fail = fail
        self.data: dict[str, bytes] = {}
        self.listed: list[str] = []

    def first_after(self, prefix: str, start_after: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.listed.append(prefix)

    def create(self, key: str, body: bytes) -> bool:
        if key in self.data and self.honours:
            return False
        self.data[key] = body
        return True

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def delete(self, keys: list[str]) -> int:
        for key in keys:
            self.data.pop(key, None)
        return len(keys)


def check(objects: Objects) -> Any:
    return check_store(STORE, cast(ObjectStore, objects), NOW)


def test_a_store_that_refuses_the_second_create_is_ready_and_the_probe_is_removed() -> None:
    objects = Objects()
    found = check(objects)
    assert (found.reachable, found.conditional_writes, found.reason) == (True, True, "BucketReady")
    assert found.ok
    assert objects.listed == ["p/.shardkeeper-probe/"], "checked under the prefix"
    assert objects.data == {}


def test_a_store_that_lets_the_second_create_overwrite_is_unfit() -> None:
    found = check(Objects(honours=False))
    assert (found.reachable, found.conditional_writes) == (True, False)
    assert found.reason == "ConditionalWritesUnsupported"
    assert "fencing" in found.message


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errors.BucketNotFound("b-1", "http://s3"), "BucketNotFound"),
        (errors.AccessDenied("b-1", "p/", "ListObjectsV2", "InvalidAccessKeyId"), "AccessDenied"),
        (
            errors.StorageUnavailable("ListObjectsV2", "p/", 3, "ConnectionError"),
            "BucketUnreachable",
        ),
        (
            errors.ConditionalWritesUnsupported("b-1", "http://s3", "501"),
            "ConditionalWritesUnsupported",
        ),
        (errors.UnexpectedStorageError("InvalidBucketName"), "BucketError"),
    ],
)
def test_each_storage_error_becomes_its_reason(error: Exception, reason: str) -> None:
    found = check(Objects(fail=error))
    assert found.reason == reason
    assert not found.ok
    assert found.message == str(error)
