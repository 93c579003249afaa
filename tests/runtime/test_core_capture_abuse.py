"""The capture's ingest endpoint under abuse: slow clients are cut off and cannot take every
connection for long, an oversized body is refused before it is sent, and a request retried
with its Idempotency-Key is written once, whether its first answer was a success or said
that the outcome is unknown (the commit failed after its record reached the log)."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.runtime.core_fixtures import Crash, Tripwire, documents_of, objects, read
from tests.runtime.test_core_capture_http import start_capture
from tests.support.wait import wait_for

from shardkeeper.runtime.core.faults import RuntimeFaultPoint
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

Answer = tuple[int, dict[str, Any], http.client.HTTPMessage]


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def send(
    base: str, path: str, body: bytes, headers: dict[str, str] | None = None, method: str = "POST"
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(base), timeout=30)
    try:
        conn.request(method, path, body, {"Connection": "close", **(headers or {})})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read()), answer.headers
    finally:
        conn.close()


class SlowClient:
    """Sends ``head`` and then a byte every 50 ms, for ever; notes when the server closes."""

    def __init__(self, port: int, head: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.head = head
        self.started = time.monotonic()
        self.cut: float | None = None  # seconds from the connection to the server's close
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([self.sock], [], [], 0.05)
                if readable and not self.sock.recv(4096):
                    self.cut = time.monotonic() - self.started
                    return
                self.sock.send(self.head[sent : sent + 1] if sent < len(self.head) else b"a")
                sent += 1
        except OSError:
            self.cut = time.monotonic() - self.started
        finally:
            self.sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_slow_clients_are_cut_off_and_cannot_starve_others(
    tmp_path: Path, objects: ObjectStore
) -> None:
    settings = {"maxConnections": 4, "readTimeout": "1s"}
    _, shard, base = start_capture(tmp_path, objects, http_settings=settings)
    port = port_of(base)
    slow_head = b"POST /collections/alerts HTTP/1.1\r\nHost: x\r\nX-Slow: "
    slow_body = (
        b"POST /collections/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        b'{"id": "slow", "pad": "'
    )
    slow = [SlowClient(port, slow_head if n % 2 else slow_body) for n in range(4)]
    try:
        # every connection the endpoint serves is taken: one more is answered 429 at once
        _, answer, headers = wait_for(
            lambda: (got := send(base, "/", b"", method="GET"))[0] == 429 and got,
            timeout=10,
            what="a connection beyond maxConnections to be refused",
        )
        assert headers["Retry-After"] == "1"
        assert "4 connections are open" in answer["error"]

        # a client that honours Retry-After is served once the slow ones are cut off
        started = time.monotonic()
        refused = 0
        while (got := send(base, "/collections/alerts", b'{"id": "normal"}'))[0] == 429:
            refused += 1
            time.sleep(float(got[2]["Retry-After"]))  # what the answer asks the client to do
        served = time.monotonic() - started
        assert got[:2] == (200, {"documents": 1})
        assert served < 5.0, f"served only after {served:.1f}s"

        # each slow client, header or body, was cut off at its readTimeout, not left to hang
        wait_for(lambda: all(c.cut is not None for c in slow), timeout=10, what="the cut-offs")
        cuts = [c.cut for c in slow]
        assert all(c is not None and 0.9 <= c < 3.0 for c in cuts), cuts
    finally:
        for client in slow:
            client.stop()
    assert shard.finish() is None
    assert documents_of(read(objects, "alerts")) == [{"id": "normal"}]


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_an_oversized_body_is_refused_before_it_is_sent(
    tmp_path: Path, objects: ObjectStore
) -> None:
    _, shard, base = start_capture(tmp_path, objects)
    port = port_of(base)
    # headers only: the endpoint answers (and closes) without waiting for a gigabyte
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /collections/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        answer = read_answer(sock)
    # never "100 Continue": the client is not asked for the body
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"more than maxRequestBytes (4096)" in answer
    assert b"Connection: close" in answer

    # a body that is sent all the same is refused, not answered by a reset connection
    status, refusal, _ = send(base, "/collections/alerts", b"[" + b'{"id": 1},' * 3000 + b"]")
    assert status == 413
    assert "30002 bytes" in refusal["error"]

    # and a body within the limit is asked for, then written
    with socket.create_connection(("127.0.0.1", port)) as sock:
        body = b'{"id": "small"}'
        sock.sendall(
            b"POST /collections/alerts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        sock.settimeout(10)
        assert sock.recv(25).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        answer = read_answer(sock)
    assert b"HTTP/1.1 200 OK" in answer
    assert shard.finish() is None
    assert documents_of(read(objects, "alerts")) == [{"id": "small"}]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(("log", FaultPoint.APPEND_AFTER_PUT), id="record-put-unacknowledged"),
        pytest.param(("runtime", RuntimeFaultPoint.STORE_COMMITTED), id="outputs-not-appended"),
    ],
)
def test_a_retry_after_an_unknown_outcome_is_written_once(
    tmp_path: Path, objects: ObjectStore, fault: tuple[str, Any]
) -> None:
    where, point = fault
    trip = Tripwire(point)
    faults = {"log_faults": trip} if where == "log" else {"faults": trip}
    shards, shard, base = start_capture(tmp_path, objects, **faults)
    trip.armed = True  # past the shard's start, which commits too
    body = json.dumps([{"id": "a1"}, {"id": "a2"}]).encode()
    key = {"Idempotency-Key": "order-batch-17"}
    status, answer, _ = send(base, "/collections/alerts", body, key)
    # the record reached the recovery log: "not written" would be a lie
    assert status == 504
    assert "outcome is unknown" in answer["error"]
    assert "retry with the same Idempotency-Key" in answer["error"]
    assert isinstance(shard.ended(), Crash)

    # the next primary (restored from the log) answers the retry with the first outcome
    again = shards.start()
    status, answer, headers = wait_for(
        lambda: send(base, "/collections/alerts", body, key),
        timeout=30,
        what="the retry to be answered",
    )
    assert (status, answer) == (200, {"documents": 2})
    assert headers["Idempotent-Replayed"] == "true"
    assert again.finish() is None
    assert documents_of(read(objects, "alerts")) == [{"id": "a1"}, {"id": "a2"}]


def test_a_retry_after_a_success_is_answered_without_writing_again(
    tmp_path: Path, objects: ObjectStore
) -> None:
    shards, shard, base = start_capture(tmp_path, objects)
    body = json.dumps([{"id": "b1"}, {"id": "b2"}]).encode()
    key = {"Idempotency-Key": "batch-1"}
    status, answer, headers = send(base, "/collections/alerts", body, key)
    assert (status, answer) == (200, {"documents": 2})
    assert "Idempotent-Replayed" not in headers
    status, answer, headers = send(base, "/collections/alerts", body, key)
    assert (status, answer, headers["Idempotent-Replayed"]) == (200, {"documents": 2}, "true")
    # the same key for another request is a client's mistake, not a retry
    status, answer, _ = send(base, "/collections/alerts", b'{"id": "b3"}', key)
    assert status == 422
    assert "already used for another request" in answer["error"]
    assert shard.finish() is None

    # a new primary on a fresh volume has the keys from the recovery log
    again = shards.start(volume=shards.new_volume())
    status, answer, headers = wait_for(
        lambda: send(base, "/collections/alerts", body, key),
        timeout=30,
        what="the retry on the new primary",
    )
    assert (status, answer, headers["Idempotent-Replayed"]) == (200, {"documents": 2}, "true")
    assert again.finish() is None
    assert documents_of(read(objects, "alerts")) == [{"id": "b1"}, {"id": "b2"}]
