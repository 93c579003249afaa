"""The product's image, built by a test session as `make image` builds it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from shardkeeper_dev import image


def build_archive(out_dir: Path) -> Path:
    """Run ``shardkeeper dev image --out-dir out_dir``; the archive it wrote."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shardkeeper", "dev", "image", "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"image built in {time.monotonic() - started:.1f}s:\n{proc.stdout}")
    return image.archive_path(out_dir, image.project_version())
