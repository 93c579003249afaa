"""Journal fragments: how they are named and how their bytes are laid out. Pure.

A journal is a sequence of bytes addressed by offset. It is stored as fragments, one object
each, named ``<prefix>/<begin>`` where ``begin`` is the offset of its first byte as 16
zero-padded hex digits, so that key order is offset order and listing a journal lists it in
order. Fragments are contiguous: the next one begins where the previous one ends, which is
what lets a conditional create at the head offset decide who extends the journal.

Layout of a fragment object: a 64-byte header, then the payload::

    magic "SKJ1" | version u8 | kind u8 | reserved u16 | begin u64 | length u64 | epoch u64
    | sha256 (32 bytes) of the first 32 header bytes followed by the payload

``kind`` tells data from fence fragments. A fence's payload records who fenced; it
occupies offsets like any payload (so a fence and the next data fragment never share a
key) but readers of data skip it. A fence's payload is never larger than
:data:`MAX_FENCE_BYTES`.

A **tombstone** is a fence with an empty payload: what pruning leaves at the key of a
fence it removes (see ``storage/prune.py``). It keeps the key taken, so a writer fenced
there stays fenced, and covers no offsets (:func:`fragment_info` gives it an empty
range), so listings skip it. No append ever writes an empty payload.

Next to the fragments, ``<prefix>/writer.json`` (:func:`writer_key`) says where the
journal's current writer serves hints (``runtime/core/hints.py``). Its name is no offset,
so :func:`parse_fragment_key` refuses it and every listing of fragments, pruning and
retention pass over it; it sorts after every fragment key, and is deleted with the
journal's directory.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import struct

from shardkeeper.storage.errors import ChecksumMismatch, JournalCorrupt

MAGIC = b"SKJ1"
VERSION = 1
_FIELDS = struct.Struct(">4sBBHQQQ")
_HEADER = struct.Struct(">32s32s")
HEADER_SIZE = _HEADER.size
OFFSET_DIGITS = 16
# a fence's payload is at most this long (pruning reads only fragments this small to
# tell fences from data)
MAX_FENCE_BYTES = 4096
MAX_OFFSET = (1 << 64) - 1
WRITER_OBJECT = "writer.json"


class FragmentKind(enum.IntEnum):
    DATA = 1
    FENCE = 2


@dataclasses.dataclass(frozen=True)
class Fragment:
    begin: int
    epoch: int
    kind: FragmentKind
    payload: bytes

    @property
    def end(self) -> int:
        return self.begin + len(self.payload)


@dataclasses.dataclass(frozen=True)
class FragmentInfo:
    """What a listing tells about a fragment without reading it."""

    key: str
    begin: int
    end: int


def tombstone(begin: int, epoch: int) -> Fragment:
    """The tombstone of the fence at ``begin``, of its ``epoch``."""
    return Fragment(begin, epoch, FragmentKind.FENCE, b"")


def is_tombstone(info: FragmentInfo) -> bool:
    return info.end == info.begin


def fragment_key(prefix: str, begin: int) -> str:
    if not 0 <= begin <= MAX_OFFSET:
        raise ValueError(f"offset {begin} out of range")
    return f"{prefix}/{begin:0{OFFSET_DIGITS}x}"


def writer_key(prefix: str) -> str:
    """The writer object of the journal at ``prefix``: no fragment (see above)."""
    return f"{prefix}/{WRITER_OBJECT}"


def parse_fragment_key(prefix: str, key: str) -> int | None:
    """The begin offset named by ``key``, or ``None`` if it is not a fragment of ``prefix``."""
    head = prefix + "/"
    if not key.startswith(head):
        return None
    name = key[len(head) :]
    if len(name) != OFFSET_DIGITS or name.strip("0123456789abcdef"):
        return None
    return int(name, 16)


def fragment_info(prefix: str, key: str, size: int) -> FragmentInfo | None:
    begin = parse_fragment_key(prefix, key)
    if begin is None or size < HEADER_SIZE:
        return None
    return FragmentInfo(key, begin, begin + size - HEADER_SIZE)


def _digest(fields: bytes, payload: bytes) -> bytes:
    h = hashlib.sha256(fields)
    h.update(payload)
    return h.digest()


def encode_fragment(fragment: Fragment) -> bytes:
    fields = _FIELDS.pack(
        MAGIC, VERSION, fragment.kind, 0, fragment.begin, len(fragment.payload), fragment.epoch
    ).ljust(32, b"\0")
    return _HEADER.pack(fields, _digest(fields, fragment.payload)) + fragment.payload


def decode_fragment(key: str, expected_begin: int, data: bytes) -> Fragment:
    """Parse and verify a fragment read from ``key``, which must begin at ``expected_begin``."""
    return decode_fragment_parts(key, expected_begin, data[:HEADER_SIZE], data[HEADER_SIZE:])


def decode_fragment_parts(key: str, expected_begin: int, header: bytes, payload: bytes) -> Fragment:
    """:func:`decode_fragment` of an object read as its first :data:`HEADER_SIZE` bytes
    and the rest (no copy of the payload is made)."""
    if len(header) < HEADER_SIZE:
        size = len(header) + len(payload)
        raise JournalCorrupt(f"object {key} is {size} bytes, shorter than a header")
    fields, digest = _HEADER.unpack_from(header)
    magic, version, kind, _, begin, length, epoch = _FIELDS.unpack_from(fields)
    if magic != MAGIC or version != VERSION:
        raise JournalCorrupt(f"object {key} is not a journal fragment (magic {magic!r})")
    actual = _digest(fields, payload)
    if actual != digest:
        raise ChecksumMismatch(key, digest.hex(), actual.hex())
    if begin != expected_begin or length != len(payload):
        raise JournalCorrupt(
            f"object {key} says it holds [{begin:#x}, {begin + length:#x}) but sits at "
            f"{expected_begin:#x} with {len(payload)} bytes: it was copied or renamed by hand"
        )
    try:
        fragment_kind = FragmentKind(kind)
    except ValueError:
        raise JournalCorrupt(f"object {key} has unknown fragment kind {kind}") from None
    return Fragment(begin, epoch, fragment_kind, payload)
