"""A capture endpoint that stops answers 503 to every connection already made, even those
still waiting in the listening socket's backlog, rather than resetting them."""

from __future__ import annotations

import http.client
import json
import queue
import socket

from shardkeeper.runtime.core.messages import Message
from shardkeeper.runtime.core.routing import KeyExtractor
from shardkeeper.runtime.core.schemas import DocumentSchema
from shardkeeper.runtime.kinds.capture import CaptureServer, IngestSettings, IngestTarget


def server() -> CaptureServer:
    settings = IngestSettings(
        host="127.0.0.1",
        port=0,
        token=None,
        max_request_bytes=4096,
        max_documents=10,
        commit_timeout=5.0,
    )
    target = IngestTarget(DocumentSchema(None, name="orders"), KeyExtractor.of(["/id"]))
    channel: queue.Queue[Message] = queue.Queue(maxsize=10)
    return CaptureServer(settings, {"orders": target}, channel)


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
