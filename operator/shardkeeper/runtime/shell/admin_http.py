"""The admin endpoints of a shard pod: ``/healthz``, ``/readyz``, ``/metrics`` and, for
the readers of the journals it writes, ``/hint`` (a long-poll, see runtime/core/hints.py).

Served on ``POD_IP:SHARDKEEPER_ADMIN_PORT`` (never on every address: on the process node
all pods share the host's network). Each check answers 200 or 503 with a one-line reason,
so ``curl`` shows why a pod is not ready.
"""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shardkeeper.runtime.core.hints import HintBoard, answer_hint

Check = Callable[[], tuple[bool, str]]
Route = Callable[[Mapping[str, str]], tuple[int, str, bytes]]


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        healthy: Check,
        ready: Check,
        registry: CollectorRegistry,
        hints: HintBoard | None = None,
    ) -> None:
        routes: dict[str, Route] = {
            "/healthz": lambda _: _check(healthy),
            "/readyz": lambda _: _check(ready),
            "/metrics": lambda _: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
        }
        if hints is not None:
            board = hints
            routes["/hint"] = lambda query: answer_hint(board, query)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                route = routes.get(path)
                if route is None:
                    code, kind, body = 404, "text/plain", b"not found\n"
                else:
                    try:
                        code, kind, body = route(dict(urllib.parse.parse_qsl(query)))
                    except Exception as exc:
                        code, kind, body = 500, "text/plain", f"{exc}\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the log

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="admin-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _check(check: Check) -> tuple[int, str, bytes]:
    ok, reason = check()
    return (200 if ok else 503), "text/plain; charset=utf-8", f"{reason}\n".encode()
