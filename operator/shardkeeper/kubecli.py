"""What the command-line tools that talk to the cluster share: the kubectl flags
(``--kubeconfig``, ``--context``, ``-n``), the client they give, and API errors in words
for the person at the terminal."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from shardkeeper.kube.client import ApiError, Transport
from shardkeeper.kube.config import KubeconfigError, context_namespace, locate
from shardkeeper.kube.transport import LightClient, read_kubeconfig


class CliError(Exception):
    """What went wrong, in words for the person at the terminal."""


def add_kube_arguments(parser: argparse.ArgumentParser, *, again: bool = False) -> None:
    """The kubectl flags. ``again``: on a subcommand's parser as well as on the top one,
    so they go before or after the subcommand, as kubectl's do; there, one not given
    leaves the top parser's value alone."""
    default = argparse.SUPPRESS if again else None
    parser.add_argument(
        "-n", "--namespace", default=default, help="default: the context's namespace, or default"
    )
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument(
        "--kubeconfig", default=default, help="path to the kubeconfig (default: $KUBECONFIG)"
    )


def client(args: argparse.Namespace) -> tuple[Transport, str]:
    """The client of the flags' context, and the namespace: ``-n``, else the context's,
    else ``default``."""
    source = locate(args.kubeconfig, os.environ, args.context)
    namespace = args.namespace
    if namespace is None and source.kubeconfig is not None:
        namespace = context_namespace(read_kubeconfig(source.kubeconfig), source.context)
    return LightClient.connect(source, os.environ), namespace or "default"


def explain(exc: ApiError) -> str:
    """An API error in terms of what the person can do about it. Pure."""
    if exc.status == 404 and exc.message.startswith("the server could not find"):
        return (
            "the Shardkeeper CRDs are not installed in this cluster: "
            "kubectl apply --server-side -f crds/"
        )
    if exc.status in (401, 403):
        return f"access denied: {exc.message}"
    return f"{exc.message} (HTTP {exc.status})"


def run(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; an error it raises becomes a line on stderr and exit status 1."""
    try:
        return command()
    except ApiError as exc:
        print(f"{prog}: {explain(exc)}", file=sys.stderr)
    except (CliError, KubeconfigError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
    return 1
