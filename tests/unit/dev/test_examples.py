"""shardkeeper_dev.examples finds the repository's examples/ from its own location."""

from __future__ import annotations

from shardkeeper_dev import examples


def test_the_examples_directory_is_the_repositorys() -> None:
    assert examples.EXAMPLES.name == "examples"
    assert (examples.EXAMPLES.parent / "crds").is_dir()
    kinds = {doc["kind"] for doc in examples.load()}
    assert {"StorageMapping", "Collection", "Task"} <= kinds
