"""Writing a file volume's content to its directory, atomically per file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from shardkeeper_dev.node.volumes import File


def write_volume_files(directory: Path, files: Mapping[str, File]) -> None:
    """Make ``directory`` hold exactly ``files``; unchanged files are left alone, so a
    reader never sees a half-written file and an idle refresh writes nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = directory / relative
        try:
            same = (
                target.read_bytes() == content.data
                and target.stat().st_mode & 0o7777 == content.mode
            )
        except OSError:
            same = False
        if same:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(content.data)
        partial.chmod(content.mode)
        os.replace(partial, target)
    wanted = {directory / relative for relative in files}
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
