"""Snapshots: full page images of a shard store at a log offset, written beside the log.

A snapshot is data parts (runs of consecutive pages, a few MiB each) and, written last, a
manifest naming them with their checksums. Without a manifest a snapshot does not exist, so a
crash while writing one leaves only garbage that pruning removes. Restore takes the
newest manifest, lays its pages down, then replays the log from the manifest's offset.

The writer reads the database file itself while a read transaction pins it, right after a
full checkpoint (see :meth:`ShardStore.snapshot`); reading is streamed part by part, so
memory does not grow with the store.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import threading
import time
import uuid
from pathlib import Path

from isal import isal_zlib

from shardkeeper.storage import errors
from shardkeeper.storage.faults import FaultPoint
from shardkeeper.storage.fragment import OFFSET_DIGITS
from shardkeeper.storage.recoverylog import RecoveryLog
from shardkeeper.storage.volume import CommitMeta, PageWriter

DEFAULT_PART_BYTES = 8 << 20
DEFAULT_TRANSFERS = 4
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Part:
    key: str
    first_page: int
    pages: int
    # "crc32:<8 hex digits>": parts are large and restore is CPU-bound on small machines,
    # so they carry a fast checksum against corruption (fragments carry a sha256)
    checksum: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    log: str
    snapshot_id: str
    # replay continues from this offset of ``log``
    offset: int
    page_size: int
    db_pages: int
    parts: tuple[Part, ...]
    last_commit: CommitMeta | None
    epoch: int
    created: float

    @property
    def data_bytes(self) -> int:
        return self.page_size * self.db_pages


def part_checksum(data: bytes | memoryview) -> str:
    # ISA-L's CRC-32 is zlib's, value for value, at several times the speed: a restore
    # checks every byte of the snapshot, and this check was a sixth of its CPU
    return f"crc32:{isal_zlib.crc32(data):08x}"


def encode_manifest(manifest: Manifest) -> bytes:
    commit = manifest.last_commit
    body = {
        "version": MANIFEST_VERSION,
        "log": manifest.log,
        "snapshot_id": manifest.snapshot_id,
        "offset": manifest.offset,
        "page_size": manifest.page_size,
        "db_pages": manifest.db_pages,
        "parts": [dataclasses.asdict(p) for p in manifest.parts],
        "last_commit": None
        if commit is None
        else {
            "log": commit.log,
            "begin": commit.begin,
            "commit_id": commit.commit_id.hex(),
            "seq": commit.seq,
            "epoch": commit.epoch,
        },
        "epoch": manifest.epoch,
        "created": manifest.created,
    }
    return json.dumps(body, indent=1).encode()


def decode_manifest(key: str, data: bytes) -> Manifest:
    try:
        body = json.loads(data)
        if body["version"] != MANIFEST_VERSION:
            raise ValueError(f"version {body['version']}")
        commit = body["last_commit"]
        manifest = Manifest(
            log=str(body["log"]),
            snapshot_id=str(body["snapshot_id"]),
            offset=int(body["offset"]),
            page_size=int(body["page_size"]),
            db_pages=int(body["db_pages"]),
            parts=tuple(Part(**p) for p in body["parts"]),
            last_commit=None
            if commit is None
            else CommitMeta(
                str(commit["log"]),
                int(commit["begin"]),
                bytes.fromhex(commit["commit_id"]),
                int(commit["seq"]),
                int(commit["epoch"]),
            ),
            epoch=int(body["epoch"]),
            created=float(body["created"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.SnapshotCorrupt(f"snapshot manifest {key} is unreadable: {exc}") from None
    covered = sum(p.pages for p in manifest.parts)
    if covered != manifest.db_pages:
        raise errors.SnapshotCorrupt(
            f"snapshot manifest {key} lists {covered} pages in its parts but says the "
            f"database has {manifest.db_pages}"
        )
    return manifest


def snapshot_offset(log: RecoveryLog, key: str) -> int | None:
    """The offset a manifest key names, or ``None`` if ``key`` is not a manifest."""
    name = key[len(log.snapshots_prefix) :]
    if not key.startswith(log.snapshots_prefix) or not name.endswith(".json"):
        return None
    digits = name[:OFFSET_DIGITS]
    if len(digits) != OFFSET_DIGITS or digits.strip("0123456789abcdef"):
        return None
    return int(digits, 16)


def list_manifest_keys(log: RecoveryLog) -> list[tuple[int, str]]:
    """``(offset, key)`` of every snapshot manifest of ``log``, in offset order."""
    found = []
    for obj in log.store.list(log.snapshots_prefix):
        offset = snapshot_offset(log, obj.key)
        if offset is not None:
            found.append((offset, obj.key))
    return found


def read_manifest(log: RecoveryLog, key: str) -> Manifest | None:
    data = log.store.get(key)
    return None if data is None else decode_manifest(key, data)


def latest_snapshot(log: RecoveryLog, *, at_most: int | None = None) -> Manifest | None:
    """The newest snapshot of ``log`` whose offset is at most ``at_most`` (if given)."""
    candidates = [
        (offset, key)
        for offset, key in list_manifest_keys(log)
        if at_most is None or offset <= at_most
    ]
    for _, key in reversed(candidates):
        manifest = read_manifest(log, key)
        if manifest is not None:
            return manifest
    return None


def write_snapshot(
    log: RecoveryLog,
    db_file: Path,
    *,
    offset: int,
    page_size: int,
    db_pages: int,
    last_commit: CommitMeta | None,
    epoch: int,
    part_bytes: int = DEFAULT_PART_BYTES,
    transfers: int = DEFAULT_TRANSFERS,
    cancel: threading.Event | None = None,
) -> Manifest:
    """Upload pages ``1..db_pages`` of ``db_file`` as a snapshot reaching ``offset``.

    The caller guarantees that those pages of the file hold exactly the state at
    ``offset`` and do not change until this returns. Setting ``cancel`` abandons the
    snapshot between two parts (no manifest is written).
    """
    snapshot_id = log.snapshot_id(offset, uuid.uuid4().hex[:12])
    pages_per_part = max(1, part_bytes // page_size)
    runs = [
        (first, min(pages_per_part, db_pages - first + 1))
        for first in range(1, db_pages + 1, pages_per_part)
    ]
    parts: list[Part] = []
    with open(db_file, "rb") as db:
        fd = db.fileno()

        def upload(index: int, first: int, count: int) -> Part:
            data = os.pread(fd, count * page_size, (first - 1) * page_size)
            if len(data) != count * page_size:
                raise errors.SnapshotCorrupt(
                    f"{db_file} ended before page {first + count - 1} while writing a snapshot"
                )
            key = log.part_key(snapshot_id, index)
            log.store.put(key, data)
            return Part(key, first, count, part_checksum(data))

        window: collections.deque[concurrent.futures.Future[Part]] = collections.deque()
        with concurrent.futures.ThreadPoolExecutor(max(1, transfers)) as pool:
            for index, (first, count) in enumerate(runs):
                if cancel is not None and cancel.is_set():
                    raise errors.SnapshotCancelled(f"snapshot {snapshot_id} was cancelled")
                window.append(pool.submit(upload, index, first, count))
                if len(window) >= transfers:
                    parts.append(window.popleft().result())
                    log.faults.reached(FaultPoint.SNAPSHOT_PART_WRITTEN)
            while window:
                parts.append(window.popleft().result())
                log.faults.reached(FaultPoint.SNAPSHOT_PART_WRITTEN)
    log.faults.reached(FaultPoint.SNAPSHOT_DATA_WRITTEN)
    manifest = Manifest(
        log=log.name,
        snapshot_id=snapshot_id,
        offset=offset,
        page_size=page_size,
        db_pages=db_pages,
        parts=tuple(parts),
        last_commit=last_commit,
        epoch=epoch,
        created=time.time(),
    )
    key = log.manifest_key(snapshot_id)
    if not log.store.create(key, encode_manifest(manifest)):
        raise errors.SnapshotCorrupt(f"snapshot manifest {key} already exists")
    log.faults.reached(FaultPoint.SNAPSHOT_MANIFEST_WRITTEN)
    return manifest


def fetch_part_into(
    log: RecoveryLog, manifest: Manifest, part: Part, buffer: memoryview
) -> memoryview:
    """The bytes of ``part`` as stored, read into the start of ``buffer`` (check them with
    :func:`verify_part`)."""
    expected = part.pages * manifest.page_size
    size = log.store.get_into(part.key, buffer[:expected])
    if size is None:
        raise errors.SnapshotCorrupt(
            f"snapshot {manifest.snapshot_id} of log {log.name!r} lost its part "
            f"{part.key}: restore that object, or delete the manifest "
            f"{log.manifest_key(manifest.snapshot_id)} so that an older snapshot is used"
        )
    if size != expected:
        # a larger object was not read at all: its size is all there is to report
        raise errors.SnapshotCorrupt(f"snapshot part {part.key} has {size} bytes")
    return buffer[:size]


def verify_part(manifest: Manifest, part: Part, data: bytes | memoryview) -> None:
    if len(data) != part.pages * manifest.page_size:
        raise errors.SnapshotCorrupt(f"snapshot part {part.key} has {len(data)} bytes")
    actual = part_checksum(data)
    if actual != part.checksum:
        raise errors.ChecksumMismatch(part.key, part.checksum, actual)


def restore_snapshot(
    log: RecoveryLog, manifest: Manifest, writer: PageWriter, *, transfers: int = DEFAULT_TRANSFERS
) -> int:
    """Lay the pages of ``manifest`` down through ``writer`` (the caller syncs). Returns
    how many bytes went straight to the device (``O_DIRECT``) rather than the page cache.

    Each part is fetched, verified and written at its offset by one thread, so the order
    of parts does not matter; ``transfers`` threads do so at once. A part is read straight
    into an aligned buffer of the writer, verified there and written from it (no ``bytes``
    of it are built, nor copied): there are ``transfers`` buffers of the largest part's
    size, whatever the size of the store. The first failure seen is raised once the parts
    under way have ended; no further part is fetched.
    """
    writer.resize(0)
    writer.preallocate(manifest.db_pages)
    # measured on a shared 2-core machine (1 GiB store, 4 transfers, 10 interleaved runs):
    # 4, 1 or no threads besides the fetching ones to check and write took the same time,
    # each of those threads' buffers only added memory
    threads = max(1, transfers)
    failed = threading.Event()
    largest = max((p.pages for p in manifest.parts), default=1) * manifest.page_size

    with writer.runs(writers=threads, run_bytes=largest) as runs:

        def restore_part(part: Part) -> None:
            if failed.is_set():
                return
            with runs.lend() as buffer:
                data = fetch_part_into(log, manifest, part, buffer)
                with data:
                    verify_part(manifest, part, data)
                    runs.write_lent(part.first_page, data)

        running: set[concurrent.futures.Future[None]] = set()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            try:
                for part in manifest.parts:
                    # a few queued beyond the threads, so that a thread that ends a part
                    # starts the next without waiting for this loop (queued ones hold no
                    # buffer)
                    if len(running) >= 2 * threads:
                        _wait_for_one(running)
                    running.add(pool.submit(restore_part, part))
                while running:
                    _wait_for_one(running)
            except BaseException:
                # parts already submitted but not yet started give up at once
                failed.set()
                raise
        direct_bytes = runs.direct_bytes
    writer.resize(manifest.db_pages)
    return direct_bytes


def _wait_for_one(running: set[concurrent.futures.Future[None]]) -> None:
    """Wait until one of ``running`` ends and remove the ended ones; raise a failure."""
    done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
    running.difference_update(done)
    for future in done:
        future.result()
