"""``shardkeeper dev logs``: show a container's log file kept by the process node.

Logs live under ``<state-dir>/pods/<namespace>/<pod>/<container>.log`` and are appended
to across restarts, and across pods recreated under the same name. The node writes a
``--- process-node ... ---`` line whenever it starts a container or sees it exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from shardkeeper_dev.node.layout import Layout

FOLLOW_INTERVAL = 0.2


def choose_container(pod_dir: Path, requested: str | None) -> str:
    """The container to show: the requested one, the pod's default one, or the only one."""
    if requested:
        return requested
    manifest = pod_dir / "pod.json"
    if manifest.exists():
        default = json.loads(manifest.read_text()).get("defaultContainer")
        if default:
            return str(default)
    names = sorted(p.stem for p in pod_dir.glob("*.log"))
    if len(names) == 1:
        return names[0]
    raise LookupError(
        f"a container name must be given with -c, one of: {', '.join(names) or '(none)'}"
    )


def _copy(source: BinaryIO, out: BinaryIO) -> None:
    while chunk := source.read(65536):
        out.write(chunk)
    out.flush()


def logs_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="shardkeeper dev logs", description="Print a pod's log from the process node."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="the node's state dir, or the environment's (default: the environment's default)",
    )
    parser.add_argument("pod", metavar="NAMESPACE/POD")
    parser.add_argument("-c", "--container", help="container name (default: the pod's default)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    args = parser.parse_args(argv)
    namespace, sep, name = args.pod.partition("/")
    if not sep or not namespace or not name:
        parser.error("the pod is given as NAMESPACE/POD")
    if args.state_dir is None:
        from shardkeeper_dev.environment import default_state_dir

        args.state_dir = default_state_dir()
    layout = Layout(_node_dir(args.state_dir))
    pod_dir = layout.pod_log_dir(namespace, name)
    if not pod_dir.is_dir():
        print(f"no logs for pod {namespace}/{name} in {layout.root}", file=sys.stderr)
        return 1
    try:
        container = choose_container(pod_dir, args.container)
    except LookupError as err:
        print(str(err), file=sys.stderr)
        return 1
    path = layout.container_log(namespace, name, container)
    if not path.exists():
        print(f"no log for container {container} of pod {namespace}/{name}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    with path.open("rb") as source:
        _copy(source, out)
        if not args.follow:
            return 0
        try:
            while True:
                time.sleep(FOLLOW_INTERVAL)  # following a file: there is nothing to wait on
                _copy(source, out)
        except KeyboardInterrupt:
            return 0


def _node_dir(state_dir: Path) -> Path:
    """Accept the node's own state dir or the environment's (whose node/ holds it)."""
    if not (state_dir / "pods").exists() and (state_dir / "node" / "pods").exists():
        return state_dir / "node"
    return state_dir
