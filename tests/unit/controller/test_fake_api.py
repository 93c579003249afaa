"""The fake API server answers as the real one does where the operator depends on it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.support.fake_api import FakeKube, Request, Watch
from tests.unit.controller.models import NAMESPACE, mapping

from shardkeeper.controller.engine.kube import AsyncKube
from shardkeeper.controller.engine.secrets import read_secrets
from shardkeeper.kube.client import ApiError

NS = "team-a"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def service(name: str = "a", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "x"}},
        "spec": {"ports": [{"port": 80}], **data},
    }


@pytest.mark.parametrize(
    "method",
    sorted(
        name for name, fn in vars(AsyncKube).items() if callable(fn) and not name.startswith("_")
    ),
)
def test_every_client_method_is_faked_with_its_signature(method: str) -> None:
    assert method in vars(FakeKube), f"FakeKube would run the real {method}"
    assert inspect.signature(getattr(FakeKube, method)) == inspect.signature(
        getattr(AsyncKube, method)
    )


def test_writes_set_uid_and_generation_once_and_move_the_resource_version() -> None:
    async def body() -> None:
        kube = FakeKube()
        made = await kube.apply(service())
        again = await kube.apply(service())
        changed = await kube.apply(service(type="NodePort"))
        uid = made["metadata"]["uid"]
        assert [o["metadata"]["uid"] for o in (again, changed)] == [uid, uid]
        versions = [int(o["metadata"]["resourceVersion"]) for o in (made, again, changed)]
        assert versions == sorted(set(versions)), "every write moves it on"
        generations = [o["metadata"]["generation"] for o in (made, again, changed)]
        assert generations == [1, 1, 2], "only a spec change moves the generation"

    run(body)


def test_refusals_are_api_errors_with_the_api_servers_status() -> None:
    async def body() -> None:
        kube = FakeKube()
        made = await kube.create(service())
        with pytest.raises(ApiError) as taken:
            await kube.create(service())
        assert taken.value.status == 409
        stale = {**made, "metadata": {**made["metadata"], "resourceVersion": "0"}}
        with pytest.raises(ApiError) as conflict:
            await kube.replace(stale)
        assert conflict.value.status == 409
        ops = [{"op": "test", "path": "/metadata/labels", "value": {}}]
        with pytest.raises(ApiError) as failed:
            await kube.json_patch("v1", "Service", NS, "a", ops)
        assert failed.value.status == 422
        with pytest.raises(ApiError) as missing:
            await kube.json_patch("v1", "Service", NS, "b", ops)
        assert missing.value.status == 404
        assert await kube.get("v1", "Service", NS, "b") is None

    run(body)


def test_a_status_apply_touches_only_the_status_and_drops_what_it_no_longer_sets() -> None:
    async def body() -> None:
        kube = FakeKube()
        await kube.apply(service())
        status = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": NS}}
        await kube.apply({**status, "status": {"x": 1, "y": 2}, "spec": {}}, subresource="status")
        found = await kube.apply({**status, "status": {"x": 3}}, subresource="status")
        assert found["status"] == {"x": 3}
        assert found["spec"] == {"ports": [{"port": 80}]}
        assert found["metadata"]["generation"] == 1
        with pytest.raises(ApiError) as missing:
            await kube.apply(
                {**status, "metadata": {"name": "b", "namespace": NS}}, subresource="status"
            )
        assert missing.value.status == 404, "a status apply never creates the object"

    run(body)


def test_delete_honours_the_uid_precondition_finalizers_and_owners() -> None:
    async def body() -> None:
        kube = FakeKube()
        owner = kube.put(
            {
                **service("owner"),
                "metadata": {"name": "owner", "namespace": NS, "finalizers": ["x/y"]},
            }
        )
        uid = owner["metadata"]["uid"]
        kube.put(
            {
                **service("child"),
                "metadata": {
                    "name": "child",
                    "namespace": NS,
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Service", "name": "owner", "uid": uid}
                    ],
                },
            }
        )
        assert not await kube.delete("v1", "Service", NS, "owner", uid="uid-other")
        assert await kube.delete("v1", "Service", NS, "owner", uid=uid)
        held = kube.find("Service", NS, "owner")
        assert held is not None
        assert held["metadata"]["deletionTimestamp"]
        await kube.json_patch(
            "v1",
            "Service",
            NS,
            "owner",
            [{"op": "replace", "path": "/metadata/finalizers", "value": []}],
        )
        assert kube.find("Service", NS, "owner") is None, "its last finalizer removed"
        assert kube.find("Service", NS, "child") is None, "garbage-collected"
        assert not await kube.delete("v1", "Service", NS, "owner")

    run(body)


def test_an_injected_failure_hits_only_the_next_matching_request() -> None:
    async def body() -> None:
        kube = FakeKube()
        kube.fail("apply", "Service", status=500)
        with pytest.raises(ApiError) as failed:
            await kube.apply(service())
        assert failed.value.status == 500
        assert kube.find("Service", NS, "a") is None
        await kube.apply(service())
        assert kube.requests == [Request("apply", "Service", "a")] * 2

    run(body)


def test_the_watch_shows_the_store_only_once_synced() -> None:
    kube = FakeKube()
    watch = Watch(kube)
    kube.put(mapping().to_k8s())
    assert watch.cache.storage_mapping(NAMESPACE, "local") is None
    watch.sync()
    assert watch.cache.storage_mapping(NAMESPACE, "local") is not None


def test_a_changed_secret_is_reported_at_the_next_sync() -> None:
    async def body() -> None:
        kube = FakeKube()
        secret = {"kind": "Secret", "metadata": {"name": "s3-credentials", "namespace": NAMESPACE}}
        kube.put({**secret, "stringData": {"k": "v"}})
        kube.put(mapping().to_k8s())
        watch = Watch(kube)
        await read_secrets(kube, watch.cache.secrets, NAMESPACE, ["s3-credentials"])
        assert watch.cache.secret_keys(NAMESPACE, "s3-credentials") == frozenset({"k"})
        kube.put({**secret, "stringData": {"k": "v", "k2": "w"}})
        assert watch.cache.secrets.known(NAMESPACE, "s3-credentials")
        watch.sync()
        assert not watch.cache.secrets.known(NAMESPACE, "s3-credentials")
        await read_secrets(kube, watch.cache.secrets, NAMESPACE, ["s3-credentials"])
        assert watch.cache.secret_keys(NAMESPACE, "s3-credentials") == frozenset({"k", "k2"})

    run(body)


def test_an_injected_refusal_of_a_delete_or_get_is_read_as_the_client_reads_it() -> None:
    async def body() -> None:
        kube = FakeKube()
        await kube.apply(service())
        kube.fail("delete", "Service", status=409)
        assert not await kube.delete("v1", "Service", NS, "a")
        kube.fail("get", "Service", status=404)
        assert await kube.get("v1", "Service", NS, "a") is None
        kube.fail("delete", "Service", status=500)
        with pytest.raises(ApiError):
            await kube.delete("v1", "Service", NS, "a")
        assert kube.find("Service", NS, "a") is not None

    run(body)
