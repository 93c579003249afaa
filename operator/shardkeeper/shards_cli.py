"""``shardkeeper shards`` (also installed as ``kubectl-shards``): ask for a split, cancel
one, see a task's shards as a tree, read a shard's primary's logs and prune its recovery
log. It only edits ``spec.split`` and reads what kubectl could, with the caller's own
rights (docs/splits.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from shardkeeper import logprune
from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task, TaskType
from shardkeeper.kube.client import Transport, call, request
from shardkeeper.kube.paths import resource_path
from shardkeeper.kubecli import CliError, add_kube_arguments, client, run

# steps from which a split only rolls forward
ROLLING_FORWARD = ("HandOff", "Finish")
IN_PROGRESS = ("Plan", "Children", "CatchUp", *ROLLING_FORWARD, "Abort")


def _range(begin: str, end: str) -> str:
    return f"{begin}-{end}"


def tree(tasks: Sequence[str], shards: Sequence[Mapping[str, Any]], *, wide: bool = False) -> str:
    """Task → shards (ranges, phase, primary, lag, split) → replicas. Pure. ``wide`` adds
    each shard's epoch, last commit and recovery log. ``tasks`` are names, or
    ``namespace/name`` for tasks of several namespaces."""
    lines: list[str] = []
    for qualified in tasks:
        namespace, _, task = qualified.rpartition("/")
        lines.append(f"task/{task}" + (f"  (namespace {namespace})" if namespace else ""))
        mine = sorted(
            (
                s
                for s in shards
                if s["spec"]["task"] == task
                and (not namespace or s["metadata"].get("namespace") == namespace)
            ),
            key=lambda s: (s["spec"]["keyBegin"], s["spec"]["rClockBegin"]),
        )
        if not mine:
            lines.append("  (no shards)")
        for shard in mine:
            spec, status = shard["spec"], shard.get("status") or {}
            split = status.get("split") or {}
            step = split.get("step")
            parts = [
                f"key {_range(spec['keyBegin'], spec['keyEnd'])}",
                f"r-clock {_range(spec['rClockBegin'], spec['rClockEnd'])}",
                status.get("phase", "Pending"),
                f"primary {status.get('primary') or '-'}",
                f"lag {status['lag'] if status.get('lag') is not None else '-'}",
            ]
            if step in IN_PROGRESS:
                parts.append(f"split {split.get('by')} {step}")
            if spec.get("splitSource"):
                parts.append(f"built by split of {spec['splitSource']}")
            if spec.get("split") and step not in IN_PROGRESS:
                parts.append(f"split requested ({spec['split'].get('by', 'key')})")
            if wide:
                commit = status.get("lastCommit") or {}
                parts += [
                    f"epoch {status.get('epoch', '-')}",
                    f"last commit {commit.get('time', '-')}",
                    f"log {spec.get('recoveryLog', '-')}",
                ]
            lines.append(f"  shard/{shard['metadata']['name']}  " + "  ".join(parts))
            for replica in status.get("replicas") or []:
                lag = replica.get("lag")
                lines.append(
                    f"    {replica['pod']}  {replica['state']}"
                    + (f"  lag {lag}" if lag is not None else "")
                    + (f"  {replica['message']}" if replica.get("message") else "")
                )
    return "\n".join(lines)


def _shard_path(namespace: str | None, name: str = "") -> str:
    return resource_path(API_VERSION, Shard.PLURAL, namespace, name)


def _patch_split(kube: Transport, namespace: str, name: str, split: Any) -> Any:
    return request(
        kube,
        "PATCH",
        _shard_path(namespace, name),
        body={"spec": {"split": split}},
        content_type="application/merge-patch+json",
    )


def split_axis(asked: str | None, task_type: str | None) -> str:
    """What ``split`` asks for: the axis given, else the one a capture can split on (every
    capture primary takes documents of every key, so only its r-clock range halves), else
    the key."""
    if asked is not None:
        return asked
    return "rClock" if task_type == TaskType.CAPTURE else "key"


def _split(kube: Transport, namespace: str, args: argparse.Namespace) -> int:
    shard = request(kube, "GET", _shard_path(namespace, args.name))
    step = ((shard.get("status") or {}).get("split") or {}).get("step")
    if step in IN_PROGRESS:
        print(f"shard {args.name} is already splitting (step {step}); nothing changed")
        return 1
    task_type = None
    if args.by is None:
        task_path = resource_path(API_VERSION, Task.PLURAL, namespace, shard["spec"]["task"])
        task_type = request(kube, "GET", task_path)["spec"].get("type")
    by = split_axis(args.by, task_type)
    _patch_split(kube, namespace, args.name, {"by": by})
    print(
        f"asked for a split of shard {args.name} by {by}; follow it with "
        f"`kubectl get shards -n {namespace} -o wide -w` or `shardkeeper shards status`"
    )
    return 0


def _cancel(kube: Transport, namespace: str, args: argparse.Namespace) -> int:
    shard = _patch_split(kube, namespace, args.name, None)
    step = ((shard.get("status") or {}).get("split") or {}).get("step")
    if step in ROLLING_FORWARD:
        print(f"shard {args.name} is past the hand-off (step {step}): the split finishes")
    else:
        print(f"removed the split request of shard {args.name}")
    return 0


def _status(kube: Transport, namespace: str | None, args: argparse.Namespace) -> int:
    if args.task:
        request(kube, "GET", resource_path(API_VERSION, Task.PLURAL, namespace, args.task))
        tasks = [args.task]
    else:
        listed = request(kube, "GET", resource_path(API_VERSION, Task.PLURAL, namespace))
        tasks = sorted(_qualified(t, namespace) for t in listed["items"])
    shards = [
        s
        for s in request(kube, "GET", _shard_path(namespace))["items"]
        if _qualified(s, namespace, s["spec"]["task"]) in tasks
    ]
    if args.output in ("json", "yaml"):
        listing = {"apiVersion": "v1", "kind": "List", "items": shards}
        dump = json.dumps(listing, indent=2) if args.output == "json" else yaml.safe_dump(listing)
        print(dump.rstrip("\n"))
    else:
        print(tree(tasks, shards, wide=args.output == "wide"))
    return 0


def _qualified(obj: Mapping[str, Any], namespace: str | None, name: str | None = None) -> str:
    """An object's name, with its namespace in front when listing all namespaces."""
    name = name if name is not None else obj["metadata"]["name"]
    return name if namespace is not None else f"{obj['metadata']['namespace']}/{name}"


