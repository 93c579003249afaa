"""A capture's HTTP ingest endpoint, and the handler that writes what it receives.

``POST /collections/<collection>`` (or ``POST /<collection>``) on ``POD_IP:capture.http.port``
with a JSON object, a JSON array of objects, or newline-delimited objects. Each document
must match the collection's schema and have its key; otherwise the answer is 400 naming
the first bad document, and nothing of the request is written. A body larger than
``maxRequestBytes`` is refused with 413 before it is read (with ``Expect: 100-continue``
the client is never asked for it), as is a request with more documents than a
transaction holds (``ringBufferSize``). With ``authTokenSecretRef`` set, a request must
carry ``Authorization: Bearer <token>`` (401 otherwise).

An accepted request goes into the shard's read channel; the answer, ``200 {"documents":
n}``, is sent only once the transaction holding its documents has committed and its
outputs are appended to the collection's journal. The other answers say whether the
documents may have been written:

- 503: not written (the shard stops, or failed before the commit): retry, perhaps
  against the next primary;
- 429 with ``Retry-After``: not written, the shard is busy (its read channel stayed full,
  or ``maxConnections`` connections are open);
- 504: the outcome is unknown (the commit failed or stalled after its record may have
  reached the recovery log): retry with the same ``Idempotency-Key``.

A request with an ``Idempotency-Key`` header is written at most once: the key is recorded
in the transaction that writes the documents (:mod:`..core.idempotency`), and a request
with a key already recorded, on this primary or a later one, writes nothing and is
answered with the first one's outcome (``Idempotent-Replayed: true``); one with the same
key but another body is refused with 422. Without a key, a retry after a 504 may write
the documents twice.

Slow clients hold little: a connection beyond ``maxConnections`` is answered 429 at once,
unread, and each request must arrive whole (from the connection, or the previous answer
on it, to the last byte of its body) within ``readTimeout``, or its connection is closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import http.server
import io
import json
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from shardkeeper.runtime.core import idempotency
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
IDEMPOTENCY_KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
# seconds a client is told to wait before it tries again (429, 503)
RETRY_AFTER = 1
# how long a closing connection is still read (at most LINGER_BYTES), so that what the
# client sent past its answer does not make the kernel reset the connection and lose it
LINGER_SECONDS = 1.0
LINGER_BYTES = 64 * 1024


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
    # longest wait for a commit before answering 504 (the shard is stuck, not slow)
    commit_timeout: float
    max_connections: int = 256
    # seconds a request may take to arrive whole
    read_timeout: float = 30.0
    # how long a request waits for room in a full read channel before it is answered 429
    enqueue_timeout: float = 2.0


class Refused(Exception):
    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


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


def request_digest(collection: str, body: bytes) -> bytes:
    """What tells a retry (the same collection and body) from another request."""
    return hashlib.sha256(collection.encode() + b"\0" + body).digest()


@dataclasses.dataclass(frozen=True)
class Accepted:
    documents: int
    replayed: bool = False  # a retry answered with its first request's outcome


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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self, checkpoint: Mapping[str, SourceOffset]) -> None:
        server = _Server((self.settings.host, self.settings.port), _handler_class(self), self)
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

    def handle(self, collection: str, body: bytes, key: str | None = None) -> Accepted:
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
            return Accepted(0)
        digest = request_digest(collection, body)
        message = CapturedDocuments(collection, documents, key, digest)
        self._enqueue(message)
        if not message.wait(self.settings.commit_timeout):
            raise Refused(504, _unknown("the shard did not commit in time", key))
        if message.error is not None:
            if message.outcome_unknown:
                raise Refused(504, _unknown(f"the commit failed ({message.error})", key))
            raise Refused(503, f"not written ({message.error}); retry", retry_after=RETRY_AFTER)
        first = message.first
        if first is None:
            return Accepted(len(documents))
        if first.digest != digest:
            raise Refused(
                422,
                f"{IDEMPOTENCY_KEY} {key!r} was already used for another request; "
                "a retry must send the same collection and body",
            )
        return Accepted(first.documents, replayed=True)

    def _enqueue(self, message: CapturedDocuments) -> None:
        deadline = time.monotonic() + self.settings.enqueue_timeout
        while True:
            with self._lock:
                if self._closed.is_set():
                    raise Refused(
                        503, "the shard is stopping; not written, retry", retry_after=RETRY_AFTER
                    )
                try:
                    self.channel.put_nowait(message)
                    return
                except queue.Full:
                    pass
            if time.monotonic() >= deadline:
                raise Refused(
                    429, "the shard is busy; not written, retry later", retry_after=RETRY_AFTER
                )
            self._closed.wait(0.01)

    def authorized(self, authorization: str | None) -> bool:
        token = self.settings.token
        if token is None:
            return True
        given = authorization or ""
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def _unknown(why: str, key: str | None) -> str:
    if key:
        retry = f"retry with the same {IDEMPOTENCY_KEY}"
    else:
        retry = f"a retry may write them twice (send an {IDEMPOTENCY_KEY} to retry safely)"
    return f"{why}: the outcome is unknown, the documents may have been written; {retry}"


def _drain(server: _Server) -> None:
    """Take the connections still waiting in the listening socket's backlog, so each is
    answered 503 (the endpoint is closed) instead of being reset when the socket closes:
    a reset would leave a client unsure whether its documents were written. The serve
    loop must have stopped."""
    server.timeout = 0
    with selectors.DefaultSelector() as selector:
        selector.register(server.socket, selectors.EVENT_READ)
        while selector.select(timeout=0):
            server.handle_request()


def _too_many(max_connections: int) -> bytes:
    body = (
        json.dumps(
            {"error": f"{max_connections} connections are open, the most served at once; retry"}
        )
        + "\n"
    ).encode()
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        f"Retry-After: {RETRY_AFTER}\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Server(http.server.ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them serving requests.

    A connection beyond them gets a thread only to be answered 429 at once (at most as
    many of those again); past that it is closed."""

    # handler threads end by themselves once their documents are settled
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., http.server.BaseHTTPRequestHandler],
        capture: CaptureServer,
    ) -> None:
        self.capture = capture
        limit = capture.settings.max_connections
        self._serving = threading.BoundedSemaphore(limit)
        self._refusing = threading.BoundedSemaphore(limit)
        self._too_many = _too_many(limit)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._serving.acquire(blocking=False):
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._serving.release()
                raise
            return
        if not self._refusing.acquire(blocking=False):
            self.close_request(request)
            return
        threading.Thread(
            target=self._refuse, args=(request,), name="capture 429", daemon=True
        ).start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._serving.release()

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.settimeout(self.capture.settings.read_timeout)
            with contextlib.suppress(OSError):
                request.sendall(self._too_many)
            self.shutdown_request(request)
        finally:
            self._refusing.release()

    def shutdown_request(self, request: Any) -> None:
        """Close after a short linger: the client may still be sending what is not read
        (a refused body); closing on unread data would reset the connection, and a reset
        can lose the answer on its way."""
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
            _linger(request)
        self.close_request(request)


