"""tests/support/wait.py: which probe errors mean "not yet", and what a timeout reports."""

from __future__ import annotations

import pytest
from tests.support.wait import wait_for


def test_a_connection_refused_is_retried_until_the_probe_answers() -> None:
    answers: list[object] = [ConnectionRefusedError(111, "refused"), None, "up"]

    def probe() -> str | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    assert wait_for(probe, timeout=30, what="the server", interval=0) == "up"
    assert answers == []


def test_any_other_error_of_the_probe_fails_at_once() -> None:
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        raise KeyError("status")

    with pytest.raises(KeyError, match="status"):
        wait_for(probe, timeout=30, what="a status", interval=0)
    assert calls == [1]


def test_an_assertion_in_the_probe_is_not_mistaken_for_not_yet() -> None:
    def probe() -> bool:
        raise AssertionError("the replica exited with 1")

    with pytest.raises(AssertionError, match="the replica exited with 1"):
        wait_for(probe, timeout=30, what="PRIMARY", interval=0)


def test_a_timeout_names_and_chains_the_last_exception() -> None:
    def probe() -> bool:
        raise FileNotFoundError(2, "No such file", "/tmp/log")

    with pytest.raises(AssertionError, match=r"waiting for the log.*No such file") as caught:
        wait_for(probe, timeout=0, what="the log", interval=0)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_a_timeout_names_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for 3 rows \(last: \[\]\)") as caught:
        wait_for(lambda: [], timeout=0, what="3 rows", interval=0)
    assert caught.value.__cause__ is None


def test_the_caller_names_what_else_means_not_yet() -> None:
    answers: list[object] = [LookupError("no table yet"), 7]

    def probe() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    assert wait_for(probe, timeout=30, what="rows", interval=0, retry=(LookupError,)) == 7
