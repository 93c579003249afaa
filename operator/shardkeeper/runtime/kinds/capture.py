"""A capture's HTTP ingest endpoint, and the handler that writes what it receives.

``POST /collections/<collection>`` (or ``POST /<collection>``) on ``POD_IP:capture.http.port``
with a JSON object, a JSON array of objects, or newline-delimited objects. Each document
must match the collection's schema and have its key; otherwise the answer is 400 naming
the first bad document, and nothing of the request is written. A body larger than
``maxRequestBytes`` is refused with 413 unread, as is a request with more documents than a
transaction holds (``ringBufferSize``). With ``authTokenSecretRef`` set, a request must
carry ``Authorization: Bearer <token>`` (401 otherwise).

An accepted request goes into the shard's read channel; the answer, ``200 {"documents":
n}``, is sent only once the transaction holding its documents has committed and its
outputs are appended to the collection's journal. If the shard stops or fails first, the
answer is 503 and the documents were not written: the client retries (perhaps against the
next primary). A retried request whose first attempt did commit is written again: the
endpoint is at-least-once towards clients, and exactly-once from the commit on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import http.server
import json
import logging
import queue
import selectors
import threading
from collections.abc import Mapping
from typing import Any

from shardkeeper.runtime.core.checkpoint import SourceOffset
from shardkeeper.runtime.core.documents import Document, DocumentError, parse_body
from shardkeeper.runtime.core.handler import HandlerDefaults, SourceApplier
from shardkeeper.runtime.core.messages import CapturedDocuments, Message, SourceDocument
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.core.routing import KeyExtractor, MissingKey
from shardkeeper.runtime.core.schemas import DocumentSchema
from shardkeeper.storage.store import Transaction

log = logging.getLogger(__name__)

COLLECTIONS_PATH = "/collections/"
# how long a request waits for a full read channel before it is refused
ENQUEUE_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class IngestTarget:
    """An output collection of the capture, as the endpoint checks documents for it."""

    schema: DocumentSchema
    key: KeyExtractor


@dataclasses.dataclass(frozen=True)
class IngestSettings:
    host: str
    port: int
    token: str | None
    max_request_bytes: int
    max_documents: int
    # longest wait for a commit before answering 503 (the shard is stuck, not slow)
    commit_timeout: float


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_documents(target: IngestTarget, documents: list[dict[str, Any]]) -> None:
    """Raise :class:`Refused` (400) naming the first document that fails."""
    for index, document in enumerate(documents):
        problem = target.schema.problem(document)
        if problem is None:
            try:
                target.key.require(document)
            except MissingKey as exc:
                problem = str(exc)
        if problem is not None:
            raise Refused(400, f"document {index}: {problem}")


def collection_of(path: str) -> str:
    """The collection a request path names."""
    name = path.split("?", 1)[0]
    name = name[len(COLLECTIONS_PATH) :] if name.startswith(COLLECTIONS_PATH) else name[1:]
    return name.strip("/")


class CaptureServer:
    """The ingest endpoint: the feed of a capture shard."""

    def __init__(
        self,
        settings: IngestSettings,
        targets: Mapping[str, IngestTarget],
        channel: queue.Queue[Message],
    ) -> None:
        self.settings = settings
        self.targets = dict(targets)
        self.channel = channel
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self, checkpoint: Mapping[str, SourceOffset]) -> None:
        server = http.server.ThreadingHTTPServer(
            (self.settings.host, self.settings.port), _handler_class(self)
        )
        # handler threads end by themselves once their documents are settled
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="capture ingest", daemon=True
        )
        self._thread.start()
        log.info("capture endpoint listening on %s:%d", *self.address)

    def stop(self) -> None:
        """Stop accepting; requests not yet in the channel are refused from now on."""
        with self._lock:
            self._closed.set()
        if self._server is not None:
            self._server.shutdown()
            _drain(self._server)
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def heads(self) -> dict[str, int]:
        return {}

    # -- one request -----------------------------------------------------------------------

    def handle(self, collection: str, body: bytes) -> dict[str, Any]:
        """Check, enqueue and wait for the commit of one request; raises :class:`Refused`."""
        target = self.targets.get(collection)
        if target is None:
            raise Refused(404, f"this capture writes no collection {collection!r}")
        try:
            documents = parse_body(body)
        except DocumentError as exc:
            raise Refused(400, str(exc)) from None
        if len(documents) > self.settings.max_documents:
            raise Refused(
                413,
                f"{len(documents)} documents in one request, more than a transaction holds "
                f"({self.settings.max_documents}, the task's ringBufferSize): split it",
            )
        check_documents(target, documents)
        if not documents:
            return {"documents": 0}
        message = CapturedDocuments(collection, documents)
        self._enqueue(message)
        if not message.wait(self.settings.commit_timeout):
            raise Refused(503, "the shard did not commit in time; retry")
        if message.error is not None:
            raise Refused(503, f"not written ({message.error}); retry")
        return {"documents": len(documents)}

    def _enqueue(self, message: CapturedDocuments) -> None:
        waited = 0.0
        while True:
            with self._lock:
                if self._closed.is_set():
                    raise Refused(503, "the shard is stopping; retry")
                try:
                    self.channel.put_nowait(message)
                    return
                except queue.Full:
                    pass
            if waited >= ENQUEUE_TIMEOUT:
                raise Refused(503, "the shard is overloaded; retry later")
            self._closed.wait(0.01)
            waited += 0.01

    def authorized(self, authorization: str | None) -> bool:
        token = self.settings.token
        if token is None:
            return True
        given = authorization or ""
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def _drain(server: http.server.ThreadingHTTPServer) -> None:
    """Take the connections still waiting in the listening socket's backlog, so each is
    answered 503 (the endpoint is closed) instead of being reset when the socket closes:
    a reset would leave a client unsure whether its documents were written. The serve
    loop must have stopped."""
    server.timeout = 0
    with selectors.DefaultSelector() as selector:
        selector.register(server.socket, selectors.EVENT_READ)
        while selector.select(timeout=0):
            server.handle_request()


def _handler_class(server: CaptureServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            try:
                if not server.authorized(self.headers.get("Authorization")):
                    raise Refused(401, "a bearer token is required")
                body = self._body()
                answer = server.handle(collection_of(self.path), body)
            except Refused as refused:
                self._reply(refused.status, {"error": refused.message})
                return
            self._reply(200, answer)

        def do_GET(self) -> None:
            self._reply(405, {"error": "POST documents to /collections/<collection>"})

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise Refused(411, "a Content-Length is required")
            size = int(length)
            if size > server.settings.max_request_bytes:
                # the body is never read: close rather than drain it
                self.close_connection = True
                raise Refused(
                    413,
                    f"the body has {size} bytes, more than maxRequestBytes "
                    f"({server.settings.max_request_bytes})",
                )
            return self.rfile.read(size)

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("capture %s: " + format, self.client_address[0], *args)

    return Handler


class CaptureHandler(HandlerDefaults):
    """Writes captured documents to their collections' journals of this shard."""

    def apply(
        self,
        txn: Transaction,
        message: SourceDocument | CapturedDocuments,
        outputs: OutputBuffer,
    ) -> int:
        if not isinstance(message, CapturedDocuments):
            raise TypeError(f"a capture takes captured documents, not {message!r}")
        for document in message.documents:
            outputs.add(message.collection, document)
        return len(message.documents)

    def source_applier(
        self, txn: Transaction, collection: str, outputs: OutputBuffer, journal: str
    ) -> SourceApplier:
        """A capture reads no source documents: it refuses any it is given."""

        def refuse(document: Document, begin: int) -> None:
            raise TypeError(f"a capture takes captured documents, not documents of {journal}")

        return refuse
