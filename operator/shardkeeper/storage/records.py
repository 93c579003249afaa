"""Records of a recovery log, one per data fragment. Pure encoding and decoding.

* **Commit**: the full images of every database page one transaction changed, with the
  database's size in pages after it. Applying the pages of the commits of a log, in
  order, to the pages of the state before them rebuilds the database byte for byte.
  Layout: ``"SKC2" | seq u64 | commit id (16 bytes) | page size u32 | database pages u32 |
  page count u32 | commit time u64``, then per page ``page number u32 | page bytes``. The
  commit time is the writer's clock in microseconds since the Unix epoch (what a
  point-in-time restore chooses by). Records of older writers, ``"SKC1"``, lack it and
  are read with no time.
* **Fork**: the first record of a log forked from another one: its state starts as the
  parent's state just before the parent's offset ``fence_offset``. A split forks at a
  fence there; a restore (docs/backup-and-restore.md) at the end of a commit, which the
  record says with ``"at": "commit"`` (a record without it forks at a fence). Layout:
  ``"SKF1"`` then JSON.

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

COMMIT_MAGIC = b"SKC2"
COMMIT_MAGIC_V1 = b"SKC1"
FORK_MAGIC = b"SKF1"
_COMMIT_V1 = struct.Struct(">4sQ16sIII")
_COMMIT = struct.Struct(">4sQ16sIIIQ")
_PAGE_NUMBER = struct.Struct(">I")


@dataclasses.dataclass(frozen=True)
class CommitRecord:
    seq: int
    commit_id: bytes
    page_size: int
    db_pages: int
    # (page number, page bytes); a page number appears once
    pages: Sequence[tuple[int, bytes | memoryview]]
    # seconds since the Unix epoch by the writer's clock; None in records of old writers
    committed_at: float | None = None


@dataclasses.dataclass(frozen=True)
class ForkRecord:
    parent: str
    # where in the parent the child's history ends: a fence, or (at_fence False) the end
    # of a commit
    fence_offset: int
    epoch: int
    at_fence: bool = True


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
            0 if record.committed_at is None else max(1, round(record.committed_at * 1e6)),
        )
    ]
    for number, data in record.pages:
        if len(data) != record.page_size:
            raise ValueError(f"page {number} has {len(data)} bytes, not {record.page_size}")
        parts.append(_PAGE_NUMBER.pack(number))
        parts.append(data)
    return b"".join(parts)


def encode_fork(record: ForkRecord) -> bytes:
    body: dict[str, object] = {
        "parent": record.parent,
        "fence_offset": record.fence_offset,
        "epoch": record.epoch,
    }
    if not record.at_fence:
        body["at"] = "commit"
    return FORK_MAGIC + json.dumps(body, sort_keys=True).encode()


def decode_record(where: str, payload: bytes) -> Record:
    """Parse one record. Pages of a commit are views into ``payload`` (no copy)."""
    magic = payload[:4]
    if magic in (COMMIT_MAGIC, COMMIT_MAGIC_V1):
        return _decode_commit(where, payload)
    if magic == FORK_MAGIC:
        try:
            body = json.loads(payload[4:])
            return ForkRecord(
                str(body["parent"]),
                int(body["fence_offset"]),
                int(body["epoch"]),
                at_fence=body.get("at", "fence") != "commit",
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalCorrupt(f"{where}: unreadable fork record: {exc}") from None
    raise JournalCorrupt(f"{where}: not a recovery-log record (starts with {magic!r})")


def decode_commit_header(where: str, payload: bytes) -> tuple[int, float | None] | None:
    """``(seq, commit time)`` of a commit record from its first bytes alone (``None`` for
    another record), without decoding its pages."""
    magic = payload[:4]
    if magic not in (COMMIT_MAGIC, COMMIT_MAGIC_V1):
        return None
    header = _COMMIT if magic == COMMIT_MAGIC else _COMMIT_V1
    if len(payload) < header.size:
        raise JournalCorrupt(f"{where}: commit record truncated")
    fields = header.unpack_from(payload)
    micros = fields[6] if magic == COMMIT_MAGIC else 0
    return int(fields[1]), (micros / 1e6 if micros else None)


def _decode_commit(where: str, payload: bytes) -> CommitRecord:
    header = _COMMIT if payload[:4] == COMMIT_MAGIC else _COMMIT_V1
    if len(payload) < header.size:
        raise JournalCorrupt(f"{where}: commit record truncated")
    fields = header.unpack_from(payload)
    _, seq, commit_id, page_size, db_pages, count = fields[:6]
    micros = fields[6] if header is _COMMIT else 0
    step = _PAGE_NUMBER.size + page_size
    if len(payload) != header.size + count * step:
        raise JournalCorrupt(
            f"{where}: commit record of {count} pages of {page_size} bytes has {len(payload)} bytes"
        )
    view = memoryview(payload)
    pages = []
    at = header.size
    for _ in range(count):
        (number,) = _PAGE_NUMBER.unpack_from(payload, at)
        pages.append((number, view[at + _PAGE_NUMBER.size : at + step]))
        at += step
    return CommitRecord(
        seq, commit_id, page_size, db_pages, pages, micros / 1e6 if micros else None
    )
