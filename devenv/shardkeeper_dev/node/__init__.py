"""The process node: a development and test stand-in for a kubelet (and for the
scheduler and a volume provisioner), which runs pods as local processes.

See docs/process-node.md for what it supports and what it does not.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    from shardkeeper_dev.node.main import main as run

    return run(argv)


def logs_main(argv: Sequence[str]) -> int:
    from shardkeeper_dev.node.logs import logs_main as run

    return run(argv)


__all__ = ["logs_main", "main"]
