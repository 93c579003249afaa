"""The real node's session: an environment whose pods run on kubelet, containerd and runc
(``Environment.up(node="real")``), from the image built once per session as `make image`
builds it. The fixtures of tests/conftest.py (kubectl, namespace, bucket, s3, crds) then
work against it unchanged."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardkeeper_dev import environment, image


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image of this checkout: built here, so that no older .build/ archive is run."""
    out = tmp_path_factory.mktemp("image-out")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shardkeeper", "dev", "image", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"image built in {time.monotonic() - started:.1f}s")
    return image.archive_path(out, image.project_version())


@pytest.fixture(scope="session")
def dev_environment(
    tmp_path_factory: pytest.TempPathFactory, image_archive: Path
) -> Iterator[environment.Environment]:
    env = environment.Environment(tmp_path_factory.mktemp("realenv"))
    started = time.monotonic()
    env.up(node="real", image_archive=image_archive, die_with_parent=True)
    print(f"real node up in {time.monotonic() - started:.1f}s (empty containerd state)")
    try:
        yield env
    finally:
        env.down()
