"""The README's run command: `make dev` = `dev up --with-operator` then `dev demo`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shardkeeper_dev import environment, processes


def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardkeeper", "dev", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )


def test_the_run_command_shows_documents_flowing(tmp_path: Path) -> None:
    state = str(tmp_path / "env")
    up = _dev("up", "--with-operator", "--state-dir", state)
    assert up.returncode == 0, up.stderr
    records = environment.Environment(Path(state)).records()
    try:
        assert "operator" in [r.name for r in records]
        first = _dev("demo", "--state-dir", state, "--orders", "12")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "customer_totals in PostgreSQL" in first.stdout
        # the demo itself waits until PostgreSQL holds exactly what was posted; a second
        # run checks that totals grow by exactly the new orders, none lost or doubled
        second = _dev("demo", "--state-dir", state, "--orders", "7")
        assert second.returncode == 0, second.stdout + second.stderr
        counts = [
            int(line.split()[-1])
            for line in second.stdout.split("customer_totals in PostgreSQL")[1].splitlines()[2:]
            if line.strip()
        ]
        assert sum(counts) == 19
    finally:
        down = _dev("down", "--state-dir", state)
    assert down.returncode == 0, down.stderr
    assert not any(processes.is_alive(r) for r in records)
