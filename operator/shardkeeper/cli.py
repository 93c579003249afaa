"""The ``shardkeeper`` console script: one entry point, one subcommand per role.

Each role's module owns its own argument parsing; this module only dispatches, so that
importing the CLI never pulls in kopf, boto3 or the Kubernetes client for another role.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("shardkeeper.controller.main", "run the operator (kopf)"),
    "shard": ("shardkeeper.runtime.shell.main", "run one shard replica (the data plane)"),
    "shards": ("shardkeeper.shards_cli", "split shards, cancel a split, show a task's shards"),
    "storage": (
        "shardkeeper.storage_cli",
        "bytes of tasks' recovery logs and collections in the bucket; prune the logs",
    ),
    "dev": ("shardkeeper_dev.main", "local development environment: tools, up, down, status"),
}

USAGE = (
    "usage: shardkeeper {"
    + ",".join(COMMANDS)
    + "} [args...]\n\n"
    + "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from shardkeeper import __version__

        print(__version__)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"shardkeeper: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(command[0])
    except ModuleNotFoundError as exc:
        if exc.name != command[0].split(".")[0]:
            raise
        # the dev environment is a separate package (devenv/), installed only in a checkout
        print(
            f"shardkeeper: `{args[0]}` needs the {exc.name} package, which is not installed "
            "here; it comes with a checkout of the project (`make venv`)",
            file=sys.stderr,
        )
        return 2
    result: int = module.main(args[1:])
    return result
