"""`make bench` is not run by `make test`, so a rename in the product would only break it
the next time somebody measures; importing every benchmark module here catches that."""

from __future__ import annotations

import importlib
import pkgutil

import bench
import pytest

MODULES = sorted(info.name for info in pkgutil.iter_modules(bench.__path__))


def test_there_are_benchmarks() -> None:
    assert {
        "bench_operator",
        "bench_runtime",
        "bench_storage",
        "bench_failover",
        "bench_split",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
