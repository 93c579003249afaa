"""The tree `shardkeeper shards status` prints: ranges, phase, primary, lag, the split in
progress, and each replica; and the axis `shardkeeper shards split` asks for."""

from __future__ import annotations

import pytest

from shardkeeper.kube.client import ApiError
from shardkeeper.kubecli import explain
from shardkeeper.shards_cli import parser, split_axis, tree


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


def test_wide_adds_epoch_last_commit_and_log_and_namespaces_keep_tasks_apart() -> None:
    mine = shard("t-00000000-00000000", ("00000000", "ffffffff"), phase="Running", epoch=3)
    mine["metadata"]["namespace"] = "a"  # type: ignore[index]
    mine["spec"]["recoveryLog"] = "recovery/a/t/00000000-00000000"  # type: ignore[index]
    mine["status"]["lastCommit"] = {"time": "2026-12-07T12:00:00Z"}  # type: ignore[index]
    theirs = shard("t-00000000-00000000", ("00000000", "ffffffff"), phase="Failed")
    theirs["metadata"]["namespace"] = "b"  # type: ignore[index]
    lines = tree(["a/t", "b/t"], [mine, theirs], wide=True).splitlines()
    assert lines[0] == "task/t  (namespace a)"
    assert lines[1].endswith(
        "Running  primary -  lag -  epoch 3  last commit 2026-12-07T12:00:00Z  "
        "log recovery/a/t/00000000-00000000"
    )
    assert lines[2] == "task/t  (namespace b)"
    assert "Failed" in lines[3]
    assert "Running" not in lines[3]


def test_api_errors_say_what_to_do() -> None:
    missing = ApiError(
        404, "Not Found", {"message": "the server could not find the requested resource"}
    )
    assert "CRDs are not installed" in explain(missing)
    assert "kubectl apply --server-side -f crds/" in explain(missing)
    gone = ApiError(404, "Not Found", {"message": 'shards.shardkeeper.io "x" not found'})
    assert explain(gone) == 'shards.shardkeeper.io "x" not found (HTTP 404)'
    denied = ApiError(403, "Forbidden", {"message": 'User "bob" cannot list resource "tasks"'})
    assert explain(denied) == 'access denied: User "bob" cannot list resource "tasks"'


def test_split_asks_for_the_axis_given_else_r_clock_for_a_capture_and_key_otherwise() -> None:
    assert split_axis(None, "capture") == "rClock"
    assert split_axis(None, "derivation") == "key"
    assert split_axis(None, "materialization") == "key"
    # what the person says stands, even where the operator will refuse it (and say why)
    assert split_axis("key", "capture") == "key"
    assert split_axis("rClock", "derivation") == "rClock"


def test_split_takes_one_axis_at_most() -> None:
    cli = parser("shardkeeper shards")
    assert cli.parse_args(["split", "s"]).by is None
    assert cli.parse_args(["split", "s", "--rclock"]).by == "rClock"
    assert cli.parse_args(["split", "s", "--key"]).by == "key"
    with pytest.raises(SystemExit):
        cli.parse_args(["split", "s", "--key", "--rclock"])
