"""The bucket layout: names under a store's prefix, and which modules may define them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shardkeeper
from shardkeeper.storage import layout

PACKAGE = Path(shardkeeper.__file__).parent


def test_names_sit_under_the_store_prefix() -> None:
    assert layout.recovery_log_name("ns", "t", 0, 0x7FFFFFFF) == "recovery/ns/t/00000000-7fffffff"
    assert layout.task_recovery_dir("ns", "t") == "recovery/ns/t/"
    assert layout.collection_dir("ns", "orders") == "collections/ns/orders/"
    assert layout.collection_journal("ns", "orders", "t-00000000-00000000") == (
        "collections/ns/orders/t-00000000-00000000"
    )
    assert layout.object_key("", "collections/x") == "collections/x"
    assert layout.object_key("env/prod/", "collections/x") == "env/prod/collections/x"
    with pytest.raises(ValueError, match="ends in '/'"):
        layout.object_key("p", "x")


def test_journals_of_a_task_are_told_apart_from_a_longer_named_task() -> None:
    directory = "p/collections/ns/orders/"
    assert layout.written_by("a", directory + "a-00000000-7fffffff/0000000000000000", directory)
    assert not layout.written_by(
        "a", directory + "a-00000000-00000000-00000000-00000000/0", directory
    )
    assert not layout.written_by("a", directory + "ab-00000000-00000000/0", directory)
    assert not layout.written_by("a", "p/collections/ns/other/a-00000000-00000000/0", directory)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_layout_is_pure() -> None:
    imported = _imports(PACKAGE / "storage" / "layout.py")
    assert imported <= {"__future__", "re"}, imported
