"""Build the product's OCI image without a registry or a container engine.

The steps follow the ``Dockerfile`` (one recipe), on a base made here instead of pulled:

1. a minimal Debian bookworm root with Debian's Python 3.11 (``mmdebstrap``), cached as a
   tarball in ``$SHARDKEEPER_CACHE/image/`` keyed by a hash of everything that shapes it;
2. a venv at ``/opt/shardkeeper`` made by the root's own ``python3``, with the wheels of
   ``requirements.lock`` (downloaded once per lock into the cache) and the project's wheel,
   installed by the pinned ``uv`` run inside the root with no network;
3. the user and group 65532, then one layer and the image config packed with ``umoci``
   into ``.build/shardkeeper-<version>.oci.tar`` (an OCI layout, tagged with the version).

The image holds the product package and its runtime dependencies only: no ``devenv/``,
``tests/``, ``bench/`` or dev dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from shardkeeper_dev.tools import cache_root

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
VARIANT = "essential"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# no docs, man pages or translations in the image; the copyright files stay
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
# merged /usr without the usrmerge package, which would pull in perl (about 47 MB)
HOOKS = ("/usr/share/mmdebstrap/hooks/merged-usr",)
UID = 65532
PREFIX = "/opt/shardkeeper"
IMAGE_PATH = f"{PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NEEDED = {"mmdebstrap": "mmdebstrap", "umoci": "umoci"}


class ImageError(RuntimeError):
    """The image cannot be built; the message says what is missing."""


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def archive_path(out_dir: Path, version: str) -> Path:
    return out_dir / f"shardkeeper-{version}.oci.tar"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def base_key() -> str:
    return _digest(SUITE, VARIANT, *PACKAGES, *DPKG_OPTIONS, *HOOKS)


def _run(cmd: Sequence[str | Path], what: str) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed:\n$ {' '.join(map(str, cmd))}\n{proc.stderr[-4000:]}")
    return proc.stdout


def _require_tools() -> None:
    missing = [pkg for binary, pkg in NEEDED.items() if shutil.which(binary) is None]
    if missing:
        raise ImageError(
            f"building the image needs {', '.join(missing)}: "
            f"`apt-get install {' '.join(missing)}` (Debian)"
        )
    if os.geteuid() != 0:
        raise ImageError("building the image needs root (mmdebstrap, chroot, umoci unpack)")


def _uv() -> Path:
    uv = Path(sys.executable).parent / "uv"
    if not uv.is_file():
        raise ImageError(f"no uv next to {sys.executable}; run `make venv`")
    return uv


def base_tarball(log: Callable[[str], None]) -> Path:
    """The cached bookworm root as a tarball; made with mmdebstrap if it is not there."""
    dest = cache_root() / "image" / f"base-{SUITE}-{base_key()}.tar"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial.tar")
    log(f"making the {SUITE} base ({', '.join(PACKAGES)}) with mmdebstrap ...")
    cmd: list[str | Path] = ["mmdebstrap", "--quiet", f"--variant={VARIANT}"]
    cmd += [f"--include={','.join(PACKAGES)}"]
    cmd += [f"--hook-dir={hook}" for hook in HOOKS]
    cmd += [f"--dpkgopt={opt}" for opt in DPKG_OPTIONS]
    cmd += [SUITE, partial]
    _run(cmd, "mmdebstrap")
    partial.rename(dest)
    return dest


def wheels(log: Callable[[str], None]) -> Path:
    """The wheels of requirements.lock for CPython 3.11 on x86_64 glibc, cached per lock."""
    lock = (REPO / "requirements.lock").read_bytes()
    dest = cache_root() / "image" / f"wheels-{hashlib.sha256(lock).hexdigest()[:16]}"
    if (dest / ".complete").exists():
        return dest
    log("downloading the wheels of requirements.lock ...")
    shutil.rmtree(dest, ignore_errors=True)
    # pip takes no range of glibc versions, so every manylinux tag bookworm's glibc accepts
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    cmd: list[str | Path] = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    cmd += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    for platform in platforms:
        cmd += ["--platform", platform]
    for abi in ("cp311", "abi3", "none"):
        cmd += ["--abi", abi]
    cmd += ["-r", REPO / "requirements.lock", "-d", dest]
    _run(cmd, "downloading the locked wheels")
    (dest / ".complete").write_text("")
    return dest


def project_wheel(work: Path) -> Path:
    """The project's wheel, built from a copy of what the Dockerfile copies."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "operator", src / "operator", ignore=shutil.ignore_patterns("__pycache__")
    )
    _run([_uv(), "build", "-q", "--wheel", "--out-dir", work / "dist", src], "building the wheel")
    [wheel] = (work / "dist").glob("shardkeeper-*.whl")
    return wheel


