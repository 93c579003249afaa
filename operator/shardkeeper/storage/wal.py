"""Reading the pages of each commit from SQLite's write-ahead log (the ``-wal`` file).

In WAL mode SQLite commits a transaction by appending one frame per changed page to the
``-wal`` file, the last frame marked as the commit with the database size in pages. The
format is documented and stable (https://www.sqlite.org/fileformat2.html#walformat)::

    header (32 bytes): magic, version, page size, checkpoint seq, salt-1, salt-2, checksums
    frame: page number u32 | database size after commit u32 (0 unless commit) | salt-1 |
           salt-2 | checksum-1 | checksum-2 | page bytes

Only this process writes the database, and it reads the new frames right after each
commit, so the frames from the last commit's end up to the next commit frame are exactly
the new commit's. Frames whose salts differ from the header's belong to an older
generation of the file: SQLite restarts the file after a complete checkpoint, changing
the salts, so a change of salts means "start again from the first frame".

The tracker also indexes where the newest frame of every page is, which gives the images
of pages *before* a commit (to undo a commit whose log append failed): a page that has a
frame in the current generation is read from it, any other page from the database file,
which checkpoints only ever bring up to date with committed frames.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

WAL_HEADER = struct.Struct(">IIIIII8x")
FRAME_HEADER = struct.Struct(">IIII8x")
WAL_MAGICS = (0x377F0682, 0x377F0683)


class WalError(RuntimeError):
    """The -wal file does not hold what the commit path expects; a bug or outside writer."""


@dataclasses.dataclass(frozen=True)
class WalCommit:
    # page number -> offset of its newest frame's page bytes in the -wal file
    frames: dict[int, int]
    db_pages: int
    salts: tuple[int, int]
    start: int
    end: int


class WalTracker:
    """Follows the -wal file of a database that only this process writes."""

    def __init__(self, wal_path: Path, page_size: int) -> None:
        self.path = wal_path
        self.page_size = page_size
        self.frame_size = FRAME_HEADER.size + page_size
        self.salts: tuple[int, int] | None = None
        self.position = WAL_HEADER.size
        self.index: dict[int, int] = {}

    def read_commit(self) -> WalCommit:
        """The frames of the one transaction committed since the last :meth:`accept`."""
        with open(self.path, "rb") as wal:
            header = wal.read(WAL_HEADER.size)
            if len(header) < WAL_HEADER.size:
                raise WalError(f"{self.path} has no header after a commit")
            magic, _, page_size, _, salt1, salt2 = WAL_HEADER.unpack(header)
            if magic not in WAL_MAGICS or page_size != self.page_size:
                raise WalError(f"{self.path}: magic {magic:#x}, page size {page_size}")
            salts = (salt1, salt2)
            start = self.position if salts == self.salts else WAL_HEADER.size
            frames: dict[int, int] = {}
            fd = wal.fileno()
            at = start
            while True:
                head = os.pread(fd, FRAME_HEADER.size, at)
                if len(head) < FRAME_HEADER.size:
                    raise WalError(f"{self.path}: no commit frame after offset {start}")
                page, db_pages, frame_salt1, frame_salt2 = FRAME_HEADER.unpack(head)
                if (frame_salt1, frame_salt2) != salts:
                    raise WalError(f"{self.path}: no commit frame after offset {start}")
                frames[page] = at + FRAME_HEADER.size
                at += self.frame_size
                if db_pages:
                    return WalCommit(frames, db_pages, salts, start, at)

    def read_page(self, offset: int) -> bytes:
        with open(self.path, "rb") as wal:
            data = os.pread(wal.fileno(), self.page_size, offset)
        if len(data) != self.page_size:
            raise WalError(f"{self.path}: short read of a frame at {offset}")
        return data

    def read_pages(self, frames: dict[int, int]) -> list[tuple[int, bytes]]:
        """Page images of ``frames``, in page order."""
        with open(self.path, "rb") as wal:
            fd = wal.fileno()
            pages = [(page, os.pread(fd, self.page_size, frames[page])) for page in sorted(frames)]
        for page, data in pages:
            if len(data) != self.page_size:
                raise WalError(f"{self.path}: short read of page {page}")
        return pages

    def accept(self, commit: WalCommit) -> None:
        if commit.salts != self.salts:
            self.index = {}
            self.salts = commit.salts
        self.index.update(commit.frames)
        self.position = commit.end

    def page_before(
        self, page: int, failed: WalCommit, db_file: Path, db_pages: int
    ) -> bytes | None:
        """The image ``page`` had at the last accepted commit, before ``failed`` (which was
        not accepted); ``None`` if the database was shorter then."""
        if page > db_pages:
            return None
        # a commit that restarted the file did so because every older frame was already
        # checkpointed into the database file, and it may have overwritten them
        restarted = failed.salts != self.salts
        offset = None if restarted else self.index.get(page)
        if offset is not None:
            return self.read_page(offset)
        with open(db_file, "rb") as db:
            data = os.pread(db.fileno(), self.page_size, (page - 1) * self.page_size)
        if len(data) != self.page_size:
            raise WalError(f"{db_file}: page {page} missing though the database has {db_pages}")
        return data
