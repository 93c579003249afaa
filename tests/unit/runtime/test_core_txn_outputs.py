"""Transaction timing, output framing, schemas and storage names: pure pieces of the core."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.api.storagemapping import StorageMapping
from shardkeeper.api.task import TaskSpec
from shardkeeper.runtime.core import outputs
from shardkeeper.runtime.core.compression import StreamingCompression
from shardkeeper.runtime.core.documents import document_uuid, encode_line, parse_line, split_lines
from shardkeeper.runtime.core.outputs import OutputBatch, OutputBuffer
from shardkeeper.runtime.core.schemas import DocumentSchema, SchemaError
from shardkeeper.runtime.core.transactions import TxnTiming
from shardkeeper.runtime.shell.storagemap import object_store
from shardkeeper.storage.objectstore import ObjectStore


def test_timing_comes_from_the_task_with_its_defaults() -> None:
    spec = TaskSpec.model_validate(
        {
            "type": "materialization",
            "storageMapping": "m",
            "sources": ["a"],
            "materialize": {
                "postgres": {
                    "host": "h",
                    "database": "d",
                    "user": "u",
                    "passwordSecretRef": {"name": "s", "key": "k"},
                    "tables": {"a": "t"},
                }
            },
        }
    )
    assert TxnTiming.of(spec) == TxnTiming(0.0, 300.0)
    spec.shards.min_txn_duration = spec.shards.min_txn_duration.parse("250ms")
    spec.shards.max_txn_duration = spec.shards.min_txn_duration.parse("2s")
    assert TxnTiming.of(spec) == TxnTiming(0.25, 2.0)


def test_a_transaction_waits_for_more_only_while_younger_than_min() -> None:
    timing = TxnTiming(min_duration=1.0, max_duration=3.0)
    assert timing.wait_for_more(0.25) == 0.75
    assert timing.wait_for_more(1.0) == 0.0
    assert timing.reading(2.99)
    assert not timing.reading(3.0)
    assert timing.remaining(2.5) == 0.5
    assert timing.remaining(4.0) == 0.0
    assert TxnTiming(0.0, 1.0).wait_for_more(0.0) == 0.0


@given(st.floats(0, 10), st.floats(0, 10), st.floats(0, 20))
def test_a_transaction_never_waits_past_min_or_reads_past_max(
    low: float, high: float, elapsed: float
) -> None:
    timing = TxnTiming(min(low, high), max(low, high) or 0.1)
    wait = timing.wait_for_more(elapsed)
    assert wait >= 0
    assert elapsed + wait <= max(timing.min_duration, elapsed) + 1e-9
    if not timing.reading(elapsed):
        assert wait == 0


def test_timing_refuses_min_above_max() -> None:
    with pytest.raises(ValueError, match="minTxnDuration"):
        TxnTiming(2.0, 1.0)


def test_outputs_are_framed_at_the_offsets_they_will_occupy() -> None:
    buffer = OutputBuffer({"out": "collections/ns/out/s"}, {"collections/ns/out/s": 100})
    buffer.clock = 5
    first = buffer.add("out", {"id": 1})
    second = buffer.add("out", {"id": 2, "_meta": {"op": "c"}})
    assert first["_meta"] == {"uuid": document_uuid("collections/ns/out/s", 100), "clock": 5}
    width = len(encode_line(first))
    assert second["_meta"] == {
        "op": "c",
        "uuid": document_uuid("collections/ns/out/s", 100 + width),
        "clock": 5,
    }
    (batch,) = buffer.seal(epoch=3)
    assert (batch.journal, batch.begin, batch.epoch) == ("collections/ns/out/s", 100, 3)
    lines = list(split_lines(batch.payload, batch.begin))
    assert [(line.begin, parse_line(line.data)) for line in lines] == [
        (100, first),
        (100 + width, second),
    ]
    assert buffer.heads == {"collections/ns/out/s": batch.end}
    assert buffer.seal(epoch=3) == []


def test_a_discarded_transaction_leaves_the_heads_alone() -> None:
    buffer = OutputBuffer({"out": "j"}, {})
    buffer.add("out", {"id": 1})
    buffer.discard()
    assert buffer.seal(epoch=1) == []
    assert buffer.next_offset("j") == 0


def test_large_outputs_are_cut_into_fragments_at_line_boundaries() -> None:
    buffer = OutputBuffer({"out": "j"}, {"j": 0}, max_fragment_bytes=200)
    for n in range(10):
        buffer.add("out", {"n": n})
    batches = buffer.seal(epoch=1)
    assert len(batches) > 1
    assert all(len(b.payload) <= 200 and b.payload.endswith(b"\n") for b in batches)
    assert [b.begin for b in batches[1:]] == [b.end for b in batches[:-1]]


def test_payloads_are_compressed_while_written_and_batches_stay_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outputs, "COMPRESSION_PIECE_BYTES", 50)
    handed: list[int] = []

    def submit(work: Callable[[], bytes]) -> Future[bytes]:
        handed.append(1)
        future: Future[bytes] = Future()
        future.set_result(work())
        return future

    plain = OutputBuffer({"out": "j"}, {"j": 0}, max_fragment_bytes=200)
    ahead = OutputBuffer({"out": "j"}, {"j": 0}, max_fragment_bytes=200, compressor=submit)
    for n in range(10):
        plain.add("out", {"n": n})
        ahead.add("out", {"n": n})
        if n == 1:
            # compression began before anything was sealed
            assert handed
    expected, batches = plain.seal(epoch=1), ahead.seal(epoch=1)
    assert batches == expected
    assert [b.compressed is None for b in expected] == [True] * len(expected)
    for batch in batches:
        assert batch.compressed is not None
        assert zlib.decompress(batch.compressed.result()) == batch.payload


@given(st.lists(st.binary(max_size=300), max_size=12))
def test_a_payload_compressed_in_pieces_decompresses_to_the_pieces_joined(
    pieces: list[bytes],
) -> None:
    with ThreadPoolExecutor(2) as pool:
        compression = StreamingCompression(pool.submit)
        for piece in pieces[:-1]:
            compression.add(piece)
        compressed = compression.finish(pieces[-1] if pieces else b"").result()
    assert zlib.decompress(compressed) == b"".join(pieces)


def test_a_schema_admits_meta_even_when_it_closes_the_object() -> None:
    closed = DocumentSchema(
        {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "additionalProperties": False,
        },
        name="c",
    )
    assert closed.problem({"id": 1, "_meta": {"uuid": "u"}}) is None
    assert (
        closed.problem({"id": "x"})
        == "$.id fails the schema of collection 'c': 'x' is not of type 'integer'"
    )
    assert "Additional properties" in (closed.problem({"id": 1, "other": 2}) or "")
    assert DocumentSchema(None, name="any").problem({"whatever": [1]}) is None
    with pytest.raises(SchemaError, match="schema of collection 'bad' is invalid"):
        DocumentSchema({"type": 12}, name="bad")


def test_the_object_store_is_the_first_store_with_the_given_credentials() -> None:
    mapping = StorageMapping.model_validate(
        {
            "metadata": {"name": "m"},
            "spec": {
                "stores": [
                    {
                        "bucket": "new-bucket",
                        "endpoint": "http://127.0.0.1:9",
                        "prefix": "a/",
                        "credentialsSecretRef": {"name": "keys"},
                    },
                    {"bucket": "old-bucket", "credentialsSecretRef": {"name": "old-keys"}},
                ]
            },
        }
    )
    objects = object_store(mapping, {"accessKeyId": "k", "secretAccessKey": "s"})
    assert objects.bucket == "new-bucket"
    assert objects.endpoint == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="lack secretAccessKey"):
        object_store(mapping, {"accessKeyId": "k"})


# --- compiled schemas decide exactly as jsonschema does -------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from([0.0, 1.0, 2.5, -1.5, 1e300])
    | st.sampled_from(["", "a", "ab", "é", "abc"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "_meta"]), inner, max_size=3)
    ),
    max_leaves=8,
)
type_names = st.sampled_from(["object", "array", "string", "boolean", "null", "number", "integer"])


def _schemas(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    keyword = st.one_of(
        st.tuples(st.just("type"), type_names | st.lists(type_names, min_size=1, max_size=3)),
        st.tuples(st.just("enum"), st.lists(scalars, min_size=1, max_size=3)),
        st.tuples(st.just("const"), scalars),
        st.tuples(
            st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
            st.integers(-3, 3) | st.just(1.5),
        ),
        st.tuples(st.sampled_from(["minLength", "maxLength"]), st.integers(0, 3)),
        st.tuples(st.just("required"), st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)),
        st.tuples(
            st.just("properties"), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
        ),
        st.tuples(st.just("additionalProperties"), inner),
        st.tuples(st.just("items"), inner),
        st.tuples(st.sampled_from(["title", "format"]), st.just("date-time")),
    )
    return st.booleans() | st.lists(keyword, max_size=4).map(dict)


schemas = st.recursive(st.just({}), _schemas, max_leaves=6)


@given(schemas, values)
def test_compiled_schemas_agree_with_jsonschema(schema: object, value: object) -> None:
    import jsonschema

    from shardkeeper.runtime.core.schemas import compile_fast

    check = compile_fast(schema)
    assert check is not None
    assert check(value) == jsonschema.Draft202012Validator(schema).is_valid(value)


def test_schemas_outside_the_compiled_subset_use_jsonschema() -> None:
    pattern = DocumentSchema(
        {"type": "object", "patternProperties": {"^x": {"type": "integer"}}}, name="p"
    )
    assert not pattern.compiled
    assert pattern.problem({"x1": "no"}) is not None
    assert DocumentSchema(
        {"type": "object", "properties": {"a": {"type": "string"}}}, name="s"
    ).compiled
    draft4 = DocumentSchema(
        {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}, name="d4"
    )
    assert not draft4.compiled
    assert draft4.problem(1.0) is not None


# -- the journals output batches may go to ------------------------------------------------------

OWN_JOURNAL = "collections/n/counted/counter-00000000-00000000"


class NoBucket:
    """An object store that fails the test at any use."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the bucket was touched ({name})")


