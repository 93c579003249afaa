"""Kubernetes $(VAR) expansion, with the cases of the kubelet's own expansion tests."""

from __future__ import annotations

import pytest

from shardkeeper_dev.node.expansion import expand

VARS = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("$$$(VAR_A)", "$A"),
        ("$(VAR_REF)", "$(VAR_A)"),  # values are not expanded again
        ("$(VAR_EMPTY)", ""),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("$(VAR_A", "$(VAR_A"),
        ("$()", "$()"),
        ("$", "$"),
        ("foo$", "foo$"),
        ("$VAR_A", "$VAR_A"),
        ("$(VAR_A)$", "A$"),
        ("", ""),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, VARS) == expected
