"""``shardkeeper shard``: runs one shard replica. For now a placeholder that only serves health."""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import threading
from collections.abc import Sequence


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path in ("/healthz", "/readyz")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"not found\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="shardkeeper shard")
    parser.add_argument("--host", default=os.environ.get("POD_IP", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = http.server.ThreadingHTTPServer((args.host, args.port), _Health)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    return 0
