"""One builder for the API server's paths: core group vs named groups, quoting."""

from __future__ import annotations

import pytest

from shardkeeper.kube.paths import api_root, resource_path


def test_the_core_group_is_under_api_and_named_groups_under_apis() -> None:
    assert api_root("v1") == "/api/v1"
    assert api_root("apps/v1") == "/apis/apps/v1"
    assert api_root("shardkeeper.io/v1alpha1") == "/apis/shardkeeper.io/v1alpha1"


@pytest.mark.parametrize("bad", ["", "a/b/c"])
def test_what_is_not_an_api_version_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an apiVersion"):
        api_root(bad)


def test_collections_objects_and_subresources() -> None:
    assert resource_path("v1", "nodes") == "/api/v1/nodes"
    assert resource_path("v1", "nodes", name="n1") == "/api/v1/nodes/n1"
    assert resource_path("v1", "pods", "ns") == "/api/v1/namespaces/ns/pods"
    assert (
        resource_path("coordination.k8s.io/v1", "leases", "ns", "shard-a")
        == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/shard-a"
    )
    assert (
        resource_path("shardkeeper.io/v1alpha1", "shards", "ns", "s", "status")
        == "/apis/shardkeeper.io/v1alpha1/namespaces/ns/shards/s/status"
    )


def test_every_segment_is_quoted() -> None:
    assert resource_path("v1", "secrets", "n s", "a/b") == "/api/v1/namespaces/n%20s/secrets/a%2Fb"


def test_a_subresource_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs the object"):
        resource_path("v1", "pods", "ns", subresource="status")
