"""`shardkeeper storage usage`: listings summed per shard's log, task and collection, and
the table and JSON it prints."""

from __future__ import annotations

import datetime
import json

from shardkeeper.storage.objectstore import ObjectInfo
from shardkeeper.storage.usage import (
    Tally,
    collection_usage,
    size_text,
    table,
    task_usage,
    to_json,
)

WHEN = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)
PREFIX = "sk/prod/"
LOG = "recovery/ns/t/00000000-00000000"
CHILD = "recovery/ns/t/80000000-00000000"


def obj(key: str, size: int) -> ObjectInfo:
    return ObjectInfo(PREFIX + key, size, WHEN)


LISTING = [
    obj(f"{LOG}/claims/0000000000000000.json", 40),
    obj(f"{LOG}/forks/x.json", 60),
    obj(f"{LOG}/journal/0000000000000000", 100),
    obj(f"{LOG}/journal/0000000000000064", 300),
    obj(f"{LOG}/snapshot-data/00000000000001c2-ab/000000", 4096),
    obj(f"{LOG}/snapshots/00000000000001c2-ab.json", 500),
    obj(f"{CHILD}/journal/0000000000000000", 7),
]


def test_a_tasks_listing_is_summed_per_log_into_fragments_snapshots_and_the_rest() -> None:
    usage = task_usage(
        "ns", "t", store="s3://b/sk/prod/", prefix=PREFIX, listing=LISTING, shards={LOG: "t-0-0"}
    )
    parent, child = usage.logs
    assert (parent.log, parent.shard) == (LOG, "t-0-0")
    assert parent.fragments == Tally(2, 400)
    assert parent.snapshots == Tally(2, 4596)
    assert parent.other == Tally(2, 100)
    assert parent.total == Tally(6, 5096)
    # a log no Shard names now (a split's retired parent, say) is still counted
    assert (child.log, child.shard, child.total) == (CHILD, None, Tally(1, 7))
    assert usage.total == Tally(7, 5103)


def test_a_collections_listing_counts_its_journals_one_per_writer() -> None:
    directory = "collections/ns/orders/"
    listing = [
        obj(f"{directory}t-00000000-00000000/0000000000000000", 10),
        obj(f"{directory}t-00000000-00000000/000000000000000a", 20),
        obj(f"{directory}t-80000000-00000000/0000000000000000", 5),
    ]
    usage = collection_usage("ns", "orders", store="s3://b/", prefix=PREFIX, listing=listing)
    assert (usage.journals, usage.total) == (2, Tally(3, 35))
    empty = collection_usage("ns", "orders", store="s3://b/", prefix=PREFIX, listing=[])
    assert (empty.journals, empty.total) == (0, Tally())


def test_json_has_every_sum_and_survives_a_round_trip() -> None:
    tasks = [task_usage("ns", "t", store="s3://b/", prefix=PREFIX, listing=LISTING, shards={})]
    collections = [collection_usage("ns", "c", store="s3://b/", prefix=PREFIX, listing=[])]
    out = json.loads(json.dumps(to_json(tasks, collections)))
    (task,) = out["tasks"]
    assert (task["namespace"], task["task"], task["store"]) == ("ns", "t", "s3://b/")
    assert task["total"] == {"objects": 7, "bytes": 5103}
    assert task["logs"][0] == {
        "log": LOG,
        "shard": None,
        "fragments": {"objects": 2, "bytes": 400},
        "snapshots": {"objects": 2, "bytes": 4596},
        "other": {"objects": 2, "bytes": 100},
        "total": {"objects": 6, "bytes": 5096},
    }
    assert out["collections"] == [
        {
            "namespace": "ns",
            "collection": "c",
            "store": "s3://b/",
            "journals": 0,
            "total": {"objects": 0, "bytes": 0},
        }
    ]


def test_the_table_has_a_row_per_log_a_total_per_task_and_a_row_per_collection() -> None:
    tasks = [
        task_usage("ns", "t", store="s3://b/", prefix=PREFIX, listing=LISTING, shards={LOG: "t-a"})
    ]
    listing = [obj("collections/ns/c/t-a/0000000000000000", 2048)]
    collections = [collection_usage("ns", "c", store="s3://b/", prefix=PREFIX, listing=listing)]
    lines = table(tasks, collections).splitlines()
    assert lines[0].split() == ["TASK", "SHARD", "LOG", "FRAGMENTS", "SNAPSHOTS", "OTHER", "TOTAL"]
    assert lines[1].split() == [
        "t",
        "t-a",
        "400B",
        "(2)",
        "4.5KiB",
        "(2)",
        "100B",
        "(2)",
        "5.0KiB",
        "(6)",
    ]
    assert lines[2].split()[:2] == ["t", f"({CHILD}:"]
    assert lines[3].split() == ["t", "(all)", "5.0KiB", "(7)"]
    assert lines[4] == ""
    assert lines[5].split() == ["COLLECTION", "JOURNALS", "TOTAL"]
    assert lines[6].split() == ["c", "1", "2.0KiB", "(1)"]
    # columns line up: every cell of a column starts where its heading does
    assert lines[1].index("400B") == lines[0].index("LOG FRAGMENTS")
    wide = table(tasks, collections, namespaces=True).splitlines()
    assert wide[0].split()[0] == "NAMESPACE"
    assert wide[1].split()[:2] == ["ns", "t"]


def test_sizes_are_in_binary_units() -> None:
    assert [size_text(n) for n in (0, 1023, 1024, 1536, 5 << 20, 3 << 40)] == [
        "0B",
        "1023B",
        "1.0KiB",
        "1.5KiB",
        "5.0MiB",
        "3.0TiB",
    ]


def test_a_log_s_writer_object_counts_with_the_rest_not_with_its_fragments() -> None:
    listing = [
        obj(f"{LOG}/journal/0000000000000000", 100),
        obj(f"{LOG}/journal/writer.json", 50),  # where its writer serves hints
    ]
    (log,) = task_usage("ns", "t", store="s3://b/", prefix=PREFIX, listing=listing, shards={}).logs
    assert (log.fragments, log.other) == (Tally(1, 100), Tally(1, 50))
