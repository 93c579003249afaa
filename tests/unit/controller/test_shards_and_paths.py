"""A Task's shards, and where their data lives in a bucket."""

from __future__ import annotations

from tests.unit.controller.models import NAMESPACE, shard_of, task

from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.shard import Shard, SplitRequest
from shardkeeper.api.storagemapping import S3Credentials, Store
from shardkeeper.controller.reconcilers.stores import store_url
from shardkeeper.controller.specs.shards import initial_shard, shard_manifest, shards_to_create
from shardkeeper.storage.layout import task_recovery_dir


def test_a_new_task_gets_one_shard_over_both_full_ranges_named_by_them() -> None:
    owner = task()
    (shard,) = shards_to_create(owner, [])
    assert shard.metadata.name == "customer-totals-00000000-00000000"
    assert shard.metadata.namespace == NAMESPACE
    spec = shard.spec
    assert (spec.key_begin, spec.key_end) == (0, 0xFFFFFFFF)
    assert (spec.r_clock_begin, spec.r_clock_end) == (0, 0xFFFFFFFF)
    assert spec.task == "customer-totals"
    assert spec.recovery_log == f"recovery/{NAMESPACE}/customer-totals/00000000-00000000"
    assert spec.recovery_log.startswith(task_recovery_dir(NAMESPACE, "customer-totals"))
    (owner_ref,) = shard.metadata.owner_references
    assert (owner_ref.kind, owner_ref.name, owner_ref.uid) == (
        "Task",
        "customer-totals",
        "uid-task-customer-totals",
    )
    assert owner_ref.controller


def test_a_task_with_shards_gets_no_initial_shard_again() -> None:
    owner = task()
    existing = shard_of(owner)
    assert shards_to_create(owner, [existing]) == []


def test_the_manifest_leaves_the_split_request_to_people() -> None:
    shard = initial_shard(task())
    shard.spec.split = SplitRequest()
    manifest = shard_manifest(shard)
    assert "split" not in manifest["spec"]
    assert "splitTargets" not in manifest["spec"]
    assert manifest["apiVersion"] == API_VERSION
    assert manifest["spec"]["keyEnd"] == "ffffffff"
    # the manifest is a valid Shard as the API server would accept it
    Shard.from_k8s(manifest)


def test_a_store_url_names_the_bucket_and_the_key_under_its_prefix() -> None:
    store = Store(bucket="b-1", prefix="p/", credentials_secret_ref=S3Credentials(name="keys"))
    assert store_url(store, "recovery/ns/t/") == "s3://b-1/p/recovery/ns/t/"
