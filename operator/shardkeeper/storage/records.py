"""Records of a recovery log, one per data fragment. Pure encoding and decoding.

* **Commit**: the full images of every database page one transaction changed, with the
  database's size in pages after it. Applying the pages of the commits of a log, in
  order, to the pages of the state before them rebuilds the database byte for byte.
  Layout: ``"SKC1" | seq u64 | commit id (16 bytes) | page size u32 | database pages u32 |
  page count u32``, then per page ``page number u32 | page bytes``.
* **Fork**: the first record of a log forked from another one at a fence: its state starts
  as the parent's state just before that fence. Layout: ``"SKF1"`` then JSON.

Fences are not records: they are fragments of their own kind (see :mod:`.fragment`).
Snapshots are not records either: they live beside the log (see :mod:`.snapshot`), so
that writing one never competes with commits for the head of the log.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Sequence

from shardkeeper.storage.errors import JournalCorrupt

COMMIT_MAGIC = b"SKC1"
FORK_MAGIC = b"SKF1"
_COMMIT = struct.Struct(">4sQ16sIII")
_PAGE_NUMBER = struct.Struct(">I")


@dataclasses.dataclass(frozen=True)
class CommitRecord:
    seq: int
    commit_id: bytes
    page_size: int
    db_pages: int
    # (page number, page bytes); a page number appears once
    pages: Sequence[tuple[int, bytes | memoryview]]


@dataclasses.dataclass(frozen=True)
class ForkRecord:
    parent: str
    fence_offset: int
    epoch: int


Record = CommitRecord | ForkRecord


def encode_commit(record: CommitRecord) -> bytes:
    parts: list[bytes | memoryview] = [
        _COMMIT.pack(
            COMMIT_MAGIC,
            record.seq,
            record.commit_id,
            record.page_size,
            record.db_pages,
            len(record.pages),
        )
    ]
    for number, data in record.pages:
        if len(data) != record.page_size:
            raise ValueError(f"page {number} has {len(data)} bytes, not {record.page_size}")
        parts.append(_PAGE_NUMBER.pack(number))
        parts.append(data)
    return b"".join(parts)


def encode_fork(record: ForkRecord) -> bytes:
    body = {"parent": record.parent, "fence_offset": record.fence_offset, "epoch": record.epoch}
    return FORK_MAGIC + json.dumps(body, sort_keys=True).encode()


def decode_record(where: str, payload: bytes) -> Record:
    """Parse one record. Pages of a commit are views into ``payload`` (no copy)."""
    magic = payload[:4]
    if magic == COMMIT_MAGIC:
        return _decode_commit(where, payload)
    if magic == FORK_MAGIC:
        try:
            body = json.loads(payload[4:])
            return ForkRecord(str(body["parent"]), int(body["fence_offset"]), int(body["epoch"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalCorrupt(f"{where}: unreadable fork record: {exc}") from None
    raise JournalCorrupt(f"{where}: not a recovery-log record (starts with {magic!r})")


def _decode_commit(where: str, payload: bytes) -> CommitRecord:
    if len(payload) < _COMMIT.size:
        raise JournalCorrupt(f"{where}: commit record truncated")
    _, seq, commit_id, page_size, db_pages, count = _COMMIT.unpack_from(payload)
    step = _PAGE_NUMBER.size + page_size
    if len(payload) != _COMMIT.size + count * step:
        raise JournalCorrupt(
            f"{where}: commit record of {count} pages of {page_size} bytes has {len(payload)} bytes"
        )
    view = memoryview(payload)
    pages = []
    at = _COMMIT.size
    for _ in range(count):
        (number,) = _PAGE_NUMBER.unpack_from(payload, at)
        pages.append((number, view[at + _PAGE_NUMBER.size : at + step]))
        at += step
    return CommitRecord(seq, commit_id, page_size, db_pages, pages)
