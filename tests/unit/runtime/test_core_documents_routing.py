"""Framing, pointers, UUIDs and routing: the pure rules of the data plane."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.api.shard import ShardSpec
from shardkeeper.runtime.core.documents import (
    DOCUMENT_NAMESPACE,
    MISSING,
    DocumentError,
    document_uuid,
    encode_line,
    parse_body,
    parse_line,
    pointer_tokens,
    resolve,
    split_lines,
    with_uuid,
)
from shardkeeper.runtime.core.errors import TaskFailed
from shardkeeper.runtime.core.messages import SourceAdvance, SourceDocument, SourceLines
from shardkeeper.runtime.core.routing import (
    KeyExtractor,
    MissingKey,
    Ranges,
    key_hash,
    pack_key,
    r_clock,
)
from shardkeeper.runtime.core.sources import route_lines

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@given(st.lists(documents, max_size=8), st.integers(0, 2**40))
def test_lines_of_a_payload_give_back_each_document_and_its_offsets(
    docs: list[dict[str, object]], begin: int
) -> None:
    lines = [encode_line(d) for d in docs]
    payload = b"".join(lines)
    found = list(split_lines(payload, begin))
    assert [parse_line(line.data) for line in found] == docs
    offsets = [begin]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    assert [(line.begin, line.end) for line in found] == list(itertools.pairwise(offsets))


def test_a_line_is_compact_utf8_json_with_a_newline() -> None:
    assert encode_line({"a": [1, 2], "é": "ü"}) == '{"a":[1,2],"é":"ü"}\n'.encode()
    with pytest.raises(ValueError, match="Out of range float"):
        encode_line({"x": float("nan")})


def test_a_last_line_without_newline_is_still_split_and_then_refused() -> None:
    (first, last) = split_lines(b'{"a":1}\n{"a"', 100)
    assert (first.begin, first.end, last.begin, last.end) == (100, 108, 108, 112)
    with pytest.raises(DocumentError, match="not valid JSON"):
        parse_line(last.data)
    with pytest.raises(DocumentError, match="not list"):
        parse_line(b"[1]")


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b'{"id": 1}', 1),
        (b'[{"id": 1}, {"id": 2}]', 2),
        (b'{"id": 1}\n\n{"id": 2}\n{"id": 3}\n', 3),
        (b"[]", 0),
    ],
)
def test_a_body_is_an_object_an_array_or_ndjson(body: bytes, count: int) -> None:
    assert len(parse_body(body)) == count


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "holds no document"),
        (b"42", "not int"),
        (b'[{"id": 1}, 2]', "document 1: a document is a JSON object"),
        (b'{"id": 1}\n{oops', "line 2: not valid JSON"),
    ],
)
def test_a_bad_body_says_which_document(body: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        parse_body(body)


def test_pointers_follow_rfc_6901() -> None:
    doc = {"a": {"b/c": [10, {"d~e": 4}]}, "": 1}
    assert pointer_tokens("/a/b~1c/1/d~0e") == ("a", "b/c", "1", "d~e")
    assert resolve(doc, "/a/b~1c/1/d~0e") == 4
    assert resolve(doc, "/a/b~1c/0") == 10
    assert resolve(doc, "") == doc
    assert resolve(doc, "/a/b~1c/01") is MISSING  # leading zeros are no index
    assert resolve(doc, "/a/b~1c/2") is MISSING
    assert resolve(doc, "/a/x") is MISSING
    assert resolve(doc, "/a/b~1c/0/x") is MISSING
    with pytest.raises(ValueError, match="starts with '/'"):
        pointer_tokens("a")


def test_document_uuids_are_stable_version_5_and_keep_other_meta() -> None:
    first = document_uuid("collections/ns/c/w", 42)
    assert first == document_uuid("collections/ns/c/w", 42)
    assert first != document_uuid("collections/ns/c/w", 43)
    assert uuid.UUID(first).version == 5
    assert first == str(uuid.uuid5(DOCUMENT_NAMESPACE, "collections/ns/c/w@42"))
    stamped = with_uuid({"x": 1, "_meta": {"uuid": "old", "op": "c"}}, first)
    assert stamped == {"x": 1, "_meta": {"uuid": first, "op": "c"}}


def test_key_packing_is_canonical() -> None:
    assert pack_key([1, "a", {"b": 2, "a": [1.0]}]) == b'[1,"a",{"a":[1],"b":2}]'
    assert pack_key([1.0]) == pack_key([1]) == pack_key([-0.0 + 1])
    assert pack_key([0.5]) == b"[0.5]"
    assert pack_key(["é"]) == '["é"]'.encode()


@given(st.lists(json_values, min_size=1, max_size=4))
def test_key_packing_does_not_depend_on_member_order(values: list[object]) -> None:
    reordered = json.loads(
        json.dumps(values), object_pairs_hook=lambda pairs: dict(reversed(pairs))
    )
    assert pack_key(values) == pack_key(reordered)


def test_key_hashes_are_fixed_32_bit_values() -> None:
    # pinned: the hash is part of the data format (who owns which document)
    assert key_hash(b'["a"]') == 0x335E1C74
    assert r_clock({"_meta": {"uuid": "x"}}, "j", 0) == r_clock({"_meta": {"uuid": "x"}}, "k", 9)
    assert r_clock({}, "j", 0) != r_clock({}, "j", 1)
    for n in range(50):
        assert 0 <= key_hash(pack_key([n])) <= 0xFFFFFFFF


def test_a_key_extractor_reads_every_pointer_and_refuses_a_missing_one() -> None:
    key = KeyExtractor.of(["/user/id", "/n"])
    assert key.values({"user": {"id": "u"}, "n": 3}) == ["u", 3]
    assert key.hash({"user": {"id": "u"}, "n": 3.0}) == key_hash(b'["u",3]')
    with pytest.raises(MissingKey, match="/n"):
        key.values({"user": {"id": "u"}})


def test_ranges_are_inclusive_on_both_ends() -> None:
    spec = ShardSpec.model_validate(
        {
            "task": "t",
            "keyBegin": "00000010",
            "keyEnd": "0000001f",
            "rClockBegin": "80000000",
            "rClockEnd": "ffffffff",
            "recoveryLog": "recovery/ns/t/x",
        }
    )
    ranges = Ranges.of(spec)
    assert ranges.owns(0x10, 0x80000000)
    assert ranges.owns(0x1F, 0xFFFFFFFF)
    assert not ranges.owns(0x20, 0x80000000)
    assert not ranges.owns(0x10, 0x7FFFFFFF)
    assert Ranges().everything
    assert not ranges.everything


@given(st.lists(st.text(max_size=12) | st.integers(-(2**70), 2**70), min_size=1, max_size=4))
def test_string_and_integer_keys_pack_as_the_json_encoder_writes_them(values: list[object]) -> None:
    expected = json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()
    assert pack_key(values) == expected


def _lines_of(documents: list[dict[str, object]], begin: int = 1000) -> SourceLines:
    payload = b"".join(encode_line(d) for d in documents)
    lines = tuple(line.data for line in split_lines(payload, begin))
    return SourceLines("c", "collections/ns/c/w", begin, begin + len(payload), begin, lines)


def test_routed_lines_keep_the_shards_documents_and_where_to_resume() -> None:
    key = KeyExtractor.of(["/id"])
    batch = _lines_of([{"id": n} for n in range(40)])
    everything = list(route_lines(batch, key, Ranges()))
    assert [m.document["id"] for m in everything if isinstance(m, SourceDocument)] == list(
        range(40)
    )
    # inside the fragment reading resumes at its begin; after its last line, at its end
    assert {m.resume for m in everything[:-1]} == {batch.fragment_begin}
    assert everything[-1].resume == everything[-1].end == batch.fragment_end

    low = Ranges(key_end=0x7FFFFFFF)
    mine = [m for m in route_lines(batch, key, low) if isinstance(m, SourceDocument)]
    assert 0 < len(mine) < 40
    assert all(key.hash(m.document) <= 0x7FFFFFFF for m in mine)
    last_owned = key.hash({"id": 39}) <= 0x7FFFFFFF
    tail = list(route_lines(batch, key, low))[-1]
    # a trailing stretch of others is passed over with an advance to the fragment's end
    assert isinstance(tail, SourceDocument if last_owned else SourceAdvance)
    assert tail.end == batch.fragment_end


def test_a_batch_without_lines_advances_over_it() -> None:
    fence = SourceLines("c", "j", 500, 620, 500, ())
    assert list(route_lines(fence, KeyExtractor.of(["/id"]), Ranges())) == [
        SourceAdvance("j", 620, 620)
    ]


def test_a_line_that_cannot_be_routed_fails_at_its_offset() -> None:
    batch = _lines_of([{"id": 1}, {"no": "key"}, {"id": 3}])
    routed = route_lines(batch, KeyExtractor.of(["/id"]), Ranges())
    assert next(routed).document == {"id": 1}
    with pytest.raises(TaskFailed) as failed:
        next(routed)
    assert failed.value.journal == "collections/ns/c/w"
    assert failed.value.offset == batch.begin + len(batch.lines[0]) + 1
    assert "no value at key pointer /id" in failed.value.reason
