"""`shardkeeper dev logs`: which container's file it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardkeeper_dev.node.logs import choose_container, logs_main


def test_choose_container(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("")
    assert choose_container(tmp_path, None) == "a"
    (tmp_path / "b.log").write_text("")
    with pytest.raises(LookupError, match="one of: a, b"):
        choose_container(tmp_path, None)
    assert choose_container(tmp_path, "b") == "b"
    (tmp_path / "pod.json").write_text(json.dumps({"defaultContainer": "b"}))
    assert choose_container(tmp_path, None) == "b"


def test_logs_main_prints_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod_dir = tmp_path / "node" / "pods" / "ns" / "web-0"
    pod_dir.mkdir(parents=True)
    (pod_dir / "app.log").write_text("line 1\nline 2\n")
    # the environment's state dir works as well as the node's own
    assert logs_main(["--state-dir", str(tmp_path), "ns/web-0"]) == 0
    assert capsys.readouterr().out == "line 1\nline 2\n"
    assert logs_main(["--state-dir", str(tmp_path / "node"), "ns/web-0", "-c", "nope"]) == 1
    assert logs_main(["--state-dir", str(tmp_path), "ns/other"]) == 1