def _install(root: Path, wheel_dir: Path, wheel: Path) -> None:
    stage = root / "tmp" / "shardkeeper-build"
    stage.mkdir()
    shutil.copy2(_uv(), stage / "uv")
    shutil.copytree(wheel_dir, stage / "wheels")
    shutil.copy2(REPO / "requirements.lock", stage / "requirements.lock")
    shutil.copy2(wheel, stage / wheel.name)
    inside = "/tmp/shardkeeper-build"
    uv = [f"{inside}/uv", "pip", "install", "-q", "--offline", "--no-index", "--no-cache"]
    uv += ["--python", f"{PREFIX}/bin/python"]
    steps: list[list[str]] = [
        ["python3", "-m", "venv", "--without-pip", PREFIX],
        [*uv, "--find-links", f"{inside}/wheels", "-r", f"{inside}/requirements.lock"],
        [*uv, "--no-deps", f"{inside}/{wheel.name}"],
    ]
    for step in steps:
        _run(["chroot", root, *step], f"in the image root: {' '.join(step)}")
    shutil.rmtree(stage)
    # as the Dockerfile writes them (the base has no useradd)
    with (root / "etc" / "passwd").open("a") as f:
        f.write(f"shardkeeper:x:{UID}:{UID}::/nonexistent:/usr/sbin/nologin\n")
    with (root / "etc" / "group").open("a") as f:
        f.write(f"shardkeeper:x:{UID}:\n")
    _clear_dev(root)


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root``, each hard link counted once."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen and not os.path.islink(os.path.join(dirpath, name)):
                seen.add(st.st_ino)
                total += st.st_size
    return total


def pack(root: Path, work: Path, tag: str, config: Sequence[str], out: Path) -> None:
    """One layer holding ``root``, the image config from ``config`` (umoci config flags)."""
    layout = work / "layout"
    image = f"{layout}:{tag}"
    _run(["umoci", "init", "--layout", layout], "umoci init")
    _run(["umoci", "new", "--image", image], "umoci new")
    bundle = work / "bundle"
    _run(["umoci", "unpack", "--image", image, bundle], "umoci unpack")
    (bundle / "rootfs").rmdir()
    root.rename(bundle / "rootfs")
    _run(["umoci", "repack", "--image", image, bundle], "umoci repack")
    platform = ["--os", "linux", "--architecture", "amd64"]
    _run(["umoci", "config", "--image", image, *platform, *config], "umoci config")
    _run(["umoci", "gc", "--layout", layout], "umoci gc")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    _run(["tar", "-C", layout, "-cf", partial, "."], "writing the OCI archive")
    partial.rename(out)


def _image_config(version: str) -> list[str]:
    config = ["--config.user", f"{UID}:{UID}", "--config.workingdir", "/"]
    config += ["--config.entrypoint", "shardkeeper", "--config.cmd", "--help"]
    config += ["--config.env", f"PATH={IMAGE_PATH}", "--config.env", "PYTHONUNBUFFERED=1"]
    config += ["--config.label", f"org.opencontainers.image.version={version}"]
    return config


def _clear_dev(root: Path) -> None:
    # runc mounts its own /dev; the nodes mmdebstrap made would only be dead weight
    for node in (root / "dev").iterdir():
        if node.is_dir() and not node.is_symlink():
            shutil.rmtree(node)
        else:
            node.unlink()


def build_base(out_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The base alone as an OCI archive, to give the Dockerfile as ``BASE``."""
    _require_tools()
    base = base_tarball(log)
    out = out_dir / f"shardkeeper-base-{SUITE}-{base_key()}.oci.tar"
    build_root = cache_root() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_root, prefix="image-base-") as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        _run(["tar", "-C", root, "-xf", base], "unpacking the base")
        _clear_dev(root)
        config = [
            "--config.env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        config += ["--config.cmd", "python3"]
        pack(root, work, SUITE, config, out)
    log(f"{out}: {out.stat().st_size / 1e6:.1f} MB, tag {SUITE}")
    return out


def build(out_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Build the image into ``out_dir``; return the archive's path."""
    _require_tools()
    version = project_version()
    base = base_tarball(log)
    wheel_dir = wheels(log)
    build_root = cache_root() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_root, prefix="image-") as tmp:
        work = Path(tmp)
        wheel = project_wheel(work)
        root = work / "root"
        root.mkdir()
        _run(["tar", "-C", root, "-xf", base], "unpacking the base")
        _install(root, wheel_dir, wheel)
        log(
            f"root: {tree_size(root) / 1e6:.1f} MB, of which {PREFIX} "
            f"{tree_size(root / PREFIX.lstrip('/')) / 1e6:.1f} MB"
        )
        out = archive_path(out_dir, version)
        pack(root, work, version, _image_config(version), out)
    log(f"{out}: {out.stat().st_size / 1e6:.1f} MB, tag {version}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardkeeper dev image", description=__doc__)
    parser.add_argument(
        "--out-dir", type=Path, default=REPO / ".build", help="where the archive goes (.build/)"
    )
    parser.add_argument(
        "--base",
        action="store_true",
        help="write only the bookworm base as an OCI archive, for `docker build --build-arg BASE=`",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        (build_base if args.base else build)(args.out_dir, log=lambda msg: print(msg, flush=True))
    except ImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"built in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
