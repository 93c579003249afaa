"""Write (or check) everything generated from the API models.

    python -m shardkeeper.api.generate [--check] [--root DIR]

writes crds/*.yaml, the chart's copy in charts/shardkeeper/crds/ and docs/api.md under the
repository root (the current directory by default). With --check it writes nothing,
names every file that differs from what the models generate, and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from shardkeeper.api import KINDS
from shardkeeper.api.crd import crds
from shardkeeper.api.docs import render_reference

CRD_DIRS = ("crds", "charts/shardkeeper/crds")
DOCS_FILE = "docs/api.md"
CRD_GLOB = "shardkeeper.io_*.yaml"
HEADER = (
    "# Generated from the models in operator/shardkeeper/api by `make crds`\n"
    "# (python -m shardkeeper.api.generate). Do not edit.\n"
)


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors, and multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_yaml(document: dict[str, Any]) -> str:
    return HEADER + yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )


def generated(root: Path) -> dict[Path, str]:
    """Every generated file under ``root`` and its content."""
    files: dict[Path, str] = {}
    for name, document in crds(KINDS).items():
        text = render_yaml(document)
        for directory in CRD_DIRS:
            files[root / directory / name] = text
    files[root / DOCS_FILE] = render_reference(KINDS)
    return files


def stale(root: Path, files: dict[Path, str]) -> list[Path]:
    """Generated-looking CRD files that the models no longer produce."""
    return sorted(
        path
        for directory in CRD_DIRS
        for path in (root / directory).glob(CRD_GLOB)
        if path not in files
    )


def drift(root: Path) -> list[Path]:
    """Files that differ from what the models generate, are missing, or are left over."""
    files = generated(root)
    changed = [
        path
        for path, text in files.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    return sorted(changed + stale(root, files))


def write(root: Path) -> list[Path]:
    """Write every generated file, remove leftovers; return what changed."""
    files = generated(root)
    changed = drift(root)
    for path in stale(root, files):
        path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shardkeeper.api.generate",
        description="Generate the CRDs and the API reference from the models.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming every file that differs from the models",
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    if not (root / "operator" / "shardkeeper").is_dir():
        print(f"error: {root} is not the Shardkeeper repository root", file=sys.stderr)
        return 2
    if args.check:
        drifted = drift(root)
        for path in drifted:
            print(
                f"{path.relative_to(root)} differs from the models: run `make crds`",
                file=sys.stderr,
            )
        return 1 if drifted else 0
    for path in write(root):
        print(f"wrote {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
