"""Kubernetes ``$(VAR)`` expansion, as in k8s.io/kubernetes/third_party/forked/golang/expansion.

``$(NAME)`` becomes the variable's value when it is defined and stays as written when it
is not; ``$$`` is an escaped ``$``, so ``$$(NAME)`` stays ``$(NAME)``. Anything else after
a ``$`` is copied unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, variables: Mapping[str, str]) -> str:
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_variable(text[cursor + 1 :])
            if is_var:
                out.append(variables.get(read, f"$({read})"))
            else:
                out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _read_variable(rest: str) -> tuple[str, bool, int]:
    """(text read, whether it is a variable name, characters consumed) after a ``$``."""
    if rest[0] == "$":
        return "$", False, 1
    if rest[0] == "(":
        close = rest.find(")", 1)
        if close != -1:
            return rest[1:close], True, close + 1
        return "$(", False, 1
    return "$" + rest[0], False, 1
