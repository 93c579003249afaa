"""Development tools built from their official Go modules and cached by name and version.

The versions below are the only place the project pins them. Binaries land in
``$SHARDKEEPER_CACHE/tools/<name>-<version>/`` (default ``~/.cache/shardkeeper``), outside
any checkout, so a second run or a fresh clone on the same machine reuses them.

Modules that carry ``replace`` directives towards sibling directories (Kubernetes'
staging repositories, etcd's api/client/pkg modules) cannot be ``go install``-ed. We build
them from a small generated module of our own that maps each local replace to the
published module at the matching version.

This module uses only the standard library: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
HELM_VERSION = "v3.22.0"
KUBE_SCORE_VERSION = "v1.20.0"

MIN_GO = (1, 24)


class ToolError(RuntimeError):
    """A tool cannot be built or found; the message says what to install or run."""


@dataclasses.dataclass(frozen=True)
class Tool:
    """One Go module, built into one or more binaries."""

    name: str
    module: str
    version: str
    # binary name -> Go package path
    binaries: dict[str, str]
    # how a local ``replace`` target maps to a published version of that module
    replace_version: Callable[[str], str] | None = None
    ldflags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


def _kube_staging_version(version: str) -> str:
    # Kubernetes v1.X.Y publishes its staging repositories as v0.X.Y.
    return "v0" + version[2:]


def _minio_ldflags(version: str) -> tuple[str, ...]:
    # pseudo-version v0.0.0-YYYYMMDDhhmmss-commit -> MinIO's own release-tag format
    stamp, commit = version.split("-")[1:3]
    when = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}Z"
    pkg = "github.com/minio/minio/cmd"
    return (
        f"-X {pkg}.Version={when}",
        f"-X {pkg}.ReleaseTag=RELEASE.{when.replace(':', '-')}",
        f"-X {pkg}.CommitID={commit}",
        f"-X {pkg}.ShortCommitID={commit}",
    )


def _kube_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version[1:].split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return tuple(flags)


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=ETCD_VERSION,
            binaries={"etcd": "go.etcd.io/etcd/server/v3"},
            replace_version=lambda _path: ETCD_VERSION,
        ),
        Tool(
            name="kubernetes",
            module="k8s.io/kubernetes",
            version=KUBERNETES_VERSION,
            binaries={
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            },
            replace_version=lambda _path: _kube_staging_version(KUBERNETES_VERSION),
            ldflags=_kube_ldflags(KUBERNETES_VERSION),
        ),
        # the real node's kubelet (``dev up --node real``): its own key, so that the
        # control plane's binaries are not rebuilt for it; the Go build cache shares
        # the packages the two have in common
        Tool(
            name="kubelet",
            module="k8s.io/kubernetes",
            version=KUBERNETES_VERSION,
            binaries={"kubelet": "k8s.io/kubernetes/cmd/kubelet"},
            replace_version=lambda _path: _kube_staging_version(KUBERNETES_VERSION),
            ldflags=_kube_ldflags(KUBERNETES_VERSION),
        ),
        Tool(
            name="minio",
            module="github.com/minio/minio",
            version=MINIO_VERSION,
            binaries={"minio": "github.com/minio/minio"},
            ldflags=_minio_ldflags(MINIO_VERSION),
        ),
        Tool(
            name="helm",
            module="helm.sh/helm/v3",
            version=HELM_VERSION,
            binaries={"helm": "helm.sh/helm/v3/cmd/helm"},
            ldflags=(f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
        ),
        Tool(
            name="kube-score",
            module="github.com/zegl/kube-score",
            version=KUBE_SCORE_VERSION,
            binaries={"kube-score": "github.com/zegl/kube-score/cmd/kube-score"},
            ldflags=(f"-X main.version={KUBE_SCORE_VERSION}",),
        ),
    )
}


def cache_root() -> Path:
    return Path(os.environ.get("SHARDKEEPER_CACHE", Path.home() / ".cache" / "shardkeeper"))


def tool_dir(tool: Tool) -> Path:
    return cache_root() / "tools" / tool.key


def binary_path(binary: str) -> Path:
    """Path of a cached binary; raises ToolError naming ``make tools`` if it is not built."""
    for tool in TOOLS.values():
        if binary in tool.binaries:
            path = tool_dir(tool) / binary
            if not is_built(tool):
                raise ToolError(
                    f"{binary} ({tool.module}@{tool.version}) is not built yet; "
                    f"run `make tools` (expected at {path})"
                )
            return path
    raise ToolError(f"unknown tool binary {binary!r}")


def is_built(tool: Tool) -> bool:
    return (tool_dir(tool) / ".complete").exists()


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolError(
            f"the Go toolchain (>= {MIN_GO[0]}.{MIN_GO[1]}) is needed to build the tools: "
            "install it (Debian: `apt-get install golang-go`, or from the Go download page) "
            "and put `go` on PATH"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if match is None or (int(match[1]), int(match[2])) < MIN_GO:
        raise ToolError(
            f"Go {out.stdout.strip()} is too old; the tools need Go >= {MIN_GO[0]}.{MIN_GO[1]}"
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    return env


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str], what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"{what} failed:\n$ {' '.join(cmd)}\n{proc.stderr.strip()[-4000:]}")
    return proc.stdout


def _local_replaces(tool: Tool, go: str, workdir: Path, env: dict[str, str]) -> list[str]:
    """Map the tool module's own ``replace X => ./local`` directives to published modules."""
    if tool.replace_version is None:
        return []
    gomod = _run(
        [go, "mod", "download", "-json", f"{tool.module}@{tool.version}"],
        workdir,
        env,
        f"downloading {tool.module}@{tool.version}",
    )
    match = re.search(r'"GoMod":\s*"([^"]+)"', gomod)
    if match is None:
        raise ToolError(f"go mod download gave no go.mod for {tool.module}@{tool.version}")
    text = Path(match[1]).read_text()
    lines = []
    for path, target in re.findall(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+(\.\S*)\s*$", text, re.M):
        if "FORBIDDEN" in target:
            continue
        lines.append(f"replace {path} => {path} {tool.replace_version(path)}")
    return lines


class _Progress:
    """Prints how many packages a build has compiled, every few seconds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _report(self) -> None:
        while not self._stop.wait(15):
            elapsed = time.monotonic() - self.started
            print(f"  {self.name}: {self.count} packages compiled, {elapsed:.0f}s", flush=True)


def build(tool: Tool, force: bool = False) -> Path:
    """Build ``tool`` into the cache unless it is already there; return its directory."""
    dest = tool_dir(tool)
    if is_built(tool) and not force:
        return dest
    go = _go()
    env = _go_env()
    build_root = cache_root() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_root, prefix=f"{tool.key}-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(f"module shardkeeper.local/tools/{tool.name}\n\ngo 1.24\n")
        replaces = _local_replaces(tool, go, work, env)
        gomod = [f"module shardkeeper.local/tools/{tool.name}", "", "go 1.24", ""]
        gomod.append(f"require {tool.module} {tool.version}")
        gomod += replaces
        (work / "go.mod").write_text("\n".join(gomod) + "\n")
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        print(f"building {tool.name} {tool.version} from {tool.module} ...", flush=True)
        ldflags = " ".join(("-s", "-w", *tool.ldflags))
        cmd = [go, "build", "-v", "-trimpath", "-ldflags", ldflags]
        if len(tool.binaries) == 1:
            [(binary, package)] = tool.binaries.items()
            cmd += ["-o", str(staging / binary), package]
        else:
            # One invocation for all of a module's binaries: Go schedules their packages
            # together, so the shared ones compile once and the links run in parallel.
            # Each binary is then named after its package's last element.
            cmd += ["-o", f"{staging}/", *tool.binaries.values()]
        with _Progress(tool.name) as progress:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            tail: list[str] = []
            for line in proc.stderr:
                progress.count += 1
                tail = [*tail, line][-60:]
            if proc.wait() != 0:
                raise ToolError(
                    f"building {', '.join(tool.binaries)} of {tool.module}@{tool.version} failed:\n"
                    + "".join(tail)
                )
        missing = [b for b in tool.binaries if not (staging / b).is_file()]
        if missing:
            raise ToolError(f"building {tool.module}@{tool.version} did not produce {missing}")
        (staging / ".complete").write_text(f"{tool.module}@{tool.version}\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return dest


def version_of(binary: str) -> str:
    """The first line a cached binary prints about its own version."""
    path = binary_path(binary)
    args = {
        "kubectl": ["version", "--client"],
        "helm": ["version", "--short"],
        "minio": ["--version"],
        "kube-score": ["version"],
    }.get(binary, ["--version"])
    out = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardkeeper dev tools", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"tools to build (default: all of {list(TOOLS)})")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--path", metavar="BINARY", help="print the path of a cached binary")
    args = parser.parse_args(argv)
    try:
        if args.path:
            print(binary_path(args.path))
            return 0
        for name in args.names or list(TOOLS):
            if name not in TOOLS:
                raise ToolError(f"unknown tool {name!r}; known: {', '.join(TOOLS)}")
            tool = TOOLS[name]
            started = time.monotonic()
            cached = is_built(tool) and not args.force
            build(tool, force=args.force)
            how = "cached" if cached else f"built in {time.monotonic() - started:.0f}s"
            for binary in tool.binaries:
                print(f"{binary:<24} {version_of(binary):<50} ({how})", flush=True)
    except ToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
