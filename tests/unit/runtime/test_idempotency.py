"""The idempotency keys a capture remembers stay bounded: recording a key forgets all but
the newest ``keys`` and those older than ``window``."""

from __future__ import annotations

import sqlite3
from typing import Any, cast

import pytest

from shardkeeper.runtime.core import idempotency
from shardkeeper.runtime.core.idempotency import Limits, Remembered
from shardkeeper.storage.store import Transaction


class Txn:
    """The part of a store transaction the module uses, on a plain SQLite database."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        for statement in idempotency.SCHEMA:
            self.conn.execute(statement)

    def runtime_execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, parameters)


def kept(txn: Transaction, keys: list[str]) -> list[str]:
    return [k for k in keys if idempotency.look_up(txn, k) is not None]


def test_only_the_newest_keys_are_kept() -> None:
    txn = cast(Transaction, Txn())
    names = [f"k{n}" for n in range(6)]
    for n, name in enumerate(names):
        idempotency.remember(txn, name, Remembered(b"d", n), 1000.0 + n, Limits(3, 3600))
    assert kept(txn, names) == ["k3", "k4", "k5"]
    assert idempotency.look_up(txn, "k4") == Remembered(b"d", 4)


def test_keys_older_than_the_window_are_forgotten() -> None:
    txn = cast(Transaction, Txn())
    limits = Limits(100, 60.0)
    idempotency.remember(txn, "old", Remembered(b"d", 1), 1000.0, limits)
    idempotency.remember(txn, "recent", Remembered(b"d", 1), 1030.0, limits)
    assert kept(txn, ["old", "recent"]) == ["old", "recent"]
    idempotency.remember(txn, "new", Remembered(b"d", 1), 1061.0, limits)
    assert kept(txn, ["old", "recent", "new"]) == ["recent", "new"]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("x" * 256, "256 characters, more than 255"),
        ("tab\there", "printable ASCII"),
        ("ключ", "printable ASCII"),
    ],
)
def test_a_bad_key_is_named(key: str, problem: str) -> None:
    found = idempotency.key_problem(key)
    assert found is not None
    assert problem in found


def test_a_good_key_has_no_problem() -> None:
    assert idempotency.key_problem("order-17 batch/3") is None
