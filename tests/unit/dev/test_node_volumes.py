"""Pod volumes as host directories: file contents and bind mounts."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shardkeeper_dev.node.podcontext import ConfigError, PodContext
from shardkeeper_dev.node.volumes import (
    File,
    Mount,
    TokenSource,
    claim_name,
    container_mounts,
    token_sources,
    volume_files,
    volume_references,
)

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"b": "2", "a": "1"}},
    "spec": {"containers": [{"name": "app"}]},
}
CTX = PodContext(POD, "127.1.0.9", "127.0.0.1", {})
CONFIG_MAPS: dict[str, Any] = {
    "cfg": {
        "data": {"one": "1", "two": "2"},
        "binaryData": {"bin": base64.b64encode(b"\0").decode()},
    },
    "kube-root-ca.crt": {"data": {"ca.crt": "PEM"}},
    "gone": None,
}
SECRETS: dict[str, Any] = {"sec": {"data": {"key": base64.b64encode(b"secret").decode()}}}
ACCESS = TokenSource("", 3607)


def files(volume: dict[str, Any], tokens: dict[TokenSource, str] | None = None) -> dict[str, File]:
    return volume_files(CTX, volume, config_maps=CONFIG_MAPS, secrets=SECRETS, tokens=tokens or {})


def test_config_map_volume_holds_every_key() -> None:
    assert files({"name": "v", "configMap": {"name": "cfg"}}) == {
        "one": File(b"1", 0o644),
        "two": File(b"2", 0o644),
        "bin": File(b"\0", 0o644),
    }


def test_items_select_keys_paths_and_modes() -> None:
    volume = {
        "name": "v",
        "configMap": {
            "name": "cfg",
            "defaultMode": 0o600,
            "items": [
                {"key": "one", "path": "sub/first"},
                {"key": "two", "path": "x", "mode": 0o400},
            ],
        },
    }
    assert files(volume) == {"sub/first": File(b"1", 0o600), "x": File(b"2", 0o400)}


def test_missing_objects_and_keys() -> None:
    assert files({"name": "v", "configMap": {"name": "gone", "optional": True}}) == {}
    with pytest.raises(ConfigError, match='configmap "gone" not found'):
        files({"name": "v", "configMap": {"name": "gone"}})
    with pytest.raises(ConfigError, match="couldn't find key nope"):
        files({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "n"}]}})


def test_paths_may_not_leave_the_volume() -> None:
    with pytest.raises(ConfigError, match="relative"):
        files(
            {"name": "v", "configMap": {"name": "cfg", "items": [{"key": "one", "path": "../x"}]}}
        )


def test_secret_volume_is_decoded() -> None:
    assert files({"name": "v", "secret": {"secretName": "sec"}}) == {"key": File(b"secret", 0o644)}


def test_service_account_projection() -> None:
    # what the ServiceAccount admission plugin adds to every pod
    volume = {
        "name": "kube-api-access-x",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }
    pod = {**POD, "spec": {**POD["spec"], "volumes": [volume]}}
    assert token_sources(pod) == {ACCESS}
    assert files(volume, {ACCESS: "jwt"}) == {
        "token": File(b"jwt", 0o644),
        "ca.crt": File(b"PEM", 0o644),
        "namespace": File(b"ns", 0o644),
    }
    assert volume_references(pod).config_maps == {"kube-root-ca.crt"}


def test_downward_api_labels_file_is_sorted_key_value_lines() -> None:
    volume = {
        "name": "v",
        "downwardAPI": {
            "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
        },
    }
    assert files(volume)["labels"].data == b'a="1"\nb="2"\n'


VOLUMES = {
    "data": {"name": "data", "persistentVolumeClaim": {"claimName": "c"}},
    "cfg": {"name": "cfg", "configMap": {"name": "cfg"}},
    "scratch": {"name": "scratch", "emptyDir": {}},
    "ro-claim": {"name": "ro-claim", "persistentVolumeClaim": {"claimName": "d", "readOnly": True}},
}
SOURCES = {"data": "/pv/data", "cfg": "/run/cfg", "scratch": "/run/scratch", "ro-claim": "/pv/d"}


def test_mounts_are_ordered_parents_first_with_read_only_file_volumes() -> None:
    container = {
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/data/config"},
            {"name": "data", "mountPath": "/data/"},
            {"name": "scratch", "mountPath": "/tmp/s", "readOnly": True},
            {"name": "ro-claim", "mountPath": "/ro"},
        ]
    }
    assert container_mounts(container, VOLUMES, SOURCES, {}) == [
        Mount("/pv/data", "/data", False),
        Mount("/pv/d", "/ro", True),
        Mount("/run/cfg", "/data/config", True),
        Mount("/run/scratch", "/tmp/s", True),
    ]


def test_sub_paths_and_expressions() -> None:
    container = {
        "volumeMounts": [
            {"name": "data", "mountPath": "/a", "subPath": "x/y"},
            {"name": "data", "mountPath": "/b", "subPathExpr": "pods/$(POD_NAME)"},
        ]
    }
    mounts = container_mounts(container, VOLUMES, SOURCES, {"POD_NAME": "web-0"})
    assert [m.source for m in mounts] == ["/pv/data/x/y", "/pv/data/pods/web-0"]


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ({"name": "nope", "mountPath": "/x"}, "names no volume"),
        ({"name": "data", "mountPath": "relative"}, "absolute"),
        ({"name": "data", "mountPath": "/"}, "absolute"),
        ({"name": "data", "mountPath": "/x", "subPath": "../escape"}, "relative"),
    ],
)
def test_bad_mounts_are_config_errors(mount: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        container_mounts({"volumeMounts": [mount]}, VOLUMES, SOURCES, {})


def test_claims_behind_volumes() -> None:
    assert claim_name(POD, VOLUMES["data"]) == "c"
    assert claim_name(POD, {"name": "tmp", "ephemeral": {"volumeClaimTemplate": {}}}) == "p-tmp"
    assert claim_name(POD, VOLUMES["scratch"]) is None