def _primary(kube: Transport, namespace: str, name: str) -> str:
    shard = request(kube, "GET", _shard_path(namespace, name))
    primary = (shard.get("status") or {}).get("primary")
    if not primary:
        raise CliError(f"shard {name} has no primary now: `kubectl shards status` says why")
    return str(primary)


# a followed log may be quiet for long; a day without a line ends the command
FOLLOW_READ_TIMEOUT = 24 * 3600.0


def _logs(kube: Transport, namespace: str, args: argparse.Namespace) -> int:
    pod = _primary(kube, namespace, args.name)
    query: dict[str, Any] = {"container": "shard"}
    if args.follow:
        query["follow"] = True
    if args.tail is not None:
        query["tailLines"] = args.tail
    path = resource_path("v1", "pods", namespace, pod, "log")
    response = call(
        kube, "GET", path, query=query, timeout=(10.0, FOLLOW_READ_TIMEOUT if args.follow else 60.0)
    )
    try:
        for chunk in response.stream(64 * 1024):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    finally:
        response.release_conn()
    return 0


def parser(prog: str) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=prog, description="Shards of Shardkeeper tasks.")
    add_kube_arguments(top)
    commands = top.add_subparsers(dest="command", required=True)
    split = commands.add_parser("split", help="ask for a split of a shard (spec.split)")
    split.add_argument("name")
    axis = split.add_mutually_exclusive_group()
    axis.add_argument(
        "--rclock", dest="by", action="store_const", const="rClock", help="halve the r-clock range"
    )
    axis.add_argument(
        "--key",
        dest="by",
        action="store_const",
        const="key",
        help="halve the key range (the default, but for captures: they split by r-clock)",
    )
    cancel = commands.add_parser("cancel-split", help="remove a shard's spec.split")
    cancel.add_argument("name")
    status = commands.add_parser("status", help="tasks, their shards and replicas")
    status.add_argument("task", nargs="?")
    status.add_argument("-o", "--output", choices=("tree", "wide", "json", "yaml"), default="tree")
    status.add_argument(
        "-A", "--all-namespaces", action="store_true", help="tasks of every namespace"
    )
    logs = commands.add_parser("logs", help="the logs of a shard's primary")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--tail", type=int, help="only the last lines")
    prune_logs = commands.add_parser(
        "prune-logs", help="delete what no recovery needs from shards' recovery logs"
    )
    logprune.add_arguments(prune_logs)
    return top


COMMANDS = {
    "split": _split,
    "cancel-split": _cancel,
    "status": _status,
    "logs": _logs,
    "prune-logs": logprune.run,
}


def main(argv: Sequence[str], prog: str = "shardkeeper shards") -> int:
    args = parser(prog).parse_args(argv)
    if getattr(args, "all_namespaces", False) and args.task:
        print(f"{prog}: a TASK names one namespace's task: leave out -A", file=sys.stderr)
        return 2

    def command() -> int:
        kube, namespace = client(args)
        if getattr(args, "all_namespaces", False):
            return _status(kube, None, args)
        return COMMANDS[args.command](kube, namespace, args)

    return run(prog, command)


def kubectl_plugin() -> int:
    """``kubectl shards ...``: kubectl finds ``kubectl-shards`` on the PATH."""
    return main(sys.argv[1:], prog="kubectl shards")
