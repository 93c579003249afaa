"""A container's log file holds every run of it, separated by the node's marker lines;
`kubectl logs` wants the output of one run: the current one, or with ``--previous`` the
one before."""

from __future__ import annotations

import dataclasses

MARKER = "--- process-node "
STARTED = ": starting container"
EXITED = ": container exited"


def marker_line(time_text: str, container: str, text: str) -> str:
    return f"{MARKER}{time_text} {container}: {text} ---\n"


def is_marker(line: str) -> bool:
    return line.startswith(MARKER)


@dataclasses.dataclass(frozen=True)
class Run:
    output: str
    ended: bool


def split_runs(text: str) -> list[Run]:
    """The runs in a log file, oldest first, without the marker lines."""
    runs: list[Run] = []
    lines: list[str] = []
    ended = False
    started = False
    for line in text.splitlines(keepends=True):
        if not is_marker(line):
            lines.append(line)
        elif STARTED in line:
            if started or lines:
                runs.append(Run("".join(lines), ended))
            lines, ended, started = [], False, True
        elif EXITED in line:
            ended = True
    if started or lines:
        runs.append(Run("".join(lines), ended))
    return runs


def select(
    text: str,
    *,
    previous: bool = False,
    tail_lines: int | None = None,
    limit_bytes: int | None = None,
) -> Run | None:
    """The run `kubectl logs` asks for, cut as asked; None if there is no such run."""
    runs = split_runs(text)
    index = -2 if previous else -1
    if len(runs) < (2 if previous else 1):
        return None
    run = runs[index]
    output = run.output
    if tail_lines is not None:
        kept = output.splitlines(keepends=True)[-tail_lines:] if tail_lines > 0 else []
        output = "".join(kept)
    if limit_bytes is not None:
        output = output.encode()[:limit_bytes].decode("utf-8", "ignore")
    return Run(output, run.ended)
