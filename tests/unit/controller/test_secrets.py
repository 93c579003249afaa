"""What the operator keeps of Secrets (key names and versions of the named ones only), and
what its metadata watch asks for and takes from each event."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
import urllib3
from tests.support.fake_api import FakeKube, Watch
from tests.unit.controller.models import NAMESPACE, mapping, task

from shardkeeper.controller.engine.cache import Secrets, SecretView
from shardkeeper.controller.engine.queue import Key
from shardkeeper.controller.engine.secrets import (
    METADATA,
    METADATA_LIST,
    RESTART,
    SecretEvent,
    SecretWatch,
    WatchExpired,
    parse_event,
    read_secrets,
    view_of,
)
from shardkeeper.controller.engine.triggers import for_secret_event


def test_what_is_kept_of_a_secret_is_its_key_names_and_version() -> None:
    body = {
        "metadata": {"name": "creds", "namespace": "ns", "resourceVersion": "7"},
        "data": {"accessKey": "c2VjcmV0"},
        "stringData": {"secretKey": "plain"},
    }
    view = view_of(body)
    assert view == SecretView(frozenset({"accessKey", "secretKey"}), "7")
    assert "c2VjcmV0" not in repr(view)
    assert "plain" not in repr(view)
    assert view_of(None) is None


def test_a_change_reported_while_a_secret_is_read_makes_the_answer_stale() -> None:
    secrets = Secrets()
    secrets.reading("ns", "s")
    assert secrets.changed("ns", "s", "2")  # the GET may have been answered before this
    secrets.read("ns", "s", SecretView(frozenset({"k"}), "1"))
    assert secrets.view("ns", "s") == SecretView(frozenset({"k"}), "1"), "for this pass"
    assert not secrets.known("ns", "s"), "read again by the next pass"
    secrets.reading("ns", "s")
    secrets.read("ns", "s", SecretView(frozenset({"k"}), "2"))
    assert secrets.known("ns", "s")
    assert not secrets.changed("ns", "s", "2"), "the version it has: nothing changed"
    assert secrets.changed("ns", "s", None)
    assert not secrets.known("ns", "s")


def test_a_restarted_watch_makes_everything_stale() -> None:
    secrets = Secrets()
    for name in ("a", "b"):
        secrets.reading("ns", name)
        secrets.read("ns", name, None)
    assert secrets.invalidate() == [("ns", "a"), ("ns", "b")]
    assert not secrets.known("ns", "a")


def test_a_failed_read_learns_nothing() -> None:
    async def body() -> None:
        kube = FakeKube()
        kube.fail("get", "Secret", status=500)
        secrets = Secrets()
        with pytest.raises(Exception, match="500"):
            await read_secrets(kube, secrets, NAMESPACE, ["s"])
        assert len(secrets) == 0
        assert not secrets.known(NAMESPACE, "s")
        await read_secrets(kube, secrets, NAMESPACE, ["s"])
        assert secrets.known(NAMESPACE, "s")
        assert secrets.view(NAMESPACE, "s") is None, "there is no such Secret"

    asyncio.run(body())


def test_only_named_secrets_are_kept_and_their_changes_queue_what_names_them() -> None:
    async def body() -> None:
        kube = FakeKube()
        kube.put(mapping().to_k8s())
        materialize = task("totals-to-postgres")
        kube.put(materialize.to_k8s())
        watch = Watch(kube)
        cache = watch.cache
        await read_secrets(kube, cache.secrets, NAMESPACE, ["s3-credentials", "postgres-password"])
        assert len(cache.secrets) == 2
        event = SecretEvent(NAMESPACE, "unrelated", "5")
        assert for_secret_event(cache, event) == []
        assert len(cache.secrets) == 2, "an unrelated Secret is not kept"
        queued = for_secret_event(cache, SecretEvent(NAMESPACE, "s3-credentials", "9"))
        assert queued == [Key("StorageMapping", NAMESPACE, "local")]
        # it did not exist when read: its deletion is no news, its creation is
        assert for_secret_event(cache, SecretEvent(NAMESPACE, "postgres-password", None)) == []
        queued = for_secret_event(cache, SecretEvent(NAMESPACE, "postgres-password", "3"))
        assert queued == [Key("Task", NAMESPACE, "totals-to-postgres")]
        # a Secret that is no longer named is dropped at its next event
        kube.remove("StorageMapping", NAMESPACE, "local")
        watch.sync()
        assert for_secret_event(cache, SecretEvent(NAMESPACE, "s3-credentials", "10")) == []
        assert len(cache.secrets) == 1
        assert for_secret_event(cache, RESTART) == [Key("Task", NAMESPACE, "totals-to-postgres")]

    asyncio.run(body())


def watch_line(kind: str, obj: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "object": obj})


def test_an_event_gives_only_the_namespace_name_and_version() -> None:
    meta = {
        "name": "s",
        "namespace": "ns",
        "resourceVersion": "42",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "hunter2"},
    }
    obj = {"kind": "PartialObjectMetadata", "metadata": meta}
    assert parse_event(watch_line("MODIFIED", obj)) == ("42", SecretEvent("ns", "s", "42"))
    assert parse_event(watch_line("DELETED", obj)) == ("42", SecretEvent("ns", "s", None))
    bookmark = {"kind": "PartialObjectMetadata", "metadata": {"resourceVersion": "50"}}
    assert parse_event(watch_line("BOOKMARK", bookmark)) == ("50", None)
    with pytest.raises(WatchExpired):
        parse_event(watch_line("ERROR", {"kind": "Status", "code": 410, "message": "too old"}))


class Body(io.BytesIO):
    """A response body that closes once read to the end, as a socket's does."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.tell() == len(self.getvalue()):
            self.close()
        return data


class Recorded:
    """A transport that answers a list and then a watch, and records what was asked."""

    def __init__(self, watch_body: bytes) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.watch_body = watch_body

    def send(self, method: str, path: str, *, headers: dict[str, str], **_: Any) -> Any:
        self.sent.append((path, headers))
        listed = {"kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "10"}}
        body = self.watch_body if "watch=" in path else json.dumps(listed).encode()
        return urllib3.HTTPResponse(body=Body(body), status=200, preload_content=False)


def test_the_watch_asks_for_metadata_only_and_no_more_than_one_listed_item() -> None:
    line = watch_line(
        "ADDED", {"metadata": {"name": "s", "namespace": "ns", "resourceVersion": "11"}}
    )
    transport = Recorded((line + "\n").encode())
    events: list[SecretEvent] = []
    watch = SecretWatch(transport, "ns", events.append)
    assert watch.watch(watch.start_version()) == "11"
    (list_path, list_headers), (watch_path, watch_headers) = transport.sent
    # no fallback to whole objects ("application/json" alone): a server that cannot send
    # metadata only refuses instead
    assert list_headers["Accept"] == METADATA_LIST
    assert watch_headers["Accept"] == METADATA
    assert list_path == "/api/v1/namespaces/ns/secrets?limit=1"
    assert watch_path.startswith("/api/v1/namespaces/ns/secrets?watch=true&resourceVersion=10&")
    assert events == [SecretEvent("ns", "s", "11")]
