"""A Task's shards, and where their data lives in a bucket."""

from __future__ import annotations

from tests.unit.controller.models import NAMESPACE, shard_of, task

from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.shard import Shard, SplitRequest
from shardkeeper.api.storagemapping import Store
from shardkeeper.controller.specs.datapaths import (
    collection_prefix,
    journal_name,
    recovery_prefix,
    store_url,
)
from shardkeeper.controller.specs.shards import initial_shard, shard_manifest, shards_to_create


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
    assert spec.recovery_log.startswith(recovery_prefix(NAMESPACE, "customer-totals"))
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


def test_journal_and_recovery_prefixes() -> None:
    assert recovery_prefix("ns", "t") == "recovery/ns/t/"
    assert collection_prefix("ns", "orders") == "collections/ns/orders/"
    assert journal_name("ns", "orders", "t-00000000-00000000") == (
        "collections/ns/orders/t-00000000-00000000"
    )
    store = Store(bucket="b-1", prefix="p/")
    assert store_url(store, "recovery/ns/t/") == "s3://b-1/p/recovery/ns/t/"
