"""``shardkeeper shards`` (also installed as ``kubectl-shards``): ask for a split, cancel
one, and see a task's shards as a tree. It only edits ``spec.split`` and reads status, as
a person would with kubectl (docs/splits.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from shardkeeper.api.meta import API_VERSION
from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task
from shardkeeper.kube.client import ApiError, Transport, request
from shardkeeper.kube.config import KubeconfigError, context_namespace, locate
from shardkeeper.kube.paths import resource_path
from shardkeeper.kube.transport import LightClient, read_kubeconfig

# steps from which a split only rolls forward
ROLLING_FORWARD = ("HandOff", "Finish")
IN_PROGRESS = ("Plan", "Children", "CatchUp", *ROLLING_FORWARD, "Abort")


def _range(begin: str, end: str) -> str:
    return f"{begin}-{end}"


def tree(tasks: Sequence[str], shards: Sequence[Mapping[str, Any]]) -> str:
    """Task → shards (ranges, phase, primary, lag, split) → replicas. Pure."""
    lines: list[str] = []
    for task in tasks:
        lines.append(f"task/{task}")
        mine = sorted(
            (s for s in shards if s["spec"]["task"] == task),
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
            lines.append(f"  shard/{shard['metadata']['name']}  " + "  ".join(parts))
            for replica in status.get("replicas") or []:
                lag = replica.get("lag")
                lines.append(
                    f"    {replica['pod']}  {replica['state']}"
                    + (f"  lag {lag}" if lag is not None else "")
                    + (f"  {replica['message']}" if replica.get("message") else "")
                )
    return "\n".join(lines)


def _client(args: argparse.Namespace) -> tuple[Transport, str]:
    source = locate(args.kubeconfig, os.environ, args.context)
    namespace = args.namespace
    if namespace is None and source.kubeconfig is not None:
        namespace = context_namespace(read_kubeconfig(source.kubeconfig), source.context)
    return LightClient.connect(source, os.environ), namespace or "default"


def _shard_path(namespace: str, name: str = "") -> str:
    return resource_path(API_VERSION, Shard.PLURAL, namespace, name)


def _patch_split(kube: Transport, namespace: str, name: str, split: Any) -> Any:
    return request(
        kube,
        "PATCH",
        _shard_path(namespace, name),
        body={"spec": {"split": split}},
        content_type="application/merge-patch+json",
    )


def _split(kube: Transport, namespace: str, args: argparse.Namespace) -> int:
    shard = request(kube, "GET", _shard_path(namespace, args.name))
    step = ((shard.get("status") or {}).get("split") or {}).get("step")
    if step in IN_PROGRESS:
        print(f"shard {args.name} is already splitting (step {step}); nothing changed")
        return 1
    by = "rClock" if args.rclock else "key"
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


def _status(kube: Transport, namespace: str, args: argparse.Namespace) -> int:
    if args.task:
        request(kube, "GET", resource_path(API_VERSION, Task.PLURAL, namespace, args.task))
        tasks = [args.task]
    else:
        listed = request(kube, "GET", resource_path(API_VERSION, Task.PLURAL, namespace))
        tasks = sorted(t["metadata"]["name"] for t in listed["items"])
    shards = request(kube, "GET", _shard_path(namespace))["items"]
    if args.output == "json":
        print(json.dumps([s for s in shards if s["spec"]["task"] in tasks], indent=2))
    else:
        print(tree(tasks, shards))
    return 0


def parser(prog: str) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=prog, description="Shards of Shardkeeper tasks.")
    top.add_argument("-n", "--namespace", help="default: the context's namespace, or default")
    top.add_argument("--context", help="the kubeconfig context to use")
    top.add_argument("--kubeconfig", help="path to the kubeconfig (default: $KUBECONFIG)")
    commands = top.add_subparsers(dest="command", required=True)
    split = commands.add_parser("split", help="ask for a split of a shard (spec.split)")
    split.add_argument("name")
    split.add_argument("--rclock", action="store_true", help="halve the r-clock range")
    cancel = commands.add_parser("cancel-split", help="remove a shard's spec.split")
    cancel.add_argument("name")
    status = commands.add_parser("status", help="tasks, their shards and replicas")
    status.add_argument("task", nargs="?")
    status.add_argument("-o", "--output", choices=("tree", "json"), default="tree")
    return top


def main(argv: Sequence[str], prog: str = "shardkeeper shards") -> int:
    args = parser(prog).parse_args(argv)
    try:
        kube, namespace = _client(args)
        run = {"split": _split, "cancel-split": _cancel, "status": _status}[args.command]
        return run(kube, namespace, args)
    except ApiError as exc:
        print(f"{prog}: {exc.message} (HTTP {exc.status})", file=sys.stderr)
        return 1
    except (KubeconfigError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1


def kubectl_plugin() -> int:
    """``kubectl shards ...``: kubectl finds ``kubectl-shards`` on the PATH."""
    return main(sys.argv[1:], prog="kubectl shards")
