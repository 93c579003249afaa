"""A capture endpoint that stops answers 503 to every connection already made, even those
still waiting in the listening socket's backlog, rather than resetting them; one whose
read channel stays full answers 429 with Retry-After."""

from __future__ import annotations

import http.client
import json
import queue
import socket
from typing import Any

from shardkeeper.runtime.core.messages import CapturedDocuments, Message
from shardkeeper.runtime.core.routing import KeyExtractor
from shardkeeper.runtime.core.schemas import DocumentSchema
from shardkeeper.runtime.kinds.capture import CaptureServer, IngestSettings, IngestTarget


def server(channel: queue.Queue[Message] | None = None, **settings: Any) -> CaptureServer:
    ingest = IngestSettings(
        **{
            "host": "127.0.0.1",
            "port": 0,
            "token": None,
            "max_request_bytes": 4096,
            "max_documents": 10,
            "commit_timeout": 5.0,
            **settings,
        }
    )
    target = IngestTarget(DocumentSchema(None, name="orders"), KeyExtractor.of(["/id"]))
    return CaptureServer(ingest, {"orders": target}, channel or queue.Queue(maxsize=10))


def test_connections_in_the_backlog_are_answered_503_when_the_endpoint_stops() -> None:
    capture = server()
    capture.start({})
    host, port = capture.address
    # the serve loop stops first, as in stop(): connections made now stay in the backlog
    assert capture._server is not None
    capture._server.shutdown()
    body = json.dumps({"id": "o1"}).encode()
    clients = []
    for _ in range(3):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", "/orders", body, {"Content-Type": "application/json"})
        clients.append(conn)
    capture.stop()
    for conn in clients:
        answer = conn.getresponse()
        assert answer.status == 503
        assert "stopping" in json.loads(answer.read())["error"]
        conn.close()
    # and the socket is closed: a new connection is refused, never left hanging
    with socket.socket() as probe:
        assert probe.connect_ex((host, port)) != 0


def test_a_full_read_channel_is_answered_429_with_retry_after() -> None:
    channel: queue.Queue[Message] = queue.Queue(maxsize=1)
    channel.put_nowait(CapturedDocuments("orders", [{"id": "waiting"}]))
    capture = server(channel, enqueue_timeout=0.2)
    capture.start({})
    host, port = capture.address
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", "/orders", b'{"id": "o1"}', {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 429
        assert answer.headers["Retry-After"] == "1"
        assert "busy; not written" in json.loads(answer.read())["error"]
        conn.close()
    finally:
        capture.stop()
    # nothing of the refused request is in the channel
    assert [m.documents for m in channel.queue if isinstance(m, CapturedDocuments)] == [
        [{"id": "waiting"}]
    ]
