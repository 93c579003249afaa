"""Where the cluster's credentials come from (shardkeeper.kube.config.locate), one decision
for the operator's official client, kopf's login and the runtime's light client."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardkeeper.kube.config import (
    KubeconfigError,
    Source,
    context_namespace,
    locate,
    select_context,
)

IN_POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_an_explicit_kubeconfig_comes_first() -> None:
    env = {**IN_POD, "KUBECONFIG": "/env/k", "HOME": "/home/u"}
    assert locate(Path("/arg/k"), env) == Source(Path("/arg/k"), "argument")
    assert locate("/arg/k", env) == Source(Path("/arg/k"), "argument")


def test_then_kubeconfig_even_in_a_pod() -> None:
    env = {**IN_POD, "KUBECONFIG": " /env/k ", "HOME": "/home/u"}
    assert locate(None, env) == Source(Path("/env/k"), "KUBECONFIG")
    assert locate("", env) == Source(Path("/env/k"), "KUBECONFIG")


def test_then_the_service_account_in_a_pod() -> None:
    source = locate(None, {**IN_POD, "KUBECONFIG": "", "HOME": "/home/u"})
    assert source == Source(None, "in-cluster")
    assert source.in_cluster


def test_else_the_default_kubeconfig_in_home() -> None:
    source = locate(None, {"HOME": "/home/u"})
    assert source == Source(Path("/home/u/.kube/config"), "default")
    assert not source.in_cluster
    assert locate(None, {}).kubeconfig == Path("~/.kube/config").expanduser()


def test_a_kubeconfig_list_must_name_one_file(tmp_path: Path) -> None:
    assert locate(None, {"KUBECONFIG": f"{tmp_path / 'k'}:"}).kubeconfig == tmp_path / "k"
    with pytest.raises(KubeconfigError, match="lists 2 files"):
        locate(None, {"KUBECONFIG": "/a:/b"})
    with pytest.raises(KubeconfigError, match="lists 2 files"):
        locate("/a:/b", {})


def test_a_named_context_is_kept_and_rules_out_the_service_account() -> None:
    env = {**IN_POD, "HOME": "/home/u"}
    assert locate(None, env, "staging") == Source(
        Path("/home/u/.kube/config"), "default", "staging"
    )
    assert locate("/arg/k", env, "staging").context == "staging"
    assert locate(None, env, "").in_cluster


KUBECONFIG = {
    "contexts": [
        {"name": "dev", "context": {"cluster": "c", "namespace": "team-a"}},
        {"name": "prod", "context": {"cluster": "c"}},
    ],
    "current-context": "dev",
}


def test_the_context_is_the_named_one_else_the_current_one() -> None:
    assert select_context(KUBECONFIG) == {"cluster": "c", "namespace": "team-a"}
    assert select_context(KUBECONFIG, "prod") == {"cluster": "c"}
    with pytest.raises(KubeconfigError, match="no context named 'nope'"):
        select_context(KUBECONFIG, "nope")
    with pytest.raises(KubeconfigError, match="no current-context"):
        select_context({"contexts": []})


def test_the_namespace_is_the_contexts_if_it_sets_one() -> None:
    assert context_namespace(KUBECONFIG) == "team-a"
    assert context_namespace(KUBECONFIG, "prod") is None
