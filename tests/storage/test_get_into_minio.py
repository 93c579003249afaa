"""Reading whole objects into a caller's buffer (``ObjectStore.get_into``) against MinIO:
exact bytes, sizes reported without reading, and a body broken off half-way read again."""

from __future__ import annotations

import http.client
import os
from typing import Any

import pytest

from shardkeeper.storage.objectstore import ObjectStore


def test_an_object_is_read_into_the_start_of_the_buffer(objects: ObjectStore) -> None:
    body = os.urandom(3 << 20)
    objects.put("obj", body)
    buffer = memoryview(bytearray(4 << 20))
    for _ in range(3):  # the connection goes back to the pool and serves the next read
        buffer[:] = bytes(len(buffer))
        assert objects.get_into("obj", buffer) == len(body)
        assert buffer[: len(body)] == body
        assert not any(buffer[len(body) :])
    assert objects.get_into("missing", buffer) is None


def test_an_object_larger_than_the_buffer_is_not_read_but_measured(
    objects: ObjectStore,
) -> None:
    objects.put("big", b"x" * 5000)
    buffer = memoryview(bytearray(4096))
    assert objects.get_into("big", buffer) == 5000
    assert not any(buffer)
    # the connection it left unread is not reused with those bytes still in it
    objects.put("small", b"y" * 10)
    assert objects.get_into("small", buffer) == 10
    assert buffer[:10] == b"y" * 10


def test_a_body_broken_off_half_way_is_read_again(
    objects: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = os.urandom(2 << 20)
    objects.put("obj", body)
    real = http.client.HTTPResponse.readinto
    breaks = []

    def readinto(self: http.client.HTTPResponse, b: memoryview) -> int:
        if not breaks:
            read = real(self, memoryview(b)[: 1 << 16])
            breaks.append(read)
            raise ConnectionResetError("connection reset by peer")
        return real(self, b)

    monkeypatch.setattr(http.client.HTTPResponse, "readinto", readinto)
    patient = ObjectStore(objects.client, objects.bucket, sleep=lambda _: None)
    buffer = memoryview(bytearray(len(body)))
    assert patient.get_into("obj", buffer) == len(body)
    assert buffer == body
    assert breaks == [1 << 16]


def test_an_answer_without_a_length_is_read_as_it_comes(
    objects: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = os.urandom(100_000)
    objects.put("obj", body)
    real = objects.client.get_object

    def unsized(**request: Any) -> Any:
        answer = real(**request)
        del answer["ContentLength"]
        return answer

    monkeypatch.setattr(objects.client, "get_object", unsized)
    buffer = memoryview(bytearray(200_000))
    assert objects.get_into("obj", buffer) == len(body)
    assert buffer[: len(body)] == body
    small = memoryview(bytearray(10))
    assert objects.get_into("obj", small) == len(body)
    assert not any(small)


def test_an_object_is_read_split_after_its_head(objects: ObjectStore) -> None:
    body = os.urandom((2 << 20) + 17)
    objects.put("obj", body)
    for _ in range(3):  # the connection goes back to the pool and serves the next read
        assert objects.get_split("obj", 64) == (body[:64], body[64:])
    objects.put("short", b"abc")
    assert objects.get_split("short", 64) == (b"abc", b"")
    objects.put("empty", b"")
    assert objects.get_split("empty", 64) == (b"", b"")
    assert objects.get_split("missing", 64) is None


def test_a_split_read_broken_off_half_way_is_read_again(
    objects: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = os.urandom(2 << 20)
    objects.put("obj", body)
    real = http.client.HTTPResponse.read
    breaks = []

    def read(self: http.client.HTTPResponse, amt: int | None = None) -> bytes:
        if amt is not None and amt > 64 and not breaks:
            breaks.append(amt)
            return real(self, 1 << 16)  # the connection closed after these
        return real(self, amt)

    monkeypatch.setattr(http.client.HTTPResponse, "read", read)
    patient = ObjectStore(objects.client, objects.bucket, sleep=lambda _: None)
    assert patient.get_split("obj", 64) == (body[:64], body[64:])
    assert breaks == [len(body) - 64]
