"""Secrets: reading the ones a reconcile needs, and watching for changes without their data.

A kopf watch of Secrets would bring every Secret of the cluster, with its values, into the
operator, and keep a copy of each for as long as it runs. Instead:

- a reconcile that checks a Secret reads it with a GET (only a Secret that its Task or
  StorageMapping names), keeps the names of its data's keys and its resourceVersion, and
  lets the values go (:func:`read_secrets`);
- one watch asks the API server for the Secrets' metadata only (``PartialObjectMetadata``,
  with no fallback to whole objects), and starts from a list of one item, only for the
  list's resourceVersion. Of each event it keeps the namespace, name and resourceVersion
  (annotations can hold the whole object: ``kubectl apply`` copies it into
  ``last-applied-configuration``), and the manager queues what names the Secret, or drops
  it (:class:`SecretWatch`).

The watch blocks on its socket, so it runs in a thread of its own and hands each event to
the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import urllib3

from shardkeeper.controller.engine.cache import Secrets, SecretView
from shardkeeper.controller.engine.kube import AsyncKube
from shardkeeper.kube.client import ApiError, Transport, call

log = logging.getLogger(__name__)

METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
WATCH_SECONDS = 300  # the server ends each watch after this; the next one resumes
READ_TIMEOUT = WATCH_SECONDS + 30.0
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


# --- reading the Secrets a reconcile needs -----------------------------------------------


def view_of(secret: Mapping[str, Any] | None) -> SecretView | None:
    """What is kept of a Secret the API returned: its keys and version, never its values."""
    if secret is None:
        return None
    keys = frozenset([*(secret.get("data") or {}), *(secret.get("stringData") or {})])
    return SecretView(keys, str(secret.get("metadata", {}).get("resourceVersion", "")))


async def read_secrets(
    kube: AsyncKube, secrets: Secrets, namespace: str, names: Iterable[str]
) -> None:
    """Make sure :class:`Secrets` has each of ``names`` as it is now (a GET of those it does
    not have, or that changed since)."""
    for name in dict.fromkeys(names):
        if secrets.known(namespace, name):
            continue
        secrets.reading(namespace, name)
        try:
            found = await kube.get("v1", "Secret", namespace, name)
        except BaseException:
            secrets.abandon(namespace, name)
            raise
        secrets.read(namespace, name, view_of(found))


# --- the metadata watch -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SecretEvent:
    """A Secret changed: ``resource_version`` is None when it was deleted. A ``restart``
    event names no Secret: the watch started (again), and may have missed changes."""

    namespace: str
    name: str
    resource_version: str | None
    restart: bool = False


RESTART = SecretEvent("", "", None, restart=True)


def secrets_path(namespace: str | None) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" if namespace else "/api/v1/secrets"


def list_query() -> dict[str, Any]:
    # one item: the list is read only for its resourceVersion, where the watch starts
    return {"limit": 1}


def watch_query(resource_version: str) -> dict[str, Any]:
    return {
        "watch": True,
        "resourceVersion": resource_version,
        "allowWatchBookmarks": True,
        "timeoutSeconds": WATCH_SECONDS,
    }


class WatchExpired(Exception):
    """The API server no longer has the resourceVersion the watch resumes from (410)."""


def parse_event(line: str) -> tuple[str, SecretEvent | None]:
    """One line of the watch: (the resourceVersion to resume from, the event, if any).
    Nothing of the object but its namespace, name and resourceVersion is returned."""
    raw = json.loads(line)
    kind, obj = str(raw.get("type", "")), raw.get("object") or {}
    if kind == "ERROR":
        if obj.get("code") == 410:
            raise WatchExpired(str(obj.get("message", "")))
        raise ApiError(int(obj.get("code") or 500), str(obj.get("reason", "")), obj)
    meta = obj.get("metadata") or {}
    version = str(meta.get("resourceVersion", ""))
    if kind not in ("ADDED", "MODIFIED", "DELETED"):
        return version, None  # BOOKMARK
    gone = kind == "DELETED"
    event = SecretEvent(
        str(meta.get("namespace", "")), str(meta.get("name", "")), None if gone else version
    )
    return version, event


def lines(response: urllib3.BaseHTTPResponse) -> Iterator[str]:
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.decode()
    if buffer.strip():
        yield buffer.decode()


class SecretWatch:
    """Watches the metadata of the Secrets of one namespace (None: all of them) and calls
    ``emit`` with each change, from its own thread."""

    def __init__(
        self, transport: Transport, namespace: str | None, emit: Callable[[SecretEvent], None]
    ) -> None:
        self.transport = transport
        self.namespace = namespace
        self.emit = emit
        self.stopped = threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None

    def start_version(self) -> str:
        response = call(
            self.transport,
            "GET",
            secrets_path(self.namespace),
            query=list_query(),
            accept=METADATA_LIST,
        )
        listed = json.loads(response.data)
        return str(listed["metadata"]["resourceVersion"])

    def watch(self, resource_version: str) -> str:
        """Follow the watch until the server ends it; the resourceVersion to resume from."""
        response = call(
            self.transport,
            "GET",
            secrets_path(self.namespace),
            query=watch_query(resource_version),
            accept=METADATA,
            timeout=(10.0, READ_TIMEOUT),
        )
        self._response = response
        try:
            for line in lines(response):
                version, event = parse_event(line)
                resource_version = version or resource_version
                if event is not None:
                    self.emit(event)
                if self.stopped.is_set():
                    break
        finally:
            self._response = None
            response.release_conn()
        return resource_version

    def run(self) -> None:
        failures = 0
        version: str | None = None
        while not self.stopped.is_set():
            try:
                if version is None:
                    version = self.start_version()
                    self.emit(RESTART)
                version = self.watch(version)
                failures = 0
            except WatchExpired:
                version = None
            except Exception as exc:
                if self.stopped.is_set():
                    return
                if isinstance(exc, ApiError) and exc.status == 410:
                    version = None
                    continue
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("watching Secrets failed (%s); again in %.0fs", exc, delay)
                version = None
                self.stopped.wait(delay)

    def stop(self) -> None:
        self.stopped.set()
        response = self._response
        if response is not None:
            response.shutdown()


async def watch_secrets(
    transport: Transport,
    namespaces: Iterable[str | None],
    on_event: Callable[[SecretEvent], None],
) -> None:
    """Run a :class:`SecretWatch` per namespace until cancelled; ``on_event`` runs on the
    event loop."""
    loop = asyncio.get_running_loop()

    def emit(event: SecretEvent) -> None:
        loop.call_soon_threadsafe(on_event, event)

    watches = [SecretWatch(transport, namespace, emit) for namespace in namespaces]
    threads = [
        threading.Thread(target=w.run, name=f"watch-secrets-{w.namespace or 'all'}", daemon=True)
        for w in watches
    ]
    for thread in threads:
        thread.start()
    try:
        await asyncio.Event().wait()
    finally:
        for watch in watches:
            watch.stop()
