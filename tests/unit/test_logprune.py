"""Pruning by hand (`shardkeeper storage prune`, `kubectl shards prune-logs`): one piece of
code behind both commands, holding back where automatic pruning holds back, and what it
prints."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest

from shardkeeper import cli, logprune, shards_cli, storage_cli
from shardkeeper.api.shard import Shard
from shardkeeper.logprune import ShardPrune, hold, report, to_json
from shardkeeper.storage.prune import PrunePlan, Tombstone

NAME = "t-00000000-00000000"


def shard(replicas: list[dict[str, Any]], **spec: Any) -> Shard:
    return Shard.from_k8s(
        {
            "apiVersion": "shardkeeper.io/v1alpha1",
            "kind": "Shard",
            "metadata": {"name": NAME},
            "spec": {
                "task": "t",
                "keyBegin": "00000000",
                "keyEnd": "ffffffff",
                "rClockBegin": "00000000",
                "rClockEnd": "ffffffff",
                "recoveryLog": "recovery/ns/t/00000000-00000000",
                **spec,
            },
            "status": {"primary": f"{NAME}-0", "replicas": replicas},
        }
    )


def replica(ordinal: int, state: str, head: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"pod": f"{NAME}-{ordinal}", "state": state}
    if head is not None:
        out["recoveryLogHead"] = head
    return out


def test_both_commands_run_the_same_prune_with_the_same_arguments() -> None:
    assert shards_cli.COMMANDS["prune-logs"] is logprune.run
    assert storage_cli.COMMANDS["prune"] is logprune.run
    argv = ["prune-logs", "customer-totals", "--dry-run", "--force", "-o", "json"]
    by_plugin = vars(shards_cli.parser("kubectl shards").parse_args(argv))
    by_storage = vars(storage_cli.parser("shardkeeper storage").parse_args(["prune", *argv[1:]]))
    assert {k: v for k, v in by_plugin.items() if k != "command"} == {
        k: v for k, v in by_storage.items() if k != "command"
    }
    assert "storage" in cli.COMMANDS


def test_kubectl_flags_go_before_or_after_the_storage_subcommand() -> None:
    parse = storage_cli.parser("shardkeeper storage").parse_args
    assert parse(["-n", "a", "usage"]).namespace == "a"
    assert parse(["usage", "-n", "b", "-A", "-o", "json"]).namespace == "b"
    after = parse(["--context", "c", "prune", "t", "--kubeconfig", "k"])
    assert (after.context, after.kubeconfig, after.namespace) == ("c", "k", None)


def test_a_task_with_all_namespaces_is_refused() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert storage_cli.main(["usage", "t", "-A"]) == 2
    assert "leave out -A" in err.getvalue()


def test_a_shard_is_held_back_as_automatic_pruning_holds_it_back() -> None:
    quiet = shard([replica(0, "PRIMARY", 900), replica(1, "STANDBY", 400)])
    # the primary's own position does not count; the standby's bounds the plan
    assert hold(quiet, hot_standbys=1) == (None, 400)
    assert hold(shard([replica(0, "PRIMARY", 900)]), hot_standbys=0) == (None, None)
    splitting = shard([replica(0, "PRIMARY", 900)], split={"by": "key"})
    why, _ = hold(splitting, hot_standbys=0)
    assert why is not None
    assert "spec.split" in why
    restoring = shard([replica(0, "PRIMARY", 900), replica(1, "BACKFILL", None)])
    why, _ = hold(restoring, hot_standbys=1)
    assert why is not None
    assert "BACKFILL" in why
    missing = shard([replica(0, "PRIMARY", 900)])
    why, _ = hold(missing, hot_standbys=1)
    assert why is not None
    assert f"{NAME}-1" in why


PLAN = PrunePlan(
    log="recovery/ns/t/00000000-00000000",
    keep_from=0x200,
    requirements=(),
    fragments=("a/journal/0000000000000000",),
    tombstones=(Tombstone("a/journal/0000000000000010", 0x10, 2),),
    manifests=("a/snapshots/0000000000000100-x.json",),
    snapshot_data=("a/snapshot-data/0000000000000100-x/000000",),
    registrations=(),
    removed_bytes=0x1F0,
    kept_bytes=0x300,
)


def test_the_report_sums_up_each_shard_and_says_which_were_skipped() -> None:
    results = [
        ShardPrune("t-a", plan=PLAN, retain_from=0x200),
        ShardPrune("t-b", held="a split of the shard was asked for (spec.split)"),
    ]
    text = report(results, dry_run=True)
    assert "shard/t-a\n  log recovery/ns/t/00000000-00000000: keeping data from" in text
    assert "  would remove 3 objects and 496 log bytes, kept 768 log bytes, " in text
    assert "1 fences as tombstones" in text
    assert "shard/t-b: skipped: a split of the shard was asked for" in text
    assert text.endswith("DRY RUN: nothing deleted")
    done = report([ShardPrune("t-a", plan=PLAN, held="why", retain_from=None)], dry_run=False)
    assert "  removed 3 objects" in done
    assert "pruned despite: why (--force)" in done
    assert "DRY RUN" not in done


def test_json_lists_what_was_removed_per_shard() -> None:
    results = [ShardPrune("t-a", plan=PLAN, retain_from=0x200), ShardPrune("t-b", held="why")]
    out = json.loads(json.dumps(to_json(results, dry_run=False)))
    pruned, skipped = out["shards"]
    assert out["dryRun"] is False
    assert pruned["pruned"] is True
    assert pruned["removed"] == list(PLAN.keys)
    assert (pruned["removedObjects"], pruned["removedLogBytes"]) == (3, 0x1F0)
    assert (pruned["keptFrom"], pruned["keptLogBytes"], pruned["retainFrom"]) == (
        0x200,
        0x300,
        0x200,
    )
    assert pruned["tombstones"] == ["a/journal/0000000000000010"]
    assert skipped == {"shard": "t-b", "pruned": False, "heldBack": "why", "retainFrom": None}
    assert to_json(results, dry_run=True)["shards"][0]["pruned"] is False


@pytest.mark.parametrize("argv", [["storage", "--help"], ["storage", "usage", "--help"]])
def test_the_top_level_command_reaches_the_storage_parser(argv: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 0
    assert "shardkeeper storage" in out.getvalue()
