"""A container's environment, resolved as a kubelet resolves it."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shardkeeper_dev.node.podcontext import ConfigError, PodContext
from shardkeeper_dev.node.podenv import References, env_references, resolve_env

POD: dict[str, Any] = {
    "metadata": {
        "name": "web-0",
        "namespace": "ns",
        "uid": "uid-1",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"note": 'say "hi"'},
    },
    "spec": {
        "nodeName": "process-node",
        "serviceAccountName": "runner",
        "containers": [
            {"name": "app", "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}}}
        ],
    },
}
CTX = PodContext(POD, "127.1.0.7", "127.0.0.1", {"cpu": "2", "memory": "8Gi"})
SERVICE = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}


def _secret(**values: str) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def resolve(container: dict[str, Any], **objects: Any) -> dict[str, str]:
    return resolve_env(
        CTX,
        {"name": "app", **container},
        config_maps=objects.get("config_maps", {}),
        secrets=objects.get("secrets", {}),
        service_env=SERVICE,
    )


def test_plain_values_and_service_variables() -> None:
    env = resolve({"env": [{"name": "A", "value": "1"}, {"name": "EMPTY"}]})
    assert env == {**SERVICE, "A": "1", "EMPTY": ""}


def test_values_expand_earlier_variables_only() -> None:
    env = resolve(
        {
            "env": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "$(A)-$(C)-$(KUBERNETES_SERVICE_PORT)"},
                {"name": "C", "value": "c"},
                {"name": "D", "value": "$$(A)"},
            ]
        }
    )
    assert env["B"] == "a-$(C)-6443"
    assert env["D"] == "$(A)"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "web-0"),
        ("metadata.namespace", "ns"),
        ("metadata.uid", "uid-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['note']", 'say "hi"'),
        ("spec.nodeName", "process-node"),
        ("spec.serviceAccountName", "runner"),
        ("status.podIP", "127.1.0.7"),
        ("status.podIPs", "127.1.0.7"),
        ("status.hostIP", "127.0.0.1"),
    ],
)
def test_field_refs(path: str, expected: str) -> None:
    env = resolve({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    assert env["V"] == expected


def test_unsupported_field_ref_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported fieldPath"):
        resolve({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]})


def test_resource_field_refs_round_up_and_default_to_the_node() -> None:
    def ref(resource: str, divisor: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"resource": resource}
        if divisor:
            spec["divisor"] = divisor
        return {"valueFrom": {"resourceFieldRef": spec}}

    env = resolve(
        {
            "env": [
                {"name": "MEM_MI", **ref("limits.memory", "1Mi")},
                {"name": "CPU_LIMIT", **ref("limits.cpu")},
                {"name": "CPU_REQ", **ref("requests.cpu")},
                {"name": "CPU_REQ_M", **ref("requests.cpu", "1m")},
            ]
        }
    )
    assert env["MEM_MI"] == "1024"
    assert env["CPU_LIMIT"] == "2"  # no limit: the node's allocatable
    assert env["CPU_REQ"] == "1"  # 250m rounds up to a whole core
    assert env["CPU_REQ_M"] == "250"


def test_config_map_and_secret_keys() -> None:
    env = resolve(
        {
            "env": [
                {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                {"name": "P", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            ]
        },
        config_maps={"cfg": {"data": {"greeting": "hello"}}},
        secrets={"sec": _secret(password="s3cret")},
    )
    assert (env["G"], env["P"]) == ("hello", "s3cret")


def test_optional_refs_are_skipped_and_required_ones_fail() -> None:
    optional = {
        "env": [
            {
                "name": "A",
                "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": True}},
            },
            {
                "name": "B",
                "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nokey", "optional": True}},
            },
        ]
    }
    env = resolve(optional, config_maps={"gone": None}, secrets={"sec": _secret(x="1")})
    assert "A" not in env
    assert "B" not in env

    with pytest.raises(ConfigError, match='configmap "gone" not found'):
        resolve(
            {
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}
                ]
            },
            config_maps={"gone": None},
        )
    with pytest.raises(ConfigError, match="couldn't find key nokey"):
        resolve(
            {
                "env": [
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nokey"}}}
                ]
            },
            secrets={"sec": _secret(x="1")},
        )


def test_env_from_prefixes_skips_invalid_names_and_env_wins() -> None:
    env = resolve(
        {
            "envFrom": [
                {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                {"secretRef": {"name": "sec"}},
                {"secretRef": {"name": "gone", "optional": True}},
            ],
            "env": [{"name": "TOKEN", "value": "from env"}],
        },
        config_maps={"cfg": {"data": {"a": "1", "bad=key": "2"}}},
        secrets={"sec": _secret(TOKEN="from secret", USER="u"), "gone": None},
    )
    assert env["CFG_a"] == "1"
    assert not any("bad" in k for k in env)
    assert env["USER"] == "u"
    assert env["TOKEN"] == "from env"


def test_env_from_a_missing_object_fails() -> None:
    with pytest.raises(ConfigError, match='secret "gone" not found'):
        resolve({"envFrom": [{"secretRef": {"name": "gone"}}]}, secrets={"gone": None})


def test_references_name_every_object_used() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "b"}}],
        "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "d", "key": "k"}}},
            {"name": "Z", "value": "plain"},
        ],
    }
    assert env_references(container) == References(frozenset("ac"), frozenset("bd"))