def _linger(sock: socket.socket) -> None:
    deadline = time.monotonic() + LINGER_SECONDS
    read = 0
    while read < LINGER_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        sock.settimeout(remaining)
        chunk = sock.recv(LINGER_BYTES)
        if not chunk:
            return
        read += len(chunk)


class _DeadlineReader(io.RawIOBase):
    """The socket as the request handler reads it: each read waits no longer than what
    is left of the request's deadline, so a client that sends a byte at a time cannot hold
    its connection for longer than ``readTimeout`` in all."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            self.sock.settimeout(self.timeout)
        else:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request did not arrive within readTimeout")
            self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


def _handler_class(server: CaptureServer) -> type[http.server.BaseHTTPRequestHandler]:
    settings = server.settings

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        _reader: _DeadlineReader
        _continue = False
        _close_after = False

        def setup(self) -> None:
            super().setup()
            self.connection.settimeout(settings.read_timeout)
            self.rfile.close()
            self._reader = _DeadlineReader(self.connection, settings.read_timeout)
            self.rfile = io.BufferedReader(self._reader)

        def handle_one_request(self) -> None:
            # the request, from its first line to its body's last byte, within readTimeout
            self._reader.deadline = time.monotonic() + settings.read_timeout
            self._continue = False
            super().handle_one_request()

        def handle_expect_100(self) -> bool:
            # asked for only once the request is accepted (see _body): a body that would be
            # refused is then never sent
            self._continue = True
            return True

        def do_POST(self) -> None:
            # until the body is read, a refusal leaves it unread: the connection then closes
            self._close_after = self.close_connection
            self.close_connection = True
            try:
                if not server.authorized(self.headers.get("Authorization")):
                    raise Refused(401, "a bearer token is required")
                key = self.headers.get(IDEMPOTENCY_KEY)
                problem = None if key is None else idempotency.key_problem(key)
                if problem is not None:
                    raise Refused(400, problem)
                body = self._body()
                answer = server.handle(collection_of(self.path), body, key)
            except Refused as refused:
                self._reply(refused.status, {"error": refused.message}, refused.retry_after)
                return
            self._reply(200, {"documents": answer.documents}, replayed=answer.replayed)

        def do_GET(self) -> None:
            self._reply(405, {"error": "POST documents to /collections/<collection>"})

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise Refused(411, "a Content-Length is required")
            size = int(length)
            if size > settings.max_request_bytes:
                raise Refused(
                    413,
                    f"the body has {size} bytes, more than maxRequestBytes "
                    f"({settings.max_request_bytes})",
                )
            if self._continue:
                self.send_response_only(100)
                self.end_headers()
            body = self.rfile.read(size)
            if len(body) < size:
                raise Refused(400, f"the body ended after {len(body)} of {size} bytes")
            self._reader.deadline = None
            self.close_connection = self._close_after
            return body

        def _reply(
            self,
            status: int,
            body: dict[str, Any],
            retry_after: int | None = None,
            *,
            replayed: bool = False,
        ) -> None:
            data = (json.dumps(body) + "\n").encode()
            # the answer is written within readTimeout, whatever was left of the request's
            self.connection.settimeout(settings.read_timeout)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            if replayed:
                self.send_header(REPLAYED, "true")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("capture %s: " + format, self.client_address[0], *args)

    return Handler


DEFAULT_IDEMPOTENCY = idempotency.Limits(keys=100_000, window=24 * 3600.0)


class CaptureHandler(HandlerDefaults):
    """Writes captured documents to their collections' journals of this shard, once per
    idempotency key."""

    def __init__(
        self,
        limits: idempotency.Limits = DEFAULT_IDEMPOTENCY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits
        self.clock = clock

    def apply(
        self,
        txn: Transaction,
        message: SourceDocument | CapturedDocuments,
        outputs: OutputBuffer,
    ) -> int:
        if not isinstance(message, CapturedDocuments):
            raise TypeError(f"a capture takes captured documents, not {message!r}")
        if message.key is not None:
            first = idempotency.look_up(txn, message.key)
            if first is not None:
                message.first = first
                return 0
            written = idempotency.Remembered(message.digest, len(message.documents))
            idempotency.remember(txn, message.key, written, self.clock(), self.limits)
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
