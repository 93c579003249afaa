"""What every benchmark records, and how a run is collected into ``.bench/results.json``.

Each figure is compared with a baseline measured in the same run (raw boto3, raw SQLite,
raw ``kubectl apply``), because this machine is noisy: the ratio is what we track.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class Result:
    """One figure. ``ratio`` is value / baseline; ``better`` says which direction is good."""

    name: str
    value: float
    unit: str
    baseline: float | None
    better: Literal["higher", "lower"]
    params: dict[str, Any]
    target: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        return record


# a quiet machine still runs the environment (etcd, the API server, MinIO) at idle
QUIET_BUSY_FRACTION = 0.25


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_fraction(sample_seconds: float = 3.0) -> float:
    """The share of all CPUs busy over the next ``sample_seconds``."""
    busy0, total0 = cpu_times()
    time.sleep(sample_seconds)
    busy1, total1 = cpu_times()
    return (busy1 - busy0) / max(total1 - total0, 1.0)


def wait_until_quiet(timeout: float = 120.0) -> dict[str, Any]:
    """Wait (up to ``timeout``) for the machine to be quiet, so that what an earlier module
    left running, or another job, does not weigh on the next figures; say how it was."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_fraction()
        if busy <= QUIET_BUSY_FRACTION or time.monotonic() >= deadline:
            return {
                "busy_fraction": round(busy, 3),
                "load1": round(os.getloadavg()[0], 2),
                "quiet": busy <= QUIET_BUSY_FRACTION,
            }


@dataclasses.dataclass
class Run:
    """A collection of results from one ``make bench``, with how busy the machine was
    before each module (``machine_before``)."""

    results: list[Result] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.time)
    machine_before: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def add(self, result: Result) -> None:
        ratio = "" if result.ratio is None else f"  ratio {result.ratio:.3f}"
        base = "" if result.baseline is None else f"  (baseline {result.baseline:.4g})"
        print(f"{result.name:<48} {result.value:>12.4g} {result.unit:<8}{base}{ratio}", flush=True)
        self.results.append(result)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "started": self.started,
            "finished": time.time(),
            "machine": {
                "python": platform.python_version(),
                "node": platform.node(),
                "cpus": os.cpu_count(),
            },
            "machine_before": self.machine_before,
            "results": [r.as_json() for r in self.results],
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class Context:
    """What a benchmark module gets: the running environment and a scratch directory.

    ``quick`` asks for smaller sizes (``make bench QUICK=1``) for a smoke run.
    """

    env: Any  # shardkeeper_dev.environment.EnvInfo
    workdir: Path
    quick: bool


def by_hand(
    module: str,
    argv: list[str] | None,
    run: Callable[[Context, Run, argparse.Namespace], None],
    *,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """``python -m bench.<module> --env-dir DIR [--quick] [--out FILE]``: one module's
    figures against an environment that is already running (``shardkeeper dev up``), in a
    scratch directory of its own. ``options`` adds the module's own arguments."""
    from shardkeeper_dev.environment import Environment

    part = module.removeprefix("bench_")
    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}")
    parser.add_argument("--env-dir", type=Path, required=True, help="a running environment")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=Path(f".bench/{part}.json"))
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{part}-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True)
    try:
        ctx = Context(env=Environment(args.env_dir).info(), workdir=workdir, quick=args.quick)
        out = Run()
        run(ctx, out, args)
        out.write(args.out)
        print(f"wrote {len(out.results)} results to {args.out}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
