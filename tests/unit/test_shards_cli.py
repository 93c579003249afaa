"""The tree `shardkeeper shards status` prints: ranges, phase, primary, lag, the split in
progress, and each replica."""

from __future__ import annotations

from shardkeeper.shards_cli import tree


def shard(name: str, key: tuple[str, str], **status: object) -> dict[str, object]:
    spec = {"task": "t", "keyBegin": key[0], "keyEnd": key[1], "rClockBegin": "00000000"}
    spec["rClockEnd"] = "ffffffff"
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def test_the_tree_shows_shards_in_range_order_with_the_split_and_replicas() -> None:
    upper = shard("t-80000000-00000000", ("80000000", "ffffffff"), phase="Pending")
    upper["spec"]["splitSource"] = "t-00000000-00000000"  # type: ignore[index]
    lower = shard(
        "t-00000000-00000000",
        ("00000000", "ffffffff"),
        phase="Splitting",
        primary="t-00000000-00000000-0",
        lag=12,
        split={"step": "CatchUp", "by": "key"},
        replicas=[{"pod": "t-00000000-00000000-0", "state": "PRIMARY"}],
    )
    assert tree(["t", "empty"], [upper, lower]).splitlines() == [
        "task/t",
        "  shard/t-00000000-00000000  key 00000000-ffffffff  r-clock 00000000-ffffffff  "
        "Splitting  primary t-00000000-00000000-0  lag 12  split key CatchUp",
        "    t-00000000-00000000-0  PRIMARY",
        "  shard/t-80000000-00000000  key 80000000-ffffffff  r-clock 00000000-ffffffff  "
        "Pending  primary -  lag -  built by split of t-00000000-00000000",
        "task/empty",
        "  (no shards)",
    ]
