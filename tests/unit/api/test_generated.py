"""What the generator writes: up to date, structural, and documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shardkeeper.api import KINDS
from shardkeeper.api.crd import crd
from shardkeeper.api.generate import CRD_DIRS, DOCS_FILE, drift, generated, main, write

ROOT = Path(__file__).resolve().parents[3]
# Words that YAML 1.1 (kubectl's parser among them) reads as booleans when unquoted.
YAML_BOOLEANS = {"y", "yes", "n", "no", "on", "off", "true", "false"}


def test_crds_and_docs_match_the_models() -> None:
    drifted = drift(ROOT)
    assert drifted == [], f"run `make crds`: {[str(p.relative_to(ROOT)) for p in drifted]}"


def test_check_names_what_drifted_and_write_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "operator" / "shardkeeper").mkdir(parents=True)
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0

    edited = tmp_path / "crds" / "shardkeeper.io_tasks.yaml"
    edited.write_text(edited.read_text().replace("maxItems: 64", "maxItems: 65"))
    leftover = tmp_path / "charts" / "shardkeeper" / "crds" / "shardkeeper.io_widgets.yaml"
    leftover.write_text("kind: CustomResourceDefinition\n")
    (tmp_path / DOCS_FILE).unlink()
    capsys.readouterr()
    assert main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    for path in ("crds/shardkeeper.io_tasks.yaml", "shardkeeper.io_widgets.yaml", DOCS_FILE):
        assert path in err

    assert write(tmp_path)
    assert drift(tmp_path) == []
    assert not leftover.exists()


def test_the_chart_carries_the_same_crds() -> None:
    files = generated(ROOT)
    for kind in KINDS:
        name = f"shardkeeper.io_{kind.PLURAL}.yaml"
        texts = {files[ROOT / directory / name] for directory in CRD_DIRS}
        assert len(texts) == 1
        assert yaml.safe_load(texts.pop()) == crd(kind)


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(path, schema) for every schema below and including ``node``."""
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}[*]")
    return found


def _root(kind: Any) -> dict[str, Any]:
    schema: dict[str, Any] = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_schemas_are_structural(kind: Any) -> None:
    for path, node in _walk(_root(kind)):
        assert not {"$ref", "allOf", "oneOf", "not", "$defs", "title"} & node.keys(), path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
        else:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_every_field_is_described(kind: Any) -> None:
    root = _root(kind)
    for part in ("spec", "status"):
        for path, node in _walk(root["properties"][part], part):
            if path.endswith(("[]", "[*]")):
                continue  # a list's or map's items are described by the list or map
            assert node.get("description", "").strip(), f"{kind.KIND} {path} has no description"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_no_field_name_reads_as_a_yaml_boolean(kind: Any) -> None:
    for path, _ in _walk(_root(kind)):
        assert path.rsplit(".", 1)[-1].lower() not in YAML_BOOLEANS, path


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_rule_field_paths_name_real_fields(kind: Any) -> None:
    for path, node in _walk(_root(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            target = node
            for step in rule.get("fieldPath", "").split(".")[1:]:
                assert step in target.get("properties", {}), (path, rule)
                target = target["properties"][step]
            assert rule["message"], (path, rule)


def test_the_reference_documents_every_kind_and_rule() -> None:
    text = (ROOT / DOCS_FILE).read_text()
    for kind in KINDS:
        assert f"## {kind.KIND}\n" in text
        for column in kind.PRINTER_COLUMNS:
            assert f"| {column.name} |" in text
    assert "`spec.shards.maxTxnDuration`" in text
    assert "5m for materializations" in text


def test_make_crds_runs_the_generator() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "-m shardkeeper.api.generate" in makefile
