"""Pure encodings: fragment names and layout, recovery-log records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.storage import errors
from shardkeeper.storage.fragment import (
    HEADER_SIZE,
    Fragment,
    FragmentKind,
    decode_fragment,
    decode_fragment_parts,
    encode_fragment,
    fragment_info,
    fragment_key,
    parse_fragment_key,
)
from shardkeeper.storage.journal import check_contiguous
from shardkeeper.storage.records import (
    CommitRecord,
    ForkRecord,
    decode_record,
    encode_commit,
    encode_fork,
)

offsets = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(offsets, offsets)
def test_key_order_is_offset_order(a: int, b: int) -> None:
    assert (fragment_key("j", a) < fragment_key("j", b)) == (a < b)
    assert parse_fragment_key("j", fragment_key("j", a)) == a


def test_foreign_keys_are_not_fragments() -> None:
    assert parse_fragment_key("j", "j/0000000000000010.tmp") is None
    assert parse_fragment_key("j", "jx/0000000000000010") is None
    assert parse_fragment_key("j", "j/000000000000001G") is None
    assert fragment_info("j", "j/0000000000000010", HEADER_SIZE + 5) is not None
    assert fragment_info("j", "j/0000000000000010", 3) is None


@given(
    begin=st.integers(min_value=0, max_value=1 << 50),
    epoch=st.integers(min_value=0, max_value=1 << 40),
    kind=st.sampled_from(FragmentKind),
    payload=st.binary(min_size=1, max_size=2000),
)
def test_fragment_round_trip(begin: int, epoch: int, kind: FragmentKind, payload: bytes) -> None:
    fragment = Fragment(begin, epoch, kind, payload)
    data = encode_fragment(fragment)
    assert len(data) == HEADER_SIZE + len(payload)
    assert decode_fragment("k", begin, data) == fragment
    header, rest = data[:HEADER_SIZE], data[HEADER_SIZE:]
    assert decode_fragment_parts("k", begin, header, rest) == fragment


def test_an_object_shorter_than_a_header_is_refused_read_whole_or_in_parts() -> None:
    data = encode_fragment(Fragment(0, 1, FragmentKind.DATA, b"abc"))
    with pytest.raises(errors.JournalCorrupt, match="is 10 bytes, shorter than a header"):
        decode_fragment("k", 0, data[:10])
    with pytest.raises(errors.JournalCorrupt, match="is 10 bytes, shorter than a header"):
        decode_fragment_parts("k", 0, data[:10], b"")


@given(payload=st.binary(min_size=1, max_size=500), flip=st.integers(min_value=0))
def test_any_flipped_byte_is_caught(payload: bytes, flip: int) -> None:
    data = bytearray(encode_fragment(Fragment(64, 3, FragmentKind.DATA, payload)))
    position = flip % len(data)
    data[position] ^= 0x01
    with pytest.raises(errors.JournalCorrupt):
        decode_fragment("k", 64, bytes(data))


def test_a_fragment_moved_to_another_key_is_refused() -> None:
    data = encode_fragment(Fragment(64, 3, FragmentKind.DATA, b"abc"))
    with pytest.raises(errors.JournalCorrupt, match="copied or renamed"):
        decode_fragment("k", 128, data)


def test_checksum_mismatch_names_the_object() -> None:
    data = encode_fragment(Fragment(0, 1, FragmentKind.DATA, b"payload"))
    with pytest.raises(errors.ChecksumMismatch, match="the/key") as raised:
        decode_fragment("the/key", 0, data[:-1] + b"X")
    assert "restore it" in str(raised.value)


def test_contiguity() -> None:
    def info(begin: int, end: int) -> object:
        return fragment_info("j", fragment_key("j", begin), HEADER_SIZE + end - begin)

    check_contiguous("j", [info(0, 5), info(5, 9)], 0)  # type: ignore[list-item]
    with pytest.raises(errors.JournalGap) as gap:
        check_contiguous("j", [info(0, 5), info(7, 9)], 0)  # type: ignore[list-item]
    assert gap.value.offset == 5
    with pytest.raises(errors.JournalCorrupt, match="without fencing"):
        check_contiguous("j", [info(0, 5), info(4, 9)], 0)  # type: ignore[list-item]


@given(
    seq=st.integers(min_value=1, max_value=1 << 60),
    pages=st.dictionaries(
        st.integers(min_value=1, max_value=1 << 20),
        st.binary(min_size=512, max_size=512),
        max_size=8,
    ),
    db_pages=st.integers(min_value=1, max_value=1 << 30),
)
def test_commit_record_round_trip(seq: int, pages: dict[int, bytes], db_pages: int) -> None:
    record = CommitRecord(seq, b"\x07" * 16, 512, db_pages, sorted(pages.items()))
    decoded = decode_record("k", encode_commit(record))
    assert isinstance(decoded, CommitRecord)
    assert (decoded.seq, decoded.commit_id, decoded.db_pages) == (seq, b"\x07" * 16, db_pages)
    assert [(n, bytes(d)) for n, d in decoded.pages] == sorted(pages.items())


def test_fork_record_round_trip_and_garbage() -> None:
    fork = ForkRecord("recovery/parent", 1234, 7)
    assert decode_record("k", encode_fork(fork)) == fork
    with pytest.raises(errors.JournalCorrupt, match="not a recovery-log record"):
        decode_record("k", b"nonsense")
    with pytest.raises(errors.JournalCorrupt, match="commit record of 1 pages"):
        decode_record("k", encode_commit(CommitRecord(1, b"\0" * 16, 4, 1, [(1, b"abcd")]))[:-1])
    with pytest.raises(ValueError, match="page 1"):
        encode_commit(CommitRecord(1, b"\0" * 16, 4, 1, [(1, b"abc")]))
