"""`make image` (`shardkeeper dev image`): the OCI archive it writes, unpacked with umoci
and run under runc, the way a container runtime would run it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from tests.support.image import build_archive

import shardkeeper
from shardkeeper_dev import image

# the packages that only a checkout may have: dev tooling, tests and dev dependencies
DEV_ONLY = ("shardkeeper_dev", "tests", "bench", "pytest", "_pytest", "hypothesis", "mypy", "ruff")


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_archive(tmp_path_factory.mktemp("image-out"))


@pytest.fixture(scope="session")
def layout(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("layout")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    return dest


def _blob(layout: Path, digest: str) -> Any:
    algorithm, hexdigest = digest.split(":")
    return json.loads((layout / "blobs" / algorithm / hexdigest).read_text())


@pytest.fixture(scope="session")
def image_config(layout: Path) -> dict[str, Any]:
    [manifest] = json.loads((layout / "index.json").read_text())["manifests"]
    config: dict[str, Any] = _blob(layout, _blob(layout, manifest["digest"])["config"]["digest"])
    return config


@pytest.fixture(scope="session")
def bundle(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("bundle") / "bundle"
    proc = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{image.project_version()}", str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return dest


def _runc(bundle: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in the bundle under runc, with the rest of the config as umoci made it
    from the image config (user, env, working directory), and a read-only root."""
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = args
    config["process"]["terminal"] = False
    config["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"shardkeeper-test-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        return subprocess.run(
            ["runc", "run", "--bundle", str(bundle), name],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True, timeout=60)


def test_the_archive_is_tagged_with_the_version(layout: Path) -> None:
    [manifest] = json.loads((layout / "index.json").read_text())["manifests"]
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == shardkeeper.__version__
    assert image.project_version() == shardkeeper.__version__


def test_the_config_runs_shardkeeper_as_a_non_root_user(image_config: dict[str, Any]) -> None:
    config = image_config["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["shardkeeper"]
    assert "PYTHONUNBUFFERED=1" in config["Env"]
    assert any(e.startswith("PATH=/opt/shardkeeper/bin:") for e in config["Env"])


def test_shardkeeper_version_runs_under_runc(bundle: Path, image_config: dict[str, Any]) -> None:
    proc = _runc(bundle, [*image_config["config"]["Entrypoint"], "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == shardkeeper.__version__


def test_the_process_runs_as_uid_65532_on_debian_python(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["user"]["uid"] == 65532
    script = "import os, sys; print(os.getuid(), os.getgid(), sys.prefix, sys.version_info[:2])"
    proc = _runc(bundle, ["python3", "-c", script])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split(maxsplit=3) == [
        "65532",
        "65532",
        "/opt/shardkeeper",
        "(3, 11)",
    ]


def test_the_image_holds_no_dev_code(bundle: Path) -> None:
    rootfs = bundle / "rootfs"
    [site] = rootfs.glob("opt/shardkeeper/lib/python3.*/site-packages")
    names = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert "shardkeeper" in names
    assert sorted(names & set(DEV_ONLY)) == []
    # and nowhere else in the image either: the root's own Python has no extra packages
    found = [
        str(p.relative_to(rootfs))
        for name in ("shardkeeper_dev", "pytest", "_pytest", "devenv", "bench")
        for p in rootfs.rglob(name)
    ]
    assert found == []


def test_the_base_archive_has_what_the_dockerfile_needs(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`--base` writes the base alone, for `docker build --build-arg BASE=...`: the
    Dockerfile's build stage needs python3 3.11 with a venv module that can install pip."""
    out = tmp_path_factory.mktemp("base-out")
    proc = subprocess.run(
        [sys.executable, "-m", "shardkeeper", "dev", "image", "--base", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [archive] = out.glob("shardkeeper-base-bookworm-*.oci.tar")
    layout = out / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")
    bundle = out / "bundle"
    unpack = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:bookworm", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert unpack.returncode == 0, unpack.stderr
    script = "import ensurepip, sys; print(sys.version_info[:2], ensurepip.version())"
    run = _runc(bundle, ["python3", "-c", script])
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("(3, 11) ")
    assert not (bundle / "rootfs" / "opt" / "shardkeeper").exists()