JOURNALS = outputs.OutputJournals("n", "counter", ["counted"], "counter-00000000-00000000")


@pytest.mark.parametrize(
    ("journal", "allowed"),
    [
        (OWN_JOURNAL, True),
        # a split's parent: its pending batch goes to its journal, which the child inherits
        ("collections/n/counted/counter-00000000-80000000", True),
        ("collections/n/counted/counter-0000000-000000000", False),
        ("collections/n/counted/other-00000000-00000000", False),
        ("collections/n/counted/counter-00000000-00000000/../../x", False),
        ("collections/n/other/counter-00000000-00000000", False),
        ("collections/other/counted/counter-00000000-00000000", False),
        ("recovery/n/counter/00000000-00000000/journal", False),
        ("recovery/n/victim/log", False),
        ("", False),
    ],
)
def test_output_journals_are_the_tasks_own(journal: str, allowed: bool) -> None:
    assert (journal in JOURNALS) is allowed


def test_a_pending_batch_for_another_journal_is_refused_before_the_bucket_is_touched() -> None:
    # what a planted trigger made the store list: a batch for another shard's recovery log
    batch = OutputBatch("recovery/n/victim/log", 0, 1, b'{"evil":true}\n')
    with pytest.raises(outputs.ForeignOutput, match="'recovery/n/victim/log', which is not one"):
        outputs.append_batch(cast(ObjectStore, NoBucket()), "", batch, JOURNALS)
    # a batch of the task's own goes on to the bucket
    own = OutputBatch(OWN_JOURNAL, 0, 1, b"{}\n")
    with pytest.raises(AssertionError, match="the bucket was touched"):
        outputs.append_batch(cast(ObjectStore, NoBucket()), "", own, JOURNALS)
