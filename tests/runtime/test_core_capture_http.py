"""The capture's HTTP ingest endpoint: it answers only after the commit, and refuses bad
requests without writing anything."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.runtime.core_fixtures import (
    Crash,
    Incarnation,
    ShardRunner,
    Tripwire,
    collection,
    context,
    documents_of,
    objects,
    read,
    shard_for,
    task,
)
from tests.support.wait import wait_for

from shardkeeper.api.meta import SecretKeyRef
from shardkeeper.runtime.core.faults import RuntimeFaultPoint
from shardkeeper.storage.objectstore import ObjectStore

__all__ = ["objects"]

READINGS = collection(
    "readings",
    key=["/sensor", "/at"],
    schema={
        "type": "object",
        "properties": {"sensor": {"type": "string"}, "at": {"type": "integer"}, "value": {}},
        "required": ["sensor", "at"],
    },
)
ALERTS = collection("alerts", key=["/id"])
TOKEN = "s3cr3t"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_capture(
    tmp_path: Path,
    objects: ObjectStore,
    *,
    token: bool = False,
    http_settings: dict[str, Any] | None = None,
    **runner: Any,
) -> tuple[ShardRunner, Incarnation, str]:
    port = free_port()
    http: dict[str, Any] = {"port": port, "maxRequestBytes": 4096, **(http_settings or {})}
    if token:
        http["authTokenSecretRef"] = {"name": "ingest", "key": "token"}

    def resolve(ref: SecretKeyRef) -> str:
        assert (ref.name, ref.key) == ("ingest", "token")
        return TOKEN

    capture = task(
        "ingest",
        {
            "type": "capture",
            "outputs": ["readings", "alerts"],
            "capture": {"http": http},
            "shards": {"maxTxnDuration": "100ms", "ringBufferSize": 50},
        },
    )
    ctx = context(objects, capture, shard_for("ingest"), [READINGS, ALERTS], resolve_secret=resolve)
    shards = ShardRunner(tmp_path, ctx)
    shard = shards.start(**runner)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _listening(port), timeout=30, what="the ingest endpoint to listen")
    return shards, shard, base


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def post(url: str, body: bytes, token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def reading(n: int) -> dict[str, Any]:
    return {"sensor": f"s{n % 3}", "at": n, "value": n * 1.5}


def test_posted_documents_are_committed_before_the_answer(
    tmp_path: Path, objects: ObjectStore
) -> None:
    _, shard, base = start_capture(tmp_path, objects)
    one = json.dumps(reading(0)).encode()
    many = json.dumps([reading(1), reading(2)]).encode()
    lines = b"\n".join(json.dumps(reading(n)).encode() for n in (3, 4, 5)) + b"\n"
    for body, count in ((one, 1), (many, 2), (lines, 3)):
        status, answer = post(f"{base}/collections/readings", body)
        assert (status, answer) == (200, {"documents": count})
        # acknowledged means written: the documents are in the journal as soon as the answer is
        assert len(read(objects, "readings")) == {1: 1, 2: 3, 3: 6}[count]
    assert post(f"{base}/alerts", b'{"id": "a1"}') == (200, {"documents": 1})
    assert shard.finish() is None
    assert documents_of(read(objects, "readings")) == [reading(n) for n in range(6)]
    assert documents_of(read(objects, "alerts")) == [{"id": "a1"}]
    assert {d.journal for d in read(objects, "readings")} == {
        "collections/core/readings/ingest-00000000-00000000"
    }
    assert shard.processor.progress().transactions == 4


@pytest.mark.parametrize(
    ("path", "body", "refusal"),
    [
        ("/collections/readings", b'{"sensor": "s", "at": "noon"}', (400, "document 0: $.at")),
        ("/collections/readings", b'[{"sensor": "s", "at": 1}, {"at": 2}]', (400, "document 1:")),
        ("/collections/alerts", b'{"name": "no id"}', (400, "no value at key pointer /id")),
        ("/collections/readings", b"{oops", (400, "not valid JSON")),
        ("/collections/readings", b'"text"', (400, "a document is a JSON object")),
        ("/collections/nowhere", b"{}", (404, "writes no collection 'nowhere'")),
        ("/collections/readings", b"[" + b'{"sensor":"s","at":1},' * 300 + b"{}]", (413, "4096")),
        (
            "/collections/alerts",
            json.dumps([{"id": n} for n in range(51)]).encode(),
            (413, "more than a transaction holds (50"),
        ),
    ],
    ids=[
        "schema",
        "second-document",
        "missing-key",
        "not-json",
        "not-an-object",
        "unknown-collection",
        "too-large",
        "too-many",
    ],
)
def test_a_bad_request_is_refused_and_nothing_is_written(
    tmp_path: Path, objects: ObjectStore, path: str, body: bytes, refusal: tuple[int, str]
) -> None:
    status, message = refusal
    _, shard, base = start_capture(tmp_path, objects)
    code, answer = post(base + path, body)
    assert code == status
    assert message in answer["error"]
    assert post(f"{base}/collections/alerts", b'{"id": "after"}')[0] == 200
    assert shard.finish() is None
    assert read(objects, "readings") == []
    assert documents_of(read(objects, "alerts")) == [{"id": "after"}]


def test_a_bearer_token_is_required_when_configured(tmp_path: Path, objects: ObjectStore) -> None:
    _, shard, base = start_capture(tmp_path, objects, token=True)
    url = f"{base}/collections/alerts"
    assert post(url, b'{"id": 1}')[0] == 401
    assert post(url, b'{"id": 2}', token="wrong")[0] == 401
    assert post(url, b'{"id": 3}', token=TOKEN) == (200, {"documents": 1})
    assert shard.finish() is None
    assert documents_of(read(objects, "alerts")) == [{"id": 3}]


def test_concurrent_requests_share_transactions(tmp_path: Path, objects: ObjectStore) -> None:
    _, shard, base = start_capture(tmp_path, objects)
    bodies = [json.dumps([reading(10 * r + i) for i in range(5)]).encode() for r in range(20)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda b: post(f"{base}/readings", b), bodies))
    assert answers == [(200, {"documents": 5})] * 20
    assert shard.finish() is None
    found = documents_of(read(objects, "readings"))
    assert sorted(d["at"] for d in found) == sorted(10 * r + i for r in range(20) for i in range(5))
    assert shard.processor.progress().transactions < 20


def test_a_crash_before_the_commit_answers_503_and_writes_nothing(
    tmp_path: Path, objects: ObjectStore
) -> None:
    trip = Tripwire(RuntimeFaultPoint.DOCUMENTS_APPLIED, armed=True)
    shards, shard, base = start_capture(tmp_path, objects, faults=trip)
    status, answer = post(f"{base}/collections/alerts", b'{"id": "lost"}')
    assert status == 503
    assert "not written" in answer["error"]
    assert isinstance(shard.ended(), Crash)
    # the next primary starts clean, and the client's retry is written once
    again = shards.start()
    wait_for(
        lambda: post(f"{base}/collections/alerts", b'{"id": "lost"}')[0] == 200,
        timeout=30,
        what="the retry",
    )
    assert again.finish() is None
    assert documents_of(read(objects, "alerts")) == [{"id": "lost"}]
