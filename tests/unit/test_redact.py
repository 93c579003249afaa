"""Secret values out of log lines and status messages, libpq's quotes included."""

from __future__ import annotations

import io
import json
import logging

import psycopg
import pytest

from shardkeeper.api.task import PostgresMaterialization
from shardkeeper.redact import REDACTED, LogFilter, Secrets, without_quoted_input
from shardkeeper.runtime.core.errors import TaskMisconfigured
from shardkeeper.runtime.kinds.materialize_postgres import connection_string
from shardkeeper.runtime.shell import logs


def test_every_value_read_is_replaced_longest_first() -> None:
    secrets = Secrets()
    secrets.add("s3cr3t")
    secrets.add("s3cr3t-and-more\n")
    secrets.add("abc")  # too short to tell from ordinary words: left as it is
    secrets.add(None)
    text = "got s3cr3t-and-more, s3cr3t and abc"
    assert secrets.redact(text) == f"got {REDACTED}, {REDACTED} and abc"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql//bob:s3cretpw@db/x",
        "host=db password=s3cretpw junk",
        "postgresql://bob:s3cretpw%zz@db/x",
        "postgresql://bob:pw@db/x?s3cretpw",
        "host=db password='s3cretpw",
    ],
)
def test_what_libpq_quotes_of_a_malformed_dsn_is_left_out(dsn: str) -> None:
    with pytest.raises(psycopg.ProgrammingError) as refused:
        psycopg.conninfo.conninfo_to_dict(dsn)
    message = without_quoted_input(str(refused.value))
    assert "s3cretpw" not in message
    assert "junk" not in message
    assert message, "libpq's own words stay"


def test_a_malformed_dsn_is_a_misconfiguration_that_names_the_secret_not_its_value() -> None:
    spec = PostgresMaterialization.model_validate(
        {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "tables": {"a": "a"}}
    )
    with pytest.raises(TaskMisconfigured) as failed:
        connection_string(spec, lambda _: "postgresql://bob:hunter2%zz@db/x")
    assert "Secret 'pg' (key 'dsn') is not valid: invalid percent-encoded token" in str(
        failed.value
    )
    assert "hunter2" not in str(failed.value)
    # libpq's own exception, which quotes the value, is not chained into tracebacks
    assert failed.value.__cause__ is None
    assert failed.value.__suppress_context__


def test_a_dsn_registers_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = Secrets()
    monkeypatch.setattr("shardkeeper.runtime.kinds.materialize_postgres.SECRETS", secrets)
    spec = PostgresMaterialization.model_validate(
        {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "tables": {"a": "a"}}
    )
    connection_string(spec, lambda _: "postgresql://bob:p%40ssword@db/x")
    assert secrets.redact("auth p@ssword failed") == f"auth {REDACTED} failed"


def test_log_lines_leave_secret_values_out(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = Secrets()
    secrets.add("hunter2-value")
    monkeypatch.setattr("shardkeeper.redact.SECRETS", secrets)
    out = io.StringIO()
    logger = logging.getLogger("test-redact")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter(logs.LogContext("s", "p", "ns")))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("bad hunter2-value")
        except RuntimeError:
            logger.exception("failed with %s", "hunter2-value", extra={"dsn": "hunter2-value"})
    finally:
        logger.removeHandler(handler)
    assert "hunter2" not in out.getvalue()
    line = json.loads(out.getvalue())
    assert (line["msg"], line["dsn"]) == (f"failed with {REDACTED}", REDACTED)
    assert f"RuntimeError: bad {REDACTED}" in line["exception"]


def test_the_operators_log_filter_redacts_message_and_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = Secrets()
    secrets.add("hunter2-value")
    monkeypatch.setattr("shardkeeper.redact.SECRETS", secrets)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(LogFilter())
    logger = logging.getLogger("test-redact-operator")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("bad hunter2-value")
        except RuntimeError:
            logger.exception("check failed: %s", "hunter2-value")
    finally:
        logger.removeHandler(handler)
    assert "hunter2" not in out.getvalue()
    assert f"check failed: {REDACTED}" in out.getvalue()
    assert f"RuntimeError: bad {REDACTED}" in out.getvalue()
