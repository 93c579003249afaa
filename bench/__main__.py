"""``python -m bench``: bring the environment up (measuring it), run every ``bench_*.py``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.harness import Context, Result, Run, wait_until_quiet
from shardkeeper_dev import environment, processes, tools


def _control_plane_floor(state_dir: Path) -> float:
    """Seconds for bare etcd + kube-apiserver to answer /readyz: what `up` cannot beat."""
    env = environment.Environment(state_dir)
    started = time.monotonic()
    env.up(die_with_parent=True, only_control_plane=True)
    elapsed = time.monotonic() - started
    env.down(purge=True)
    return elapsed


def bring_up(root: Path, out: Run) -> environment.Environment:
    floor_cold = _control_plane_floor(root / "floor")
    env = environment.Environment(root / "env")
    started = time.monotonic()
    env.up(die_with_parent=True)
    cold = time.monotonic() - started
    env.down()
    started = time.monotonic()
    env.up(die_with_parent=True)
    warm = time.monotonic() - started
    params = {"components": [r.name for r in env.records()]}
    out.add(Result("env.up.cold", cold, "s", floor_cold, "lower", params, target="informational"))
    out.add(Result("env.up.warm", warm, "s", floor_cold, "lower", params, target="informational"))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", action="append", help="run only these bench_* modules")
    parser.add_argument("--out", type=Path, default=Path(".bench/results.json"))
    args = parser.parse_args(argv)

    tools.binary_path("kube-apiserver")  # a clear error before anything starts
    out = Run()
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="shardkeeper-bench-") as tmp:
        root = Path(tmp)
        env = bring_up(root, out)
        try:
            ctx = Context(env=env.info(), workdir=root / "work", quick=args.quick)
            ctx.workdir.mkdir()
            names = sorted(
                m.name
                for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                if m.name.startswith("bench_")
            )
            for name in names:
                if args.only and name not in args.only and name[6:] not in args.only:
                    continue
                print(f"\n== {name}", flush=True)
                machine = wait_until_quiet()
                out.machine_before[name] = machine
                if not machine["quiet"]:
                    print(
                        f"   the machine is not quiet ({machine['busy_fraction']:.0%} busy, "
                        f"load {machine['load1']}): this module's figures are suspect",
                        flush=True,
                    )
                try:
                    importlib.import_module(f"bench.{name}").run(ctx, out)
                except Exception:
                    traceback.print_exc()
                    failed.append(name)
        finally:
            env.down()
            assert not any(processes.is_alive(r) for r in env.records())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.write(args.out)
    print(f"\nwrote {len(out.results)} results to {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
