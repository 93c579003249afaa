"""``shardkeeper operator``: runs the kopf operator."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="shardkeeper operator")
    parser.add_argument("--namespace", action="append", help="namespaces to watch (default: all)")
    args = parser.parse_args(argv)

    import kopf

    kopf.configure(verbose=False)
    kopf.run(clusterwide=not args.namespace, namespaces=args.namespace or [])
    return 0
