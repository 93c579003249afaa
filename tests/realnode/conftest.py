"""The real node's session: an environment whose pods run on kubelet, containerd and runc
(``Environment.up(node="real")``), from the image built once per session as `make image`
builds it. The fixtures of tests/conftest.py (kubectl, namespace, bucket, s3, crds) then
work against it unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.image import build_archive

from shardkeeper_dev import environment


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image of this checkout: built here, so that no older .build/ archive is run."""
    return build_archive(tmp_path_factory.mktemp("image-out"))


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
