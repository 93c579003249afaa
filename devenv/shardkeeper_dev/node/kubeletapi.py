"""The slice of the kubelet's HTTPS API that `kubectl logs` needs:
``GET /containerLogs/<namespace>/<pod>/<container>`` with ``follow``, ``previous``,
``tailLines`` and ``limitBytes``. The API server proxies `pods/log` requests here, to
the port the Node reports as ``daemonEndpoints.kubeletEndpoint``.

It listens on 127.0.0.1 with a certificate of its own and asks for no client
certificate: a development tool, on loopback, serving only container logs.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import logging
import select
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from shardkeeper_dev import pki
from shardkeeper_dev.node import logruns
from shardkeeper_dev.node.layout import Layout
from shardkeeper_dev.node.logruns import EXITED, STARTED, is_marker

log = logging.getLogger(__name__)

FOLLOW_POLL = 0.2


def serving_context(directory: Path) -> ssl.SSLContext:
    """A throw-away CA and serving certificate for 127.0.0.1, made once per state dir."""
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    if not (cert.exists() and key.exists()):
        ca = pki.new_ca("shardkeeper-process-node-ca")
        serving = pki.issue(
            ca, "process-node", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True
        )
        pki.write(serving, directory, "kubelet")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class KubeletApi:
    def __init__(self, layout: Layout) -> None:
        layout.root.mkdir(parents=True, exist_ok=True)
        context = serving_context(layout.root)
        handler = _handler(layout)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # the handshake happens on each connection's own thread, not in the accept loop,
        # so one silent client cannot hold up the others
        self._server.socket = context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port: int = self._server.server_address[1]

    def start(self) -> None:
        thread = threading.Thread(target=self._server.serve_forever, name="kubelet-api")
        thread.daemon = True
        thread.start()
        log.info("kubelet API (container logs) on https://127.0.0.1:%d", self.port)


def _handler(layout: Layout) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "shardkeeper-process-node"
        # a client that neither talks nor reads is dropped after this long
        timeout = 60

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            if parts == ["healthz"]:
                self._reply(200, b"ok")
                return
            if (
                len(parts) != 4
                or parts[0] != "containerLogs"
                or any(p in ("", ".", "..") or "/" in p for p in parts)
            ):
                self._reply(404, b"not found")
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            path = layout.container_log(parts[1], parts[2], parts[3])
            # the client may go away at any time
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self._logs(path, query)

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _logs(self, path: Path, query: dict[str, str]) -> None:
            if not path.exists():
                self._reply(404, f"no log for this container at {path}".encode())
                return
            previous = query.get("previous") == "true"
            with path.open("rb") as source:
                text = source.read().decode("utf-8", "replace")
                run = logruns.select(
                    text,
                    previous=previous,
                    tail_lines=_int(query.get("tailLines")),
                    limit_bytes=_int(query.get("limitBytes")),
                )
                if run is None:
                    what = "previous terminated" if previous else "any"
                    self._reply(400, f"{what} container not found".encode())
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(run.output.encode())
                self.wfile.flush()
                if query.get("follow") == "true" and not previous and not run.ended:
                    _follow(source, self.wfile, self._peer_gone)

        def _peer_gone(self) -> bool:
            # the client sends nothing after its request: anything readable is its end
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable)

    return Handler


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _follow(source: BinaryIO, out: io.BufferedIOBase, peer_gone: Callable[[], bool]) -> None:
    """Pass on what the container writes until it exits (as `kubectl logs -f` does), or
    until the client goes away."""
    partial = b""
    while True:
        chunk = source.read()
        if not chunk:
            if peer_gone():
                return
            time.sleep(FOLLOW_POLL)  # a file has nothing to wait on
            continue
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if not is_marker(line):
                out.write(raw + b"\n")
            elif STARTED in line or EXITED in line:
                out.flush()
                return
        out.flush()
