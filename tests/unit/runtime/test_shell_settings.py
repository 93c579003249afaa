"""The pod's environment, as docs/shard-pod.md defines it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardkeeper.api.meta import Duration
from shardkeeper.runtime.shell.settings import SettingsError, settings_from_env

BASE = {"SHARDKEEPER_SHARD": "t-00000000-00000000", "POD_NAME": "t-0", "POD_NAMESPACE": "ns"}


def test_defaults_follow_the_contract() -> None:
    settings = settings_from_env(BASE)
    assert settings.data_dir == Path("/var/lib/shardkeeper")
    assert settings.admin_port == 8081
    assert settings.lease_duration == 15.0
    assert settings.status_interval == 10.0
    assert settings.pod_ip == "127.0.0.1"
    assert settings.kubeconfig is None


def test_every_variable_is_read() -> None:
    settings = settings_from_env(
        {
            **BASE,
            "POD_IP": "127.0.5.1",
            "SHARDKEEPER_DATA_DIR": "/data",
            "SHARDKEEPER_ADMIN_PORT": "9000",
            "SHARDKEEPER_LEASE_DURATION": "3",
            "SHARDKEEPER_STATUS_INTERVAL": "0.5",
            "SHARDKEEPER_PRUNE_EVERY": "1h",
            "SHARDKEEPER_LOG_LEVEL": "debug",
            "KUBECONFIG": "/k",
        }
    )
    assert (settings.pod_ip, settings.data_dir, settings.admin_port) == (
        "127.0.5.1",
        Path("/data"),
        9000,
    )
    assert (settings.lease_duration, settings.status_interval) == (3.0, 0.5)
    assert settings.prune_every == Duration.parse("1h")
    assert (settings.lease_duration, settings.log_level, settings.kubeconfig) == (
        3.0,
        "debug",
        "/k",
    )


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"SHARDKEEPER_SHARD": ""}, "SHARDKEEPER_SHARD is not set"),
        ({"POD_NAME": " "}, "POD_NAME is not set"),
        ({"POD_IP": "pod-0"}, "POD_IP='pod-0' is not an IP address"),
        ({"SHARDKEEPER_ADMIN_PORT": "http"}, "SHARDKEEPER_ADMIN_PORT='http' is not a number"),
        ({"SHARDKEEPER_ADMIN_PORT": "80.5"}, "not a whole number"),
        ({"SHARDKEEPER_LEASE_DURATION": "0"}, "must be between 1 and 3600"),
        ({"SHARDKEEPER_STATUS_INTERVAL": "0"}, "STATUS_INTERVAL='0' must be between 0.1 and 3600"),
        ({"SHARDKEEPER_STATUS_INTERVAL": "soon"}, "STATUS_INTERVAL='soon' is not a number"),
        ({"SHARDKEEPER_PRUNE_EVERY": "5s"}, "PRUNE_EVERY='5s' must be 0s"),
        ({"SHARDKEEPER_PRUNE_EVERY": "daily"}, "PRUNE_EVERY='daily' is not a duration"),
    ],
)
def test_bad_variables_are_named(change: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names.replace("(", r"\(")):
        settings_from_env({**BASE, **change})
