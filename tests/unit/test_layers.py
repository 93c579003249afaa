"""The layers of docs/architecture.md, as rules on what each folder may import.

A rule broken here is a layer leaking into another: the dev environment into the product,
kopf into the data plane, I/O into the pure builders, the shell into the transaction core.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "shardkeeper"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in _under(folder):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in forbidden):
                found.append(f"{_module(path)} imports {name}")
    return sorted(set(found))


RULES: dict[str, tuple[str, ...]] = {
    # the product never needs the dev environment, so the wheel and image do without it
    ".": ("shardkeeper_dev",),
    # the data plane knows nothing of kopf, the Kubernetes client or the operator
    "storage": (
        "kopf",
        "kubernetes",
        "shardkeeper.api",
        "shardkeeper.controller",
        "shardkeeper.runtime",
        "shardkeeper.kube",
    ),
    "runtime": ("kopf", "kubernetes", "shardkeeper.controller"),
    # the transaction core and the task kinds do no Kubernetes I/O and never reach the shell
    "runtime/core": ("shardkeeper.runtime.shell", "shardkeeper.kube"),
    "runtime/kinds": ("shardkeeper.runtime.shell", "shardkeeper.kube"),
    # the operator knows nothing of SQLite or of the shard runtime
    "controller": ("sqlite3", "shardkeeper.runtime", "shardkeeper.storage.store"),
    # pure builders: no I/O, no engine, no reconcilers
    "controller/specs": (
        "kopf",
        # kubernetes.utils (quantities) is pure; the client and config are I/O
        "kubernetes.client",
        "kubernetes.config",
        "kubernetes.watch",
        "boto3",
        "shardkeeper.kube",
        "shardkeeper.storage.client",
        "shardkeeper.storage.objectstore",
        "shardkeeper.controller.engine",
        "shardkeeper.controller.reconcilers",
    ),
    "kube": ("kopf", "shardkeeper.controller", "shardkeeper.runtime", "shardkeeper.storage"),
}


@pytest.mark.parametrize("folder", list(RULES))
def test_folder_imports_only_what_its_layer_may(folder: str) -> None:
    assert _under(folder), f"no modules under {folder}: the layout changed, update RULES"
    assert _violations(folder, RULES[folder]) == []


def test_the_dev_environment_is_not_in_the_product_package() -> None:
    assert not (PACKAGE / "dev").exists()
    assert (ROOT / "devenv" / "shardkeeper_dev" / "environment.py").is_file()


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from shardkeeper_dev.environment import EnvInfo\nimport kopf\n")
    assert sorted(_imports(probe)) == [
        "kopf",
        "shardkeeper_dev.environment",
        "shardkeeper_dev.environment.EnvInfo",
    ]
