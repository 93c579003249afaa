"""Start-up messages: each says which object is wrong and what to do."""

from __future__ import annotations

import pytest

from shardkeeper.api.shard import Shard
from shardkeeper.api.task import Task
from shardkeeper.runtime.shell.startup import StartupError, parse, secret_value


def test_an_invalid_object_names_its_fields_and_how_to_fix_it() -> None:
    bad_task = {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "counts"},
        "spec": {"type": "derivation", "storageMapping": "m", "sources": ["a"]},
    }
    with pytest.raises(StartupError) as raised:
        parse(Task, bad_task, "spec.task of Shard 's'")
    message = str(raised.value)
    assert message.startswith("Task 'counts' (spec.task of Shard 's') is invalid: ")
    assert "derive" in message
    assert message.endswith("kubectl edit tasks/counts")


def test_a_valid_object_parses() -> None:
    shard = parse(
        Shard,
        {
            "apiVersion": "shardkeeper.io/v1alpha1",
            "kind": "Shard",
            "metadata": {"name": "t-00000000-00000000"},
            "spec": {
                "task": "t",
                "keyBegin": "00000000",
                "keyEnd": "ffffffff",
                "rClockBegin": "00000000",
                "rClockEnd": "ffffffff",
                "recoveryLog": "recovery/ns/t/00000000-00000000",
            },
        },
        "named by SHARDKEEPER_SHARD",
    )
    assert shard.spec.key_end == 0xFFFFFFFF


def test_secret_messages_say_whether_the_secret_or_the_key_is_missing() -> None:
    with pytest.raises(StartupError, match="Secret 'creds' \\(why\\) does not exist: create it"):
        secret_value(None, "creds", "accessKeyId", "why")
    with pytest.raises(StartupError, match="has no key 'accessKeyId' \\(it has other\\)"):
        secret_value({"other": "x"}, "creds", "accessKeyId", "why")
    assert secret_value({"accessKeyId": "AK"}, "creds", "accessKeyId", "why") == "AK"
