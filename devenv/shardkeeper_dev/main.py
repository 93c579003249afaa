"""``shardkeeper dev``: the local development environment and its tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from shardkeeper_dev import environment, tools


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the environment keeps its state (default: $SHARDKEEPER_DEV_DIR or "
        "~/.local/state/shardkeeper/dev)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardkeeper dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start etcd, kube-apiserver, controller-manager, MinIO, PostgreSQL, node"
    )
    _add_state_dir(up)
    up.add_argument(
        "--with-operator",
        action="store_true",
        help="also install the CRDs and run `shardkeeper operator` against the environment",
    )
    up.add_argument(
        "--node",
        choices=environment.NODE_KINDS,
        default="process",
        help="what runs the pods: the process node (default), or kubelet with containerd "
        "and runc (root; docs/real-node.md)",
    )
    up.add_argument(
        "--image",
        type=Path,
        default=None,
        help="with --node real: the OCI archive to import (default: the one `make image` "
        "writes into .build/, built if missing)",
    )
    fields = (
        "apiserver",
        "etcd",
        "etcd-peer",
        "controller-manager",
        "s3",
        "s3-console",
        "postgres",
        "operator-metrics",
    )
    for field in fields:
        up.add_argument(
            f"--{field}-port",
            type=int,
            default=0,
            help="default: the one the last `up` in this state dir used, else a free port",
        )
    down = sub.add_parser("down", help="stop exactly what `up` started")
    _add_state_dir(down)
    down.add_argument("--purge", action="store_true", help="also delete data and certificates")
    status = sub.add_parser("status", help="show each component and its health")
    _add_state_dir(status)
    env = sub.add_parser(
        "env",
        help="print shell exports (KUBECONFIG, endpoints, PATH with kubectl and helm): "
        'eval "$(shardkeeper dev env)"',
    )
    _add_state_dir(env)
    demo = sub.add_parser(
        "demo", help="apply examples/, post orders to the capture, show the totals in PostgreSQL"
    )
    _add_state_dir(demo)
    demo.add_argument("--namespace", default="default")
    demo.add_argument("--orders", type=int, default=20, help="how many orders to post")
    sub.add_parser("tools", help="build the Go tools into the cache", add_help=False)
    sub.add_parser("image", help="build the OCI image into .build/ (no registry)", add_help=False)
    sub.add_parser("node", help="run the process node (started by `up`)", add_help=False)
    sub.add_parser("logs", help="show a pod's log from the process node", add_help=False)
    return parser


def main(argv: Sequence[str]) -> int:
    args_list = list(argv)
    # these own their argument parsing
    if args_list and args_list[0] == "tools":
        return tools.main(args_list[1:])
    if args_list and args_list[0] == "image":
        from shardkeeper_dev import image

        return image.main(args_list[1:])
    if args_list and args_list[0] == "node":
        from shardkeeper_dev import node

        return node.main(args_list[1:])
    if args_list and args_list[0] == "logs":
        from shardkeeper_dev import node

        return node.logs_main(args_list[1:])

    args = _parser().parse_args(args_list)
    env = environment.Environment(args.state_dir)
    try:
        if args.command == "up":
            return _up(env, args)
        if args.command == "down":
            stopped = env.down(purge=args.purge)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
            return 0
        if args.command == "status":
            return _status(env)
        if args.command == "demo":
            from shardkeeper_dev import demo as demo_

            demo_.run(env.info(), namespace=args.namespace, count=args.orders)
            return 0
        if args.command == "env":
            info = env.info()
            # an environment started before the links existed gets them now
            environment.link_client_tools(info.bin_dir)
            print(info.shell_exports(), end="")
            return 0
    except (environment.EnvironmentError_, tools.ToolError) as err:
        print(f"shardkeeper dev {args.command}: {err}", file=sys.stderr)
        return 1
    return 2


def _up(env: environment.Environment, args: argparse.Namespace) -> int:
    ports = environment.Ports(
        apiserver=args.apiserver_port,
        etcd=args.etcd_port,
        etcd_peer=args.etcd_peer_port,
        controller_manager=args.controller_manager_port,
        s3=args.s3_port,
        s3_console=args.s3_console_port,
        postgres=args.postgres_port,
        operator_metrics=args.operator_metrics_port,
    )
    try:
        info = env.up(
            ports,
            with_operator=args.with_operator,
            node=args.node,
            image_archive=args.image,
            progress=lambda msg: print(msg, flush=True),
        )
    except environment.AlreadyRunning as err:
        print(str(err))
        return 0
    print(
        f"\nenvironment is up in {info.state_dir}\n"
        f"  API server  {info.server}\n"
        f"  MinIO       {info.s3_endpoint} (bucket {info.s3_bucket})\n"
        f"  PostgreSQL  {info.postgres_host}:{info.postgres_port}/{info.postgres_database}\n"
        f"  node        {info.node_name}\n\n"
        f'  eval "$(shardkeeper dev env --state-dir {info.state_dir})"\n'
        "  kubectl get nodes,pods -A\n"
        f"  shardkeeper dev down --state-dir {info.state_dir}"
    )
    return 0


def _status(env: environment.Environment) -> int:
    components = env.status()
    if not components:
        print(f"no environment is running in {env.state_dir}")
        return 3
    for c in components:
        state = "healthy" if c.healthy else ("UNHEALTHY" if c.alive else "STOPPED")
        print(f"{c.name:<24} pid {c.pid:<8} {state:<10} {c.detail}")
    return 0 if all(c.healthy for c in components) else 1
